"""BM25-style hits -> real MiniLM cross-encoder (1 layer) -> reranked hits -> TREC run -> evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from rankface.evaluation.ranking import evaluate
from rankface.models.bi_encoder import BiEncoder
from rankface.models.cross_encoder import CrossEncoder
from rankface.retrieval.lucene import Hit
from rankface.retrieval.pipeline import RerankedHit, hits_to_run, rerank, run_to_hits
from rankface.retrieval.trec import read_run, write_run

DOCS = {
    "d1": "statins lower cholesterol and may reduce breast cancer mortality",
    "d2": "green tea polyphenols",
    "d3": "vitamin d deficiency is common in winter",
    "d4": "eggs and dietary cholesterol",
    "d5": "a very long document about nothing in particular " * 5,
}
QUERIES = {"q1": "do statins help against cancer", "q2": "vitamin d", "q3": "zoloft"}
FIRST_STAGE = {
    "q1": {"d4": 3.0, "d2": 2.5, "d1": 2.0, "d5": 1.0},
    "q2": {"d3": 5.0, "d5": 1.0, "d4": 0.5},
    "q3": {},  # no first-stage hit: stays empty
}


@pytest.fixture(scope="module")
def cross_encoder(minilm_dir):
    # A new head on MiniLM: these tests check the pipeline's plumbing, not the quality of the scores.
    return CrossEncoder.from_pretrained(minilm_dir, num_layers=1, max_length=64, device="cpu", allow_untrained_head=True)


@pytest.mark.numerics
def test_rerank_scores_all_queries_in_one_call(cross_encoder, monkeypatch):
    hits = run_to_hits(FIRST_STAGE)
    assert [h.docid for h in hits["q1"]] == ["d4", "d2", "d1", "d5"]
    calls = []
    real_predict = cross_encoder.predict

    def spy(pairs, **kwargs):  # records the calls, scores with the real model
        calls.append(list(pairs))
        return real_predict(pairs, **kwargs)

    monkeypatch.setattr(cross_encoder, "predict", spy)
    out = rerank(hits, QUERIES, DOCS.__getitem__, cross_encoder, top_k=3, batch_size=2,
                 predict_kwargs={"precision": "fp32"})
    assert len(calls) == 1 and len(calls[0]) == 3 + 3  # top_k=3 of q1, all 3 of q2, none of q3
    assert list(out) == ["q1", "q2", "q3"] and out["q3"] == []
    monkeypatch.undo()
    for qid, reranked in out.items():
        assert all(isinstance(h, RerankedHit) for h in reranked)
        assert [h.rank for h in reranked] == list(range(1, len(reranked) + 1))
        assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
        first = {h.docid: h.score for h in hits[qid][:3]}
        assert {h.docid: h.first_stage_score for h in reranked} == first  # top_k kept, first-stage score kept
        # each score is the model's score of that pair alone (cross-query batching changes nothing)
        alone = cross_encoder.predict([(QUERIES[qid], DOCS[h.docid]) for h in reranked], precision="fp32")
        np.testing.assert_allclose([h.score for h in reranked], alone, atol=1e-4)
    assert "d5" not in {h.docid for h in out["q1"]}


@pytest.mark.numerics
def test_reranked_run_round_trips_and_evaluates(cross_encoder, tmp_path):
    out = rerank(run_to_hits(FIRST_STAGE), QUERIES, DOCS.__getitem__, cross_encoder, top_k=10)
    run = hits_to_run(out)
    path = write_run(tmp_path / "reranked.trec", run, tag="minilm")
    back = read_run(path)
    assert back == {"q1": run["q1"], "q2": run["q2"]}  # q3 had nothing to write
    ranked_back = run_to_hits(back)
    for qid in ("q1", "q2"):
        assert [h.docid for h in ranked_back[qid]] == [h.docid for h in out[qid]]
    first = hits_to_run(out, first_stage=True)
    assert first["q1"] == FIRST_STAGE["q1"]
    qrels = {"q1": {"d1": 2}, "q2": {"d3": 1}, "q3": {"d2": 1}}
    ev = evaluate(back, qrels, measures=["RR@10"])
    expected_q1 = 1.0 / next(h.rank for h in out["q1"] if h.docid == "d1")
    assert ev.per_query["RR@10"]["q1"] == pytest.approx(expected_q1)
    assert ev.per_query["RR@10"]["q3"] == 0.0


def test_any_pair_scorer_works_bi_encoder(minilm_dir):
    bi = BiEncoder.from_pretrained(minilm_dir, num_layers=1, max_length=64, device="cpu")
    out = rerank(run_to_hits(FIRST_STAGE), QUERIES, DOCS.__getitem__, bi, top_k=2)
    assert [len(v) for v in out.values()] == [2, 2, 0]
    for h in out["q2"]:
        assert -1.0 - 1e-5 <= h.score <= 1.0 + 1e-5  # cosine similarities


def test_errors(cross_encoder):
    hits = {"qx": [Hit("d1", 1.0, 1)]}
    with pytest.raises(KeyError, match="no text"):
        rerank(hits, QUERIES, DOCS.__getitem__, cross_encoder)
    with pytest.raises(ValueError, match="top_k"):
        rerank(run_to_hits(FIRST_STAGE), QUERIES, DOCS.__getitem__, cross_encoder, top_k=0)
    with pytest.raises(ValueError, match="twice"):
        hits_to_run({"q": [Hit("d1", 1.0, 1), Hit("d1", 0.5, 2)]})
    assert rerank({"q3": []}, QUERIES, DOCS.__getitem__, cross_encoder) == {"q3": []}
