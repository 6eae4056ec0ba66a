"""CET pair: construction, save/load through the Auto classes, and export of the relevance model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numerics import ACROSS_PATHS
from tiny_models import save_tiny_tokenizer
from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, BertModel

import rankface.models.auto  # noqa: F401  (registers rankface-cet)
from rankface.models.cet import CETConfig, CETModel, RankFeatureSelector, rank_table
from rankface.models.cross_encoder import CrossEncoder

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "vitamin",
    "cancer",
    "diet",
    "heart",
    "risk",
    "study",
    "protein",
    "fat",
    "sugar",
    "blood",
    "cell",
    "brain",
    "bone",
]
PAIRS = [
    ("vitamin risk", "a study of vitamin and heart risk"),
    ("sugar", "blood sugar in the brain"),
    ("fat diet", "bone"),
]


def _tiny_bert(**extra) -> BertConfig:
    return BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99, **extra
    )


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny random BERT encoder + word-piece tokenizer saved like a plain pretrained checkpoint."""
    path = tmp_path_factory.mktemp("tiny_bert")
    save_tiny_tokenizer(path, WORDS)
    torch.manual_seed(0)
    BertModel(_tiny_bert()).save_pretrained(path)
    return path


@pytest.mark.numerics
@pytest.mark.parametrize("selection", ["cross", "mlp", "bi"])
def test_pair_round_trip_through_auto_model(encoder_dir, tmp_path, selection):
    model = CETModel.from_encoders(encoder_dir, selection=selection, max_length=32).eval()
    model.save_pretrained(tmp_path / "pair")
    loaded = AutoModel.from_pretrained(tmp_path / "pair").eval()
    assert isinstance(loaded, CETModel)
    assert loaded.config.selection_kind == selection and loaded.config.max_seq_length == 32
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key  # saved and loaded tensors: bit for bit
    # The same weights at another offset in memory (the safetensors buffer) sum in another order in MKL: the
    # scores agree to float noise, not bit for bit (tests/numerics.py).
    np.testing.assert_allclose(
        loaded.relevance_scorer().predict(PAIRS, precision="fp32"),
        model.relevance_scorer().predict(PAIRS, precision="fp32"),
        **ACROSS_PATHS,
    )
    if selection == "mlp":
        assert loaded.selection_tokenizer is None
    else:
        assert loaded.selection_tokenizer is not None


def test_from_encoders_shares_encoder_weights_but_not_heads(encoder_dir):
    model = CETModel.from_encoders(encoder_dir, head_seed=3)
    rel, sel = model.relevance, model.selection
    torch.testing.assert_close(rel.bert.embeddings.word_embeddings.weight, sel.bert.embeddings.word_embeddings.weight)
    assert not torch.equal(rel.classifier.weight, sel.classifier.weight)
    again = CETModel.from_encoders(encoder_dir, head_seed=3)
    assert torch.equal(again.relevance.classifier.weight, rel.classifier.weight)  # seeded, reproducible
    assert torch.equal(again.selection.classifier.weight, sel.classifier.weight)
    other = CETModel.from_encoders(encoder_dir, head_seed=4)
    assert not torch.equal(other.relevance.classifier.weight, rel.classifier.weight)


def test_num_layers_truncates_both_members(encoder_dir):
    model = CETModel.from_encoders(encoder_dir, num_layers=1)
    assert len(model.relevance.bert.encoder.layer) == 1 and len(model.selection.bert.encoder.layer) == 1
    assert model.config.sub_config("relevance").num_hidden_layers == 1


def test_forward_scores_groups_and_backpropagates(encoder_dir):
    model = CETModel.from_encoders(encoder_dir, selection="cross", max_length=32)
    queries = ["vitamin risk", "sugar"]
    groups = [["a study of vitamin", "bone", "fat"], ["blood sugar", "heart", "the cell"]]
    out = model(
        relevance_features=model.relevance_scorer().collate_groups(queries, groups),
        selection_features=model.selection_scorer().collate_groups(queries, groups),
    )
    assert out.relevance_scores.shape == (2, 3) and out.selection_scores.shape == (2, 3)
    (out.relevance_scores.sum() + out.selection_scores.sum()).backward()
    assert model.relevance.classifier.weight.grad is not None and model.selection.classifier.weight.grad is not None


@pytest.mark.numerics
def test_export_relevance_loads_everywhere_with_identical_scores(encoder_dir, tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    model = CETModel.from_encoders(encoder_dir, selection="cross", max_length=48).eval()
    with torch.no_grad():  # a trained-looking head and encoder, so the test is not about zero scores
        model.relevance.classifier.weight.normal_(0, 1)
        model.relevance.bert.encoder.layer[0].output.dense.weight.add_(0.05)
    reference = model.relevance_scorer().predict(PAIRS, precision="fp32")
    assert np.ptp(reference) > 1e-3
    out = tmp_path / "reranker"
    model.export_relevance(out)

    # Each loader scores the saved weights along its own path (other offsets in memory, other batching): float noise,
    # not bit for bit (tests/numerics.py).
    ours = CrossEncoder.from_pretrained(out, device="cpu").predict(PAIRS, precision="fp32")
    np.testing.assert_allclose(ours, reference, **ACROSS_PATHS)

    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.num_labels == 1 and type(hf).__name__ == "BertForSequenceClassification"
    tok = model.relevance_tokenizer
    batch = tok(
        [p[0] for p in PAIRS], [p[1] for p in PAIRS], padding=True, truncation=True, max_length=48, return_tensors="pt"
    )
    with torch.no_grad():
        hf_scores = hf(**batch).logits.squeeze(-1).numpy()
    np.testing.assert_allclose(hf_scores, reference, **ACROSS_PATHS)

    st = STCrossEncoder(str(out), device="cpu", max_length=48)  # default activation: read from the checkpoint
    np.testing.assert_allclose(st.predict(PAIRS), reference, **ACROSS_PATHS)
    # the selection model is not part of the export, and no staging folder is left behind
    assert not (out / "selection_tokenizer").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["reranker"]


@pytest.mark.numerics
def test_bi_relevance_exports_a_bi_encoder(encoder_dir, tmp_path):
    from rankface.models.bi_encoder import BiEncoder

    model = CETModel.from_encoders(encoder_dir, relevance="bi", selection="mlp", max_length=32).eval()
    reference = model.relevance_scorer().predict(PAIRS, precision="fp32")
    model.export_relevance(tmp_path / "bi")
    again = BiEncoder.from_pretrained(tmp_path / "bi", device="cpu").predict(PAIRS, precision="fp32")
    np.testing.assert_allclose(again, reference, **ACROSS_PATHS)  # saved and loaded: see tests/numerics.py


def test_rank_feature_selector_features_and_missing_docs():
    run = {"q1": {"d1": 9.0, "d2": 7.5, "d3": 7.5}, "q2": {"x": 0.4}}
    table = rank_table(run)
    assert table["q1"]["d3"] == (2, 7.5) and table["q1"]["d2"] == (3, 7.5)  # ties: docid descending (utils.ties)
    feats = RankFeatureSelector.collate_groups(["q1", "q2"], [["d3", "zz"], ["x", "y"]], table)
    assert feats["num_missing"] == 2
    expected = torch.tensor(
        [[[np.log1p(2), 7.5], [np.log1p(4), 7.5]], [[np.log1p(1), 0.4], [np.log1p(2), 0.4]]], dtype=torch.float32
    )
    torch.testing.assert_close(feats["features"], expected)
    selector = RankFeatureSelector(hidden_size=8)
    selector.fit_normalization(feats["features"])
    torch.testing.assert_close(selector.feature_mean, expected.reshape(-1, 2).mean(0))
    assert selector(feats).shape == (2, 2)
    with pytest.raises(ValueError, match="group sizes"):
        RankFeatureSelector.collate_groups(["q1", "q2"], [["d1"], ["x", "y"]], table)
    with pytest.raises(ValueError, match=r"\[Q, D, 2\]"):
        selector(torch.zeros(2, 3))


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="relevance_kind"):
        CETConfig(relevance_kind="mlp")
    with pytest.raises(ValueError, match="selection_kind"):
        CETConfig(selection_kind="tree")
    with pytest.raises(ValueError, match="num_labels=1"):
        CETConfig(relevance_config=_tiny_bert(num_labels=2).to_dict()).sub_config("relevance")
    with pytest.raises(ValueError, match="model_type"):
        CETConfig(relevance_config={"hidden_size": 3}).sub_config("relevance")


def test_missing_tokenizer_is_explained():
    config = CETConfig(relevance_config=_tiny_bert(num_labels=1).to_dict(), selection_kind="mlp")
    with pytest.raises(ValueError, match="no tokenizer"):
        CETModel(config).relevance_scorer()


@pytest.mark.numerics
@pytest.mark.parametrize("selection", ["cross", "mlp"])
def test_from_scorers_pairs_trained_models(encoder_dir, tmp_path, selection):
    rel = CrossEncoder.from_pretrained(encoder_dir, max_length=40, device="cpu", allow_untrained_head=True)
    sel = (
        CrossEncoder.from_pretrained(encoder_dir, max_length=40, device="cpu", allow_untrained_head=True)
        if selection == "cross"
        else RankFeatureSelector(hidden_size=8, num_hidden_layers=1)
    )
    pair = CETModel.from_scorers(rel, sel)
    assert pair.relevance is rel.model and pair.config.max_seq_length == 40
    pair.save_pretrained(tmp_path / "pair")
    loaded = AutoModel.from_pretrained(tmp_path / "pair").eval()
    np.testing.assert_allclose(
        loaded.relevance_scorer().predict(PAIRS, precision="fp32"),
        rel.eval().predict(PAIRS, precision="fp32"),
        **ACROSS_PATHS,  # saved and loaded: see tests/numerics.py
    )
    if selection == "mlp":
        torch.testing.assert_close(loaded.selection(torch.ones(1, 2, 2)), sel.eval()(torch.ones(1, 2, 2)))
    with pytest.raises(TypeError, match="relevance must be"):
        CETModel.from_scorers(sel if selection == "mlp" else object(), rel)
