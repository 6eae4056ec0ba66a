"""What users of sentence-transformers and rerankers expect of `predict` and `rank` (issue 17 item 12):
`BiEncoder.rank`, one pair or a generator to `predict`, an activation option, documents with ids of their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numerics import ACROSS_PATHS

from rankface.models.bi_encoder import BiEncoder
from rankface.models.cross_encoder import CrossEncoder

QUERY = "aspirin heart"
DOCS = ["aspirin study heart risk trial", "fish oil vitamin diet", "coffee tea milk sugar", "salt", "soy eggs fat"]


@pytest.fixture(scope="module")
def cross(tiny_bert_dir):
    torch.manual_seed(0)
    return CrossEncoder.from_pretrained(tiny_bert_dir, max_length=64, device="cpu", allow_untrained_head=True)


@pytest.fixture(scope="module")
def bi(tiny_bert_dir):
    return BiEncoder.from_pretrained(tiny_bert_dir, max_length=64, device="cpu")


@pytest.fixture(params=["cross", "bi"])
def model(request, cross, bi):
    return cross if request.param == "cross" else bi


def _by_rule(scores, ids) -> list[int]:
    """Positions best first: score descending, then id descending (written apart from rankface.utils.ties)."""
    return sorted(range(len(ids)), key=lambda i: (float(scores[i]), ids[i]), reverse=True)


def test_bi_encoder_ranks_as_the_cross_encoder_does(bi, cross):
    hits = bi.rank(QUERY, DOCS, top_k=3, return_documents=True, precision="fp32")
    scores = bi.predict([(QUERY, d) for d in DOCS], precision="fp32")
    assert [h["corpus_id"] for h in hits] == _by_rule(scores, list(range(len(DOCS))))[:3]
    assert all(h["text"] == DOCS[h["corpus_id"]] for h in hits)
    np.testing.assert_allclose([h["score"] for h in hits], scores[[h["corpus_id"] for h in hits]], **ACROSS_PATHS)
    # The same shape of hit as CrossEncoder.rank's (sentence-transformers'), key for key.
    assert [list(h) for h in hits] == [list(h) for h in cross.rank(QUERY, DOCS, top_k=3, return_documents=True)]
    # Ties: a repeated document scores exactly the same (each distinct text is encoded once); the later one first.
    tied = bi.rank(QUERY, ["salt", "fish oil", "salt"], precision="fp32")
    salts = [h["corpus_id"] for h in tied if h["corpus_id"] != 1]
    assert salts == [2, 0]
    assert bi.rank(QUERY, []) == []


def test_predict_takes_one_pair_and_returns_a_float(model):
    many = model.predict([(QUERY, d) for d in DOCS], precision="fp32")
    one = model.predict((QUERY, DOCS[2]), precision="fp32")
    assert isinstance(one, float)
    assert one == pytest.approx(float(many[2]), abs=1e-5)  # one pair alone: other batch padding
    assert isinstance(model.predict([QUERY, DOCS[2]], precision="fp32"), float)  # a list of two strings is a pair


def test_predict_takes_a_generator(model):
    many = model.predict([(QUERY, d) for d in DOCS], precision="fp32")
    from_generator = model.predict(((QUERY, d) for d in DOCS), precision="fp32")
    assert isinstance(from_generator, np.ndarray) and from_generator.shape == (len(DOCS),)
    np.testing.assert_allclose(from_generator, many, atol=1e-6)  # the same pairs in the same batches
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        model.predict(iter([(QUERY, "a"), (QUERY,)]))
    with pytest.raises(TypeError, match="got the string"):
        model.predict("aspirin")


def test_activation(model):
    raw = model.predict([(QUERY, d) for d in DOCS], precision="fp32")
    sigmoid = model.predict([(QUERY, d) for d in DOCS], precision="fp32", activation="sigmoid")
    np.testing.assert_allclose(sigmoid, 1.0 / (1.0 + np.exp(-raw.astype(np.float64))), atol=1e-6)
    np.testing.assert_allclose(model.predict([(QUERY, d) for d in DOCS], precision="fp32", activation=torch.tanh),
                               np.tanh(raw), atol=1e-6)
    one = model.predict((QUERY, DOCS[0]), precision="fp32", activation="sigmoid")
    assert isinstance(one, float) and 0.0 < one < 1.0
    hits = model.rank(QUERY, DOCS, precision="fp32", activation="sigmoid")
    assert all(0.0 < h["score"] < 1.0 for h in hits)
    with pytest.raises(ValueError, match="activation must be one of"):
        model.predict([(QUERY, DOCS[0])], activation="softmax")


def test_rank_with_document_ids(model):
    ids = ["d3", "d9", "d1", "d7", "d5"]
    hits = model.rank(QUERY, DOCS, doc_ids=ids, top_k=4, return_documents=True, precision="fp32")
    scores = model.predict([(QUERY, d) for d in DOCS], precision="fp32")
    assert [h["corpus_id"] for h in hits] == _by_rule(scores, ids)[:4]
    assert all(h["doc_id"] == ids[h["corpus_id"]] and h["text"] == DOCS[h["corpus_id"]] for h in hits)
    assert list(hits[0]) == ["corpus_id", "doc_id", "score", "text"]
    with pytest.raises(ValueError, match="doc_ids must be unique; repeated: \\['d1'\\]"):
        model.rank(QUERY, DOCS, doc_ids=["d1", "d2", "d1", "d4", "d5"])
    with pytest.raises(ValueError, match="4 doc_ids for 5 documents"):
        model.rank(QUERY, DOCS, doc_ids=ids[:4])
    with pytest.raises(TypeError, match="all strings or all integers"):
        model.rank(QUERY, DOCS, doc_ids=["a", 1, "b", 2, "c"])


def test_document_ids_break_ties(bi):
    """Repeated texts tie exactly; with ids the greater id comes first (trec_eval's order), not the later one."""
    hits = bi.rank(QUERY, ["salt", "salt", "salt"], doc_ids=["b", "c", "a"], precision="fp32")
    assert [h["doc_id"] for h in hits] == ["c", "b", "a"]
    hits = bi.rank(QUERY, ["salt", "salt"], doc_ids=[10, 2], precision="fp32")
    assert [h["doc_id"] for h in hits] == [10, 2]
