"""CET diagnostics report on synthetic negatives, and scoring negatives with a tiny CET pair."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from numerics import ACROSS_PATHS
from tiny_models import save_tiny_tokenizer, tiny_bert_config
from transformers import BertModel

from rankface.data.ir import TrainingGroup
from rankface.evaluation.cet_diagnostics import (
    cet_diagnostics,
    diagnostics_markdown,
    score_negatives,
    write_diagnostics,
)


@pytest.fixture
def negatives():
    qids = ["q1", "q1", "q1", "q2", "q2", "q3"]
    docids = ["a", "b", "c", "d", "e", "f"]
    rel = np.array([2.0, -1.0, 0.5, 3.0, -2.0, 0.0])
    sel = np.array([-1.0, 4.0, 0.0, 1.0, 2.5, -3.0])
    full = {"q1": {"a": 2, "c": 1, "z": 3}, "q2": {"d": 1}}  # q3 has no judgments
    labelled = {"q2": {"e": 1}}
    return qids, docids, rel, sel, full, labelled


def test_report_values_against_hand_computation(negatives):
    qids, docids, rel, sel, full, labelled = negatives
    t = 2.0
    report = cet_diagnostics(
        qids, docids, rel, sel, temperature=t, full_qrels=full, labelled_qrels=labelled, top_n=3, bins=4
    )
    assert report["negatives"] == 6 and report["queries"] == 3
    # judged negatives: 5 (q3's f is unjudged); grade>=1: a, c, d; grade>=2: a
    assert report["false_negative_rate"]["grade>=1"] == {"false_negatives": 3, "negatives": 5, "rate": 0.6}
    assert report["false_negative_rate"]["grade>=2"]["rate"] == pytest.approx(0.2)
    assert report["negatives_of_unjudged_queries"] == 1
    literal_wf = [1 / (1 - 1 / (1 + math.exp(-x / t))) for x in sel]
    literal_wg = [1 / (1 - 1 / (1 + math.exp(-x / t))) for x in rel]
    wf = report["weights"]["relevance_loss_w_f (from selection logits)"]
    wg = report["weights"]["selection_loss_w_g (from relevance logits)"]
    assert wf["mean"] == pytest.approx(np.mean(literal_wf), rel=1e-6)
    assert wg["max"] == pytest.approx(max(literal_wg), rel=1e-6)
    assert wf["quantiles"]["p50"] == pytest.approx(np.median(literal_wf), rel=1e-6)
    assert sum(wf["histogram"]["counts"]) == 6 and len(wf["histogram"]["edges"]) == 5
    prop = 1 / (1 + np.exp(-sel))
    assert report["propensity"]["mean"] == pytest.approx(prop.mean())
    fn = np.array([True, False, True, True, False, False])
    assert report["propensity"]["mean_false_negatives"] == pytest.approx(prop[fn].mean())
    # AUC by brute force over (false negative, other) pairs of relevance logits
    pos, neg = rel[fn], rel[~fn]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])
    assert report["relevance_auc_false_negatives"] == pytest.approx(brute)
    brute_sel = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in sel[fn] for n in sel[~fn]])
    assert report["propensity"]["auc_false_negatives"] == pytest.approx(brute_sel)
    # CET's propensity is sigmoid(g / T): 1 - 1 / w_f, by its definition.
    prop_t = 1 - 1 / np.array(literal_wf)
    assert report["propensity_T"]["mean"] == pytest.approx(prop_t.mean(), rel=1e-6)
    assert report["propensity_T"]["mean_false_negatives"] == pytest.approx(prop_t[fn].mean(), rel=1e-6)
    assert report["propensity_T"]["auc_false_negatives"] == pytest.approx(brute_sel)
    assert report["correlations"]["g_f"] == pytest.approx(np.corrcoef(sel, rel)[0, 1])
    assert report["correlations"]["w_f_f"] == pytest.approx(np.corrcoef(literal_wf, rel)[0, 1], rel=1e-6)
    assert "sigmoid(g/T)" in diagnostics_markdown(report)
    by_label = report["relevance_loss_w_f_by_label"]
    assert by_label["false_negatives"] == pytest.approx(np.mean(np.array(literal_wf)[fn]), rel=1e-6)
    assert by_label["other_negatives"] == pytest.approx(np.mean(np.array(literal_wf)[~fn]), rel=1e-6)
    # top propensity, unlabelled only: b (4.0), [e (2.5) is labelled], d (1.0), c (0.0)
    assert report["labelled_negatives"] == 1
    top = report["top_propensity_unlabelled"]
    assert [(e["qid"], e["docid"]) for e in top] == [("q1", "b"), ("q2", "d"), ("q1", "c")]
    assert top[0]["w_f"] == pytest.approx(literal_wf[1]) and top[1]["full_grade"] == 1
    json.dumps(report)  # JSON-ready


def test_report_without_qrels_or_selection(negatives):
    qids, docids, rel, _, _, _ = negatives
    report = cet_diagnostics(qids, docids, rel, None, temperature=10.0)
    assert "false_negative_rate" not in report and "propensity" not in report
    assert list(report["weights"]) == ["selection_loss_w_g (from relevance logits)"]
    assert "CET diagnostics" in diagnostics_markdown(report)
    with pytest.raises(ValueError, match="relevance_logits"):
        cet_diagnostics(qids, docids, rel[:2], None, temperature=1.0)
    with pytest.raises(ValueError, match="docids"):
        cet_diagnostics(qids, docids[:2], rel, None, temperature=1.0)


def test_written_atomically_as_json_and_markdown(negatives, tmp_path):
    qids, docids, rel, sel, full, labelled = negatives
    report = cet_diagnostics(qids, docids, rel, sel, temperature=2.0, full_qrels=full, labelled_qrels=labelled)
    path = write_diagnostics(report, tmp_path / "diag")
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    md = (tmp_path / "diag" / "cet_diagnostics.md").read_text()
    assert "| grade>=1 | 3/5 | 0.600 |" in md
    assert "| q1 | b |" in md
    assert sorted(p.name for p in (tmp_path / "diag").iterdir()) == ["cet_diagnostics.json", "cet_diagnostics.md"]


@pytest.mark.numerics
@pytest.mark.parametrize("selection", ["cross", "mlp"])
def test_score_negatives_with_a_tiny_pair(tmp_path, selection):
    from rankface.models.cet import CETModel

    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(tmp_path / "enc")
    save_tiny_tokenizer(tmp_path / "enc")
    model = CETModel.from_encoders(tmp_path / "enc", selection=selection, max_length=16)
    queries = {"q1": "a b", "q2": "c"}
    docs = {"d1": "a", "d2": "b c", "d3": "x y z"}
    groups = [
        TrainingGroup("q1", "p", ("d1", "d2", "d1")),
        TrainingGroup("q2", "p", ("d3", "nope")),
        TrainingGroup("q9", "p", ("d1",)),
    ]
    run = {"q1": {"d1": 3.0, "d2": 1.0}, "q2": {"d3": 0.5}}
    out = score_negatives(model, groups, queries, docs, run=run, precision="fp32")
    assert list(zip(out["qids"], out["docids"])) == [("q1", "d1"), ("q1", "d2"), ("q2", "d3")]
    assert out["skipped"]["doc_text_missing"] == 1 and out["skipped"]["query_text_missing"] == 1
    expected = model.relevance_scorer().predict([("a b", "a"), ("a b", "b c"), ("c", "x y z")], precision="fp32")
    # Scored in other batches than `predict`'s: float noise, not bit for bit (tests/numerics.py).
    np.testing.assert_allclose(out["relevance_logits"], expected, **ACROSS_PATHS)
    assert out["selection_logits"].shape == (3,)
    if selection == "mlp":
        assert out["skipped"]["not_in_run"] == 0
        with pytest.raises(ValueError, match="run"):
            score_negatives(model, groups, queries, docs)
    report = cet_diagnostics(out["qids"], out["docids"], out["relevance_logits"], out["selection_logits"], 5.0)
    assert report["negatives"] == 3
