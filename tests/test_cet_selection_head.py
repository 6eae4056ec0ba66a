"""CET's `indep` selection model: its own seeded random query head, so that g != f at step 0 (R1's cet-indep)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_training import settings, write_collection, write_config

from rankface.models.bi_encoder import BiEncoder
from rankface.models.cet.selection_head import ProjectedQueryBiEncoder
from rankface.training import parse_training_args, train
from rankface.training.cet_step import pearson
from rankface.training.data import prepare_training_data
from rankface.training.loop import GroupCollator, build_models


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


def _args(collection, tiny_bert_dir, tmp_path, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = settings(collection, tiny_bert_dir, tmp_path / "out", **{
        "encoder": "bi", "training_mode": "query_side", "method": "cet", "cet_selection": "indep",
        "cet_temperature": 2.0, **overrides})
    return parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))])


def test_indep_selection_scores_differ_from_relevance_at_step_0(collection, tiny_bert_dir, tmp_path):
    args = _args(collection, tiny_bert_dir, tmp_path)
    data = prepare_training_data(args)
    relevance, selection = build_models(args, data)
    assert isinstance(selection, ProjectedQueryBiEncoder) and not isinstance(relevance, ProjectedQueryBiEncoder)
    batch = GroupCollator(relevance, data)(list(range(4)))
    relevance.eval(), selection.eval()
    with torch.no_grad():
        f, g = relevance(batch), selection(batch)
    assert f.shape == g.shape == (4, 4)
    assert (g - f).abs().max() > 0.05 * f.abs().max(), "g must not be a copy of f at step 0"
    # The same towers (both start from the same weights): only the head differs. With the head set to the identity,
    # g is f again, which shows the difference comes from the head alone.
    with torch.no_grad():
        selection.query_projection.weight.copy_(torch.eye(selection.query_projection.weight.shape[0]))
        torch.testing.assert_close(selection(batch), f, rtol=1e-5, atol=1e-5)


def test_the_head_is_seeded_by_the_run_and_apart_from_the_relevance_model(collection, tiny_bert_dir, tmp_path):
    heads = []
    for seed in (0, 0, 1):
        args = _args(collection, tiny_bert_dir, tmp_path / str(len(heads)), seed=seed)
        heads.append(build_models(args, prepare_training_data(args))[1].query_projection.weight.detach().clone())
    torch.testing.assert_close(heads[0], heads[1], rtol=0, atol=0)  # same run seed: same head
    assert not torch.allclose(heads[0], heads[2])  # another seed: another head


def test_indep_training_logs_correlations_and_saves_the_head(collection, tiny_bert_dir, tmp_path):
    args = _args(collection, tiny_bert_dir, tmp_path, max_steps=3)
    train(args)
    out = tmp_path / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    first = state["log"][0]
    assert {"corr_g_f", "corr_wf_f"} <= set(first)
    assert -1.0 <= first["corr_g_f"] < 0.999  # g != f at the first step (before any update)
    folder = out / "selection_model"
    assert ProjectedQueryBiEncoder.has_projection(folder)
    # Loaded back (towers as a BiEncoder, then the head), it scores as the trained selection model's saved head says.
    towers = BiEncoder.from_pretrained(folder, device="cpu")
    loaded = ProjectedQueryBiEncoder.load_projection(folder, towers)
    pairs = [("alpha beta", "alpha gamma delta"), ("beta", "gamma")]
    assert not np.allclose(loaded.predict(pairs), towers.predict(pairs), atol=1e-4)


def test_pearson_by_hand():
    a = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    b = torch.tensor([[2.0, 1.0], [0.0, 4.0]])
    assert pearson(a, b) == pytest.approx(float(np.corrcoef([1, 2, 3, 5], [2, 1, 0, 4])[0, 1]))
    assert pearson(a, torch.ones(2, 2)) is None


# ---------------------------------------------------------------------------------------------- oracle propensity
@pytest.mark.parametrize("p", [0.6, 0.9, 0.99])
def test_fixed_propensity_gives_cet_weights_one_over_one_minus_p(p):
    from rankface.losses.cet import coupled_weights, fixed_propensity_logits

    pooled = torch.tensor([[True, False, True], [False, False, True]])
    for t in (1.0, 10.0):
        weights = coupled_weights(fixed_propensity_logits(pooled, p, t), t)
        expected = torch.where(pooled, torch.tensor(1 / (1 - p)), torch.tensor(1 / p))
        torch.testing.assert_close(weights, expected, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="propensity"):
        fixed_propensity_logits(pooled, 1.0, 10.0)


def test_oracle_pool_training_weights_pooled_negatives_by_one_over_one_minus_p(collection, tiny_bert_dir, tmp_path):
    """The oracle propensity needs no selection model: the relevance model trains on w_f = 1/(1-p) for negatives
    ranked within the pool depth of the pooling run and 1/p below it; the logged mean weight says so."""
    from rankface.models.cet import rank_table
    from rankface.retrieval.trec import read_run

    run_path = collection / "negatives.trec"
    args = _args(collection, tiny_bert_dir, tmp_path, cet_selection="oracle_pool", cet_selection_run=str(run_path),
                 cet_oracle_propensity=0.9, cet_oracle_pool_depth=30, max_steps=1, batch_size=100)
    data = prepare_training_data(args)
    assert len(build_models(args, data)) == 1  # no selection model to train
    train(args)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    table = rank_table(read_run(run_path))
    pooled = [table[g.qid][d][0] <= 30 for g in data.groups for d in g.negative_docids]
    # One step over every group (batch 100 > groups): the logged mean of w_f, by hand.
    expected = np.mean([1 / (1 - 0.9) if x else 1 / 0.9 for x in pooled])
    assert 0 < sum(pooled) < len(pooled)
    assert state["log"][0]["weight_mean"] == pytest.approx(expected, rel=1e-5)
    assert not (tmp_path / "out" / "selection_model").exists()
