"""Cheap training modes: query-side fine-tuning with a cached corpus, partial fine-tuning, mixed precision `auto`."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import launch_two_processes
from safetensors.torch import load_file
from test_training import RECIPE, settings, write_collection, write_config

from rankface.losses.ranking import graded_listwise_loss, ranking_loss
from rankface.models.bi_encoder import BiEncoder
from rankface.models.bi_encoder.document_cache import (
    DocumentEmbeddings,
    StaleCacheError,
    cached_document_embeddings,
    corpus_fingerprint,
    tower_fingerprint,
)
from rankface.training import parse_training_args, train
from rankface.training.modes import resolve_mixed_precision

CORPUS = {
    "d0": "fish oil heart disease",
    "d1": "vitamin sugar coffee",
    "d2": "aspirin blood pressure trial",
    "d3": "soy milk fiber diet study",
    "d4": "salt fat meat eggs risk",
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


def train_with(collection, tiny_bert_dir, tmp_path, **overrides) -> Path:
    values = settings(collection, tiny_bert_dir, tmp_path / "out", encoder="bi", **overrides)
    train(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    return tmp_path / "out"


# ---------------------------------------------------------------------------------------------- query-side
def test_query_side_training_freezes_the_document_tower_and_exports_two_towers(collection, tiny_bert_dir, tmp_path):
    out = train_with(collection, tiny_bert_dir, tmp_path, training_mode="query_side")
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    query_tower = load_file(str(out / "model" / "query_0_Transformer" / "model.safetensors"))
    document_tower = load_file(str(out / "model" / "document_0_Transformer" / "model.safetensors"))
    # The frozen tower's weights are copied and saved, never computed on: they come back bit for bit.
    for name, tensor in document_tower.items():
        assert torch.equal(tensor, start[name]), name
    moved = [n for n, t in query_tower.items() if not torch.equal(t, start[n])]
    assert "encoder.layer.0.attention.self.query.weight" in moved
    # The run made its document cache once, under cache_dir, keyed by tower and corpus.
    assert len(list((tmp_path / "cache" / "document_embeddings").glob("*.npy"))) == 1

    loaded = BiEncoder.from_pretrained(out / "model", device="cpu")
    assert loaded.doc_model is not None
    for name, tensor in loaded.doc_model.state_dict().items():
        assert torch.equal(tensor, start[name]), name


@pytest.mark.numerics
def test_two_towers_load_in_sentence_transformers_with_the_same_embeddings(collection, tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = train_with(collection, tiny_bert_dir, tmp_path, training_mode="query_side", max_steps=2)
    ours = BiEncoder.from_pretrained(out / "model", device="cpu")
    theirs = SentenceTransformer(str(out / "model"), device="cpu")
    texts = list(CORPUS.values())
    # Same weights, other code (other padding of the batch, another pooling implementation): fp32 rounding
    # differs by a few ulps of unit-length vectors, far below 1e-5.
    queries, documents = ours.encode_query(texts, precision="fp32"), ours.encode_document(texts, precision="fp32")
    np.testing.assert_allclose(theirs.encode_query(texts), queries, atol=1e-5)
    np.testing.assert_allclose(theirs.encode_document(texts), documents, atol=1e-5)
    # The towers differ after training, so the routes really are separate.
    assert np.abs(queries - documents).max() > 1e-3


@pytest.mark.numerics
def test_a_cached_step_gives_the_loss_of_an_uncached_step(tiny_bert_dir, tmp_path):
    model = BiEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu")
    model.freeze_document_tower()
    queries = ["fish heart", "vitamin coffee"]
    groups = [[CORPUS["d0"], CORPUS["d1"], CORPUS["d2"]], [CORPUS["d1"], CORPUS["d3"], CORPUS["d4"]]]
    torch.manual_seed(0)
    model.eval()  # dropout off in the query tower, so both forwards compute the same function
    uncached = ranking_loss("pairwise", model(model.collate_groups(queries, groups)))
    model.use_document_cache(cached_document_embeddings(model, CORPUS, tmp_path / "cache"))
    features = model.collate_groups(queries, groups)
    assert "document_rows" in features and "documents" not in features
    cached = ranking_loss("pairwise", model(features))
    # The cache encoded each document in its own length-sorted batch (other padding, other summation order than
    # the group batch); in fp32 that moves unit-length embeddings by ~1e-7, and a loss of scale 20 by < 1e-4.
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-4)


def test_a_cache_made_for_another_tower_or_corpus_is_refused(tiny_bert_dir, tmp_path):
    model = BiEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu")
    model.freeze_document_tower()
    made = cached_document_embeddings(model, CORPUS, tmp_path / "cache")
    path = next((tmp_path / "cache" / "document_embeddings").glob("*.npy"))
    tower = tower_fingerprint(model.document_model, model.tokenizer, model.max_length)
    assert made.tower == tower and made.corpus == corpus_fingerprint(CORPUS)
    # A second call reads the file back instead of encoding again.
    again = cached_document_embeddings(model, CORPUS, tmp_path / "cache")
    assert torch.equal(again.embeddings, made.embeddings)

    other_corpus = CORPUS | {"d1": "vitamin sugar tea"}
    with pytest.raises(StaleCacheError, match="another corpus"):
        DocumentEmbeddings.load(path, other_corpus).check(tower, corpus_fingerprint(other_corpus), str(path))
    with torch.no_grad():
        model.doc_model.embeddings.word_embeddings.weight[5] += 0.1
    other_tower = tower_fingerprint(model.document_model, model.tokenizer, model.max_length)
    with pytest.raises(StaleCacheError, match="another document tower"):
        DocumentEmbeddings.load(path, CORPUS).check(other_tower, corpus_fingerprint(CORPUS), str(path))
    # A file under the right name whose index says otherwise (copied by hand) is refused too.
    renamed = path.parent / f"{other_tower[:16]}-{path.stem.split('-')[1]}.npy"
    path.rename(renamed)
    path.with_suffix(".json").rename(renamed.with_suffix(".json"))
    with pytest.raises(StaleCacheError, match="another document tower"):
        cached_document_embeddings(model, CORPUS, tmp_path / "cache")


def test_query_side_works_with_cet_and_lora(collection, tiny_bert_dir, tmp_path):
    out = train_with(collection, tiny_bert_dir, tmp_path, training_mode="query_side", method="cet",
                     cet_selection="same", cet_weights_from="eval_forward", cet_temperature=2.0, lora_rank=4, max_steps=3)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 3 and {"loss", "selection_loss"} <= set(state["log"][-1])
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    query_tower = load_file(str(out / "model" / "query_0_Transformer" / "model.safetensors"))
    assert not any("lora" in name for name in query_tower), "the exported query tower must be merged"
    assert not torch.equal(query_tower["encoder.layer.0.attention.self.query.weight"],
                           start["encoder.layer.0.attention.self.query.weight"])
    document_tower = load_file(str(out / "model" / "document_0_Transformer" / "model.safetensors"))
    assert all(torch.equal(t, start[n]) for n, t in document_tower.items())
    # The selection model is saved beside it (for diagnostics), a bi-encoder of its own that trained apart.
    selection = load_file(str(out / "selection_model" / "query_0_Transformer" / "model.safetensors"))
    assert not torch.equal(selection["encoder.layer.0.attention.self.query.weight"],
                           query_tower["encoder.layer.0.attention.self.query.weight"])
    assert BiEncoder.from_pretrained(out / "selection_model", device="cpu").doc_model is not None


def test_query_side_cet_with_the_mlp_selection_model_saves_both(collection, tiny_bert_dir, tmp_path):
    out = train_with(collection, tiny_bert_dir, tmp_path, training_mode="query_side", method="cet",
                     cet_selection="mlp", cet_weights_from="eval_forward", cet_temperature=2.0, max_steps=3)
    assert BiEncoder.from_pretrained(out / "model", device="cpu").doc_model is not None
    from rankface.models.cet import RankFeatureSelector

    selector = RankFeatureSelector.from_pretrained(out / "selection_model")
    # Its standardisation comes back: fitted on the negatives' run, every one of the 60 documents at ranks 1-60 with
    # score 100 - rank for each train query.
    ranks = torch.arange(1, 61, dtype=torch.float64)
    torch.testing.assert_close(selector.feature_mean.double(), torch.stack([ranks.log1p().mean(), 100 - ranks.mean()]))


@pytest.mark.numerics
def test_query_side_resume_reproduces_the_uninterrupted_run(collection, tiny_bert_dir, tmp_path):
    values = settings(collection, tiny_bert_dir, tmp_path / "out", encoder="bi", training_mode="query_side",
                      checkpoint_steps=3, checkpoints_to_keep=5)
    config = write_config(tmp_path / "c.yaml", values)
    train(parse_training_args(["--config", str(config)]))
    uninterrupted = load_file(str(tmp_path / "out" / "model" / "query_0_Transformer" / "model.safetensors"))
    for path in (tmp_path / "out" / "checkpoints" / "step-0000006", tmp_path / "out" / "model"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    train(parse_training_args(["--config", str(config), "--resume_from_checkpoint", "latest"]))
    resumed = load_file(str(tmp_path / "out" / "model" / "query_0_Transformer" / "model.safetensors"))
    # The resumed run reads its weights back from the checkpoint, at other offsets in memory, where MKL may sum in
    # another order (tests/numerics.py). Adam turns a relative gradient difference d into a weight difference of
    # about learning_rate * d per step (1e-3 * 1e-6 here), far below 1e-6; a step taken twice or skipped moves
    # weights by ~learning_rate.
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_query_side_two_processes_stay_synchronised(collection, tiny_bert_dir, tmp_path):
    # With corpus negatives (the demo's setting): each process scores its queries against the whole cached corpus.
    values = settings(collection, tiny_bert_dir, tmp_path / "out", encoder="bi", training_mode="query_side", max_steps=4,
                      loss="listwise", corpus_negatives=True, ddp_timeout=120)
    launch_two_processes(RECIPE, write_config(tmp_path / "c.yaml", values), timeout=300, output_dir=tmp_path / "out")
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 4
    assert len(set(state["rank_fingerprints"])) == 1


# ---------------------------------------------------------------------------------------------- partial
@pytest.mark.parametrize("encoder", ["bi", "cross"])
def test_partial_training_leaves_the_bottom_layers_bitwise_unchanged(collection, tiny_bert_dir, tmp_path, encoder):
    values = settings(collection, tiny_bert_dir, tmp_path / "out", encoder=encoder, training_mode="partial",
                      frozen_layers=1)
    train(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    saved = load_file(str(tmp_path / "out" / "model" / "model.safetensors"))
    prefix = "bert." if encoder == "cross" else ""
    frozen = [n for n in start if n.startswith(("embeddings.", "encoder.layer.0."))]
    assert frozen and all(torch.equal(saved[prefix + n], start[n]) for n in frozen)
    assert not torch.equal(saved[f"{prefix}encoder.layer.1.attention.self.query.weight"],
                           start["encoder.layer.1.attention.self.query.weight"])


# ---------------------------------------------------------------------------------------------- corpus negatives
@pytest.mark.numerics
def test_corpus_negatives_add_every_unexcluded_document_to_the_softmax(tiny_bert_dir, tmp_path):
    model = BiEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu")
    model.freeze_document_tower()
    model.use_document_cache(cached_document_embeddings(model, CORPUS, tmp_path / "cache"))
    model.eval()
    queries = ["fish heart", "vitamin coffee"]
    groups = [["d0", "d1"], ["d3", "d4"]]
    features = model.collate_groups(queries, [[CORPUS[d] for d in g] for g in groups])
    ids = model.document_cache.doc_ids
    exclude = torch.tensor([[d in ("d0", "d1", "d2") for d in ids], [d in ("d3", "d4") for d in ids]])
    features["corpus_exclude"] = exclude
    scores = model(features)
    assert scores.shape == (2, 2 + len(ids))

    # Written independently: scale * cosine of the encoded texts; the softmax runs over the group and every
    # document not excluded; the positive is each group's first document.
    q = torch.from_numpy(model.encode_query(queries, precision="fp32"))
    d = torch.from_numpy(model.encode_document([CORPUS[i] for i in ids], precision="fp32"))
    expected_loss = 0.0
    for row, group in enumerate(groups):
        allowed = [ids.index(g) for g in group] + [j for j in range(len(ids)) if not exclude[row, j]]
        logits = torch.stack([model.scale * q[row] @ d[j] for j in allowed])
        expected_loss += -torch.log_softmax(logits, 0)[0] / len(groups)
        assert torch.isinf(scores[row, 2:][exclude[row]]).all()
    # Encoding in other batches moves unit vectors by ~1e-7 (different padding); a loss of scale 20 by < 1e-4.
    torch.testing.assert_close(ranking_loss("listwise", scores.float()), expected_loss, rtol=0, atol=1e-4)


def test_corpus_negatives_train_and_exclude_the_query_s_relevant_documents(collection, tiny_bert_dir, tmp_path):
    from rankface.training.data import prepare_training_data
    from rankface.training.loop import GroupCollator, load_text_model

    args = parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", settings(
        collection, tiny_bert_dir, tmp_path / "out", encoder="bi", training_mode="query_side", loss="listwise",
        corpus_negatives=True)))])
    data = prepare_training_data(args)
    model = load_text_model(args, data.docs)
    batch = GroupCollator(model, data, corpus_negatives=True)([0, 1])
    ids = model.document_cache.doc_ids
    for row, group in enumerate(data.groups[:2]):
        excluded = {ids[j] for j in torch.nonzero(batch["corpus_exclude"][row]).flatten().tolist()}
        relevant = {d for d, grade in data.train_qrels[group.qid].items() if grade > 0}
        assert excluded == relevant | {group.positive_docid, *group.negative_docids}
    # The whole run trains with them (finite loss, a saved model).
    train(args)
    assert (tmp_path / "out" / "model" / "router_config.json").is_file()


def test_corpus_positives_make_every_relevant_document_a_graded_target(collection, tiny_bert_dir, tmp_path):
    from rankface.training.data import prepare_training_data
    from rankface.training.loop import GroupCollator, load_text_model

    args = parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", settings(
        collection, tiny_bert_dir, tmp_path / "out", encoder="bi", training_mode="query_side", loss="listwise",
        corpus_negatives=True, corpus_positives=True)))])
    data = prepare_training_data(args)
    model = load_text_model(args, data.docs)
    batch = GroupCollator(model, data, corpus_negatives=True, corpus_positives=True)([0, 1])
    ids = model.document_cache.doc_ids
    size = 1 + len(data.groups[0].negative_docids)
    for row, group in enumerate(data.groups[:2]):
        judged = data.train_qrels[group.qid]
        excluded = {ids[j] for j in torch.nonzero(batch["corpus_exclude"][row]).flatten().tolist()}
        assert excluded == {group.positive_docid, *group.negative_docids}  # the relevant ones now stay in
        grades = batch["grades"][row]
        assert grades[0] == max(judged.get(group.positive_docid, 0), 1) and not grades[1:size].any()
        targets = {ids[j]: float(grades[size + j]) for j in torch.nonzero(grades[size:]).flatten().tolist()}
        assert targets == {d: float(g) for d, g in judged.items() if g > 0 and d not in excluded}

    # The loss, written out: -sum over the targets of (2^g - 1) / Z * log softmax over the columns not left out.
    model.eval()
    scores = model(batch).float()
    expected = 0.0
    for row in range(2):
        kept = torch.isfinite(scores[row])
        log_p = torch.log_softmax(scores[row][kept], 0)
        gains = 2.0 ** batch["grades"][row][kept] - 1
        expected += -(gains / gains.sum() * log_p).sum() / 2
    torch.testing.assert_close(graded_listwise_loss(scores, batch["grades"]), expected, rtol=1e-5, atol=1e-5)
    train(args)  # the whole run trains with them (finite loss, a saved model)
    assert (tmp_path / "out" / "model" / "router_config.json").is_file()
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert all(math.isfinite(entry["loss"]) for entry in state["log"] if "loss" in entry)


# ---------------------------------------------------------------------------------------------- settings
def test_mode_settings_are_checked(collection, tiny_bert_dir, tmp_path):
    base = settings(collection, tiny_bert_dir, tmp_path / "out")
    with pytest.raises(ValueError, match="query_side' needs encoder 'bi'"):
        parse_training_args(["--config", str(write_config(tmp_path / "a.yaml", base | {"encoder": "cross",
                                                                                        "training_mode": "query_side"}))])
    with pytest.raises(ValueError, match="needs frozen_layers >= 1"):
        parse_training_args(["--config", str(write_config(tmp_path / "b.yaml", base | {"training_mode": "partial"}))])
    with pytest.raises(ValueError, match="frozen_layers is set"):
        parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", base | {"frozen_layers": 2}))])
    with pytest.raises(ValueError, match="corpus_negatives needs training_mode 'query_side'"):
        parse_training_args(["--config", str(write_config(tmp_path / "d.yaml", base | {
            "encoder": "bi", "training_mode": "query_side", "loss": "pairwise", "corpus_negatives": True}))])
    with pytest.raises(ValueError, match="corpus_positives needs corpus_negatives"):
        parse_training_args(["--config", str(write_config(tmp_path / "e.yaml", base | {
            "encoder": "bi", "training_mode": "query_side", "loss": "listwise", "corpus_positives": True}))])


def test_one_process_trains_twice_with_different_precisions(collection, tiny_bert_dir, tmp_path):
    # A sweep in one process (benchmarks/training_modes.py, a notebook): accelerate allows one precision per process
    # unless train() lets go of it when it ends.
    for name, precision in (("a", "no"), ("b", "bf16")):
        (tmp_path / name).mkdir()
        assert (train_with(collection, tiny_bert_dir, tmp_path / name, mixed_precision=precision, max_steps=1)
                / "model").is_dir()


def test_mixed_precision_auto_follows_the_hardware(monkeypatch):
    import rankface.models._text as text

    assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision(None) is None
    if torch.cuda.is_available():
        pytest.skip("the CPU rule is checked on CPU-only machines")
    monkeypatch.setattr(text, "_cpu_has_bf16", lambda: True)
    assert resolve_mixed_precision("auto") == ("bf16" if torch.backends.mkldnn.is_available() else "no")
    monkeypatch.setattr(text, "_cpu_has_bf16", lambda: False)
    assert resolve_mixed_precision("auto") == "no"
