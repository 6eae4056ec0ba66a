"""CrossEncoder and BiEncoder on a tiny random BERT: API shapes, determinism, interoperable checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numerics import ACROSS_PATHS, assert_well_separated
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rankface.models.bi_encoder import BiEncoder
from rankface.models.cross_encoder import CrossEncoder

PAIRS = [
    ("aspirin heart disease", "aspirin study heart risk trial"),
    ("fish oil", "fish oil vitamin diet"),
    ("coffee", "coffee tea milk sugar coffee tea milk sugar coffee tea milk sugar"),
    ("salt blood pressure", "salt"),
    ("soy", "meat eggs fat fiber fruit"),
]


@pytest.fixture(scope="module")
def cross(tiny_bert_dir):
    torch.manual_seed(0)
    return CrossEncoder.from_pretrained(tiny_bert_dir, max_length=64, device="cpu", allow_untrained_head=True)


@pytest.mark.numerics
def test_predict_is_order_independent_and_matches_unbatched_forward(cross):
    scores = cross.predict(PAIRS, batch_size=2, precision="fp32")
    assert scores.shape == (len(PAIRS),) and scores.dtype == np.float32
    shuffled = [4, 2, 0, 3, 1]
    again = cross.predict([PAIRS[i] for i in shuffled], batch_size=3, precision="fp32")
    np.testing.assert_allclose(again, scores[shuffled], atol=1e-5)
    # Padding in length-sorted batches must not change a pair's score: compare with one pair at a time.
    single = np.array([cross.predict([p], batch_size=1, precision="fp32")[0] for p in PAIRS])
    np.testing.assert_allclose(single, scores, atol=1e-5)


@pytest.mark.numerics
def test_bf16_close_to_fp32_without_quantised_ties(cross):
    fp32 = cross.predict(PAIRS, precision="fp32")
    bf16 = cross.predict(PAIRS, precision="bf16")
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    # The scoring head runs in fp32: bf16 logits would round near-equal candidates onto the same value.
    assert len(set(bf16.tolist())) == len(PAIRS)
    assert cross.model.classifier.weight.dtype == torch.float32  # the model itself is untouched


@pytest.mark.numerics
def test_rank_sorts_and_truncates(cross):
    docs = [d for _, d in PAIRS]
    ranked = cross.rank("aspirin heart", docs, top_k=3, return_documents=True)
    scores = cross.predict([("aspirin heart", d) for d in docs])
    # Ties by rankface.utils.ties with the position as the id: the later document first.
    assert [r["corpus_id"] for r in ranked] == sorted(range(len(docs)), key=lambda i: (scores[i], i), reverse=True)[:3]
    assert ranked[0]["text"] == docs[ranked[0]["corpus_id"]]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


@pytest.mark.numerics
def test_new_head_on_plain_encoder_and_round_trip_loads_everywhere(cross, tmp_path):
    assert cross.model.config.num_labels == 1
    cross.save_pretrained(tmp_path)
    want = cross.predict(PAIRS, precision="fp32")
    again = CrossEncoder.from_pretrained(tmp_path, device="cpu")
    assert again.max_length == 64
    np.testing.assert_allclose(again.predict(PAIRS, precision="fp32"), want, **ACROSS_PATHS)  # tests/numerics.py

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    with torch.no_grad():
        batch = tok([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True, return_tensors="pt")
        np.testing.assert_allclose(hf(**batch).logits.squeeze(-1).numpy(), want, atol=1e-5)

    from sentence_transformers import CrossEncoder as STCrossEncoder

    st = STCrossEncoder(str(tmp_path), device="cpu", max_length=64)  # the saved config sets the identity activation
    np.testing.assert_allclose(st.predict(PAIRS), want, atol=1e-5)


@pytest.mark.numerics
def test_group_scores_match_predict(cross):
    queries = ["aspirin", "coffee"]
    groups = [["aspirin heart", "fish oil", "salt"], ["coffee tea", "milk", "soy eggs"]]
    cross.eval()
    with torch.no_grad():
        scores = cross(cross.collate_groups(queries, groups))
    assert scores.shape == (2, 3)
    flat = cross.predict([(q, d) for q, g in zip(queries, groups) for d in g], precision="fp32")
    np.testing.assert_allclose(scores.numpy().ravel(), flat, atol=1e-5)
    with pytest.raises(ValueError, match="same number of documents"):
        cross.collate_groups(queries, [["a"], ["b", "c"]])


def test_predict_rejects_malformed_pairs(cross):
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        cross.predict([("q", "d"), ("only one",)])
    assert cross.predict([]).shape == (0,)


@pytest.mark.numerics
def test_bi_encoder_encode_search_predict_and_sentence_transformers_round_trip(tiny_bert_dir, tmp_path):
    bi = BiEncoder.from_pretrained(tiny_bert_dir, max_length=64, device="cpu")
    corpus = {f"d{i}": d for i, (_, d) in enumerate(PAIRS)}
    emb = bi.encode(list(corpus.values()), batch_size=2, precision="fp32")
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    queries = {"q0": "aspirin heart", "q1": "coffee"}
    run = bi.search(queries, corpus, k=3, precision="fp32")
    q_emb = bi.encode(list(queries.values()), precision="fp32")
    for row, qid in enumerate(queries):
        # `search` encodes the corpus in other batches than `emb`: the scores agree to float noise, not bit for bit
        # (tests/numerics.py). These texts score well apart around the top 3, so the order is the model's anywhere.
        sims = emb @ q_emb[row]
        assert_well_separated(sims, top=3)
        want = [f"d{i}" for i in np.argsort(-sims)[:3]]
        assert list(run[qid]) == want
        np.testing.assert_allclose([run[qid][d] for d in want], [sims[int(d[1:])] for d in want], **ACROSS_PATHS)
    pairs = [("aspirin heart", corpus["d2"]), ("coffee", corpus["d0"])]
    np.testing.assert_allclose(bi.predict(pairs, precision="fp32"), [emb[2] @ q_emb[0], emb[0] @ q_emb[1]], atol=1e-5)

    with torch.no_grad():
        scores = bi(bi.collate_groups(["aspirin heart"], [[corpus["d0"], corpus["d1"]]]))
    np.testing.assert_allclose(scores.numpy()[0], bi.scale * (emb[:2] @ q_emb[0]), atol=1e-4)

    bi.save_pretrained(tmp_path)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path), device="cpu")
    np.testing.assert_allclose(st.encode(list(corpus.values())), emb, atol=1e-5)
    again = BiEncoder.from_pretrained(tmp_path, device="cpu")
    np.testing.assert_allclose(again.encode(list(corpus.values()), precision="fp32"), emb, **ACROSS_PATHS)


def test_truncating_layers_of_real_minilm(minilm_dir):
    cross = CrossEncoder.from_pretrained(minilm_dir, num_layers=1, device="cpu", allow_untrained_head=True)
    assert len(cross.model.bert.encoder.layer) == 1 and cross.model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="num_layers"):
        CrossEncoder.from_pretrained(minilm_dir, num_layers=9, device="cpu", allow_untrained_head=True)
