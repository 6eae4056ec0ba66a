"""The graded listwise objective: its loss against an independent formula, its groups, and training with it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_training import settings, write_collection, write_config

from rankface.losses.ranking import graded_listwise_loss
from rankface.training import parse_training_args, train
from rankface.training.data import build_graded_groups


def reference_loss(scores: list[list[float]], grades: list[list[int]]) -> float:
    """ListNet top-one cross-entropy with nDCG gains, written out with plain floats."""
    total = 0.0
    for row, labels in zip(scores, grades):
        gains = [2.0**g - 1.0 for g in labels]
        norm = math.log(sum(math.exp(s) for s in row))
        total += -sum(gain / sum(gains) * (s - norm) for gain, s in zip(gains, row))
    return total / len(scores)


@pytest.mark.numerics
def test_graded_listwise_loss_matches_the_formula():
    torch.manual_seed(0)
    scores = torch.randn(3, 5, dtype=torch.float64)
    grades = torch.tensor([[3, 0, 1, 0, 2], [0, 0, 1, 0, 0], [2, 2, 0, 1, 0]])
    expected = reference_loss(scores.tolist(), grades.tolist())
    assert graded_listwise_loss(scores, grades).item() == pytest.approx(expected, rel=1e-12)
    # The minimum is at scores whose softmax equals the gain distribution: the gradient vanishes there.
    gains = torch.pow(2.0, grades.double()) - 1
    optimum = torch.log(gains / gains.sum(1, keepdim=True) + 1e-300).requires_grad_(True)
    graded_listwise_loss(optimum, grades).backward()
    assert optimum.grad.abs().max().item() < 1e-12


def test_graded_listwise_loss_refuses_a_query_without_a_relevant_candidate():
    with pytest.raises(ValueError, match="at least one candidate of grade >= 1"):
        graded_listwise_loss(torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"must both be \[Q, D\]"):
        graded_listwise_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_graded_groups_put_the_best_candidate_first_and_keep_every_grade():
    run = {"q1": {f"d{i}": 10.0 - i for i in range(10)}, "q2": {"d0": 1.0, "d1": 0.5}, "q3": {"d5": 1.0}}
    qrels = {"q1": {"d3": 2, "d7": 2, "d8": 3, "d1": 0}, "q2": {"d1": 1}, "q3": {"d9": 2}}
    docs = {f"d{i}" for i in range(10)}
    groups, report = build_graded_groups(["q1", "q2", "q3"], qrels, run, size=4, rank_window=(1, 9), doc_ids=docs,
                                         seed=0)
    by_query = {g.qid: g for g in groups}
    # q1: the window is ranks 1-9 (d0..d8); its best-graded candidate is d8 (grade 3); the rest sampled from the window.
    assert by_query["q1"].docids[0] == "d8" and len(set(by_query["q1"].docids)) == 4
    assert all(d in {f"d{i}" for i in range(9)} for d in by_query["q1"].docids)
    assert by_query["q1"].grades == tuple(qrels["q1"].get(d, 0) for d in by_query["q1"].docids)
    # q2 has 2 candidates for a group of 4: drawn again (counted); q3's only candidate is unjudged: skipped.
    assert by_query["q2"].docids[0] == "d1" and len(by_query["q2"].docids) == 4
    assert report == {"queries_total": 3, "queries_used": 2, "queries_without_graded_candidate": 1,
                      "queries_with_short_window": 1, "groups": 2}


def test_training_with_graded_groups(tmp_path):
    collection = write_collection(tmp_path / "synthetic")
    from tiny_models import make_tiny_bert

    tiny = make_tiny_bert(tmp_path / "tiny")
    values = settings(collection, tiny, tmp_path / "out", encoder="bi", training_mode="query_side",
                      positives="graded", loss="graded_listwise", num_negatives=5, max_steps=4)
    train(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["step"] == 4 and all(math.isfinite(e["loss"]) for e in state["log"] if "loss" in e)
    report = json.loads((tmp_path / "out" / "training_groups_report.json").read_text())
    assert report["groups"] == 16
    with pytest.raises(ValueError, match="go together"):
        parse_training_args(["--config", str(write_config(tmp_path / "bad.yaml", values | {"positives": "top"}))])
