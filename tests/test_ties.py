"""One tie rule everywhere: a reranked run, its TREC file, trec_eval and `evaluate` put tied documents in the same
places (score descending, then document id descending: trec_eval's order)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from rankface.data.ir import build_training_groups
from rankface.evaluation.ranking import evaluate
from rankface.retrieval.lucene import Hit
from rankface.retrieval.pipeline import hits_to_run, rerank, run_to_hits
from rankface.retrieval.trec import read_run, write_run

QUERIES = {"q1": "cholesterol statins"}
DOCS = {
    "d1": "statins",
    "d2": "cholesterol statins trial",
    "d3": "green tea",
    "d4": "statins and cholesterol",
    "d5": "eggs",
}
QRELS = {"q1": {"d2": 1, "d4": 0}}
# The first stage ranks d2 above d4, so "keep the first-stage order" and "docid descending" disagree on the tie.
FIRST_STAGE = {"q1": [Hit("d2", 9.0, 1), Hit("d5", 8.0, 2), Hit("d1", 7.0, 3), Hit("d4", 6.0, 4), Hit("d3", 5.0, 5)]}
# Under the rule: d4 before d2 (both 2 terms), d1 (1 term), then d5 before d3 (0 terms).
EXPECTED = ["d4", "d2", "d1", "d5", "d3"]


class TermOverlap:
    """A lexical scorer (query terms found in the document): integer scores, so ties are exact by design."""

    def predict(self, pairs, batch_size=32, show_progress_bar=None):
        return np.array([float(len(set(q.split()) & set(d.split()))) for q, d in pairs])


def test_a_reranked_run_its_trec_file_and_its_evaluation_agree_on_ties(tmp_path):
    reranked = rerank(FIRST_STAGE, QUERIES, DOCS.__getitem__, TermOverlap(), top_k=5)
    assert [h.docid for h in reranked["q1"]] == EXPECTED
    assert [h.rank for h in reranked["q1"]] == [1, 2, 3, 4, 5]

    path = write_run(tmp_path / "run.trec", hits_to_run(reranked))
    lines = [line.split() for line in path.read_text().splitlines()]
    assert [cols[2] for cols in lines] == EXPECTED and [cols[3] for cols in lines] == ["1", "2", "3", "4", "5"]
    assert [h.docid for h in run_to_hits(read_run(path))["q1"]] == EXPECTED

    # d4 (grade 0) holds rank 1 and d2 (grade 1) rank 2, in the run and in its evaluation.
    result = evaluate(read_run(path), QRELS, ["RR@10", "nDCG@1", "nDCG@10"])
    assert result["RR@10"] == 0.5 and result["nDCG@1"] == 0.0
    assert result["nDCG@10"] == pytest.approx(1 / math.log2(3))  # relevant at rank 2 of an ideal 1
    # ... and a ranking given as hits is evaluated in that same order.
    assert evaluate(reranked, QRELS, ["RR@10"])["RR@10"] == 0.5


@pytest.mark.slow  # one JVM start
def test_trec_eval_reads_a_written_run_in_rankface_order(tmp_path):
    from rankface.retrieval.java import run_pyserini_module
    from rankface.retrieval.trec import write_qrels

    reranked = rerank(FIRST_STAGE, QUERIES, DOCS.__getitem__, TermOverlap(), top_k=5)
    run_path = write_run(tmp_path / "run.trec", hits_to_run(reranked))
    qrels_path = write_qrels(tmp_path / "qrels.txt", QRELS)
    done = run_pyserini_module("pyserini.eval.trec_eval", ["-m", "recip_rank", "-m", "ndcg_cut.1",
                                                            str(qrels_path), str(run_path)], capture=True)
    values = {cols[0]: float(cols[2]) for cols in (line.split() for line in done.stdout.splitlines()) if len(cols) == 3}
    assert values["recip_rank"] == pytest.approx(0.5) and values["ndcg_cut_1"] == pytest.approx(0.0)


def test_the_rule_in_one_helper():
    from rankface.utils.ties import rank_order, ranked, top_k

    scores = {"a": 1.0, "c": 2.0, "b": 2.0, "d": 0.5}
    assert ranked(scores) == [("c", 2.0), ("b", 2.0), ("a", 1.0), ("d", 0.5)]
    assert rank_order(["a", "c", "b", "d"], [1.0, 2.0, 2.0, 0.5]) == [1, 2, 0, 3]
    # The cut falls inside a tie: the rule decides which tied documents make it, not the array order.
    ids = ["b", "a", "d", "c", "e"]
    assert top_k(ids, np.array([3.0, 1.0, 1.0, 1.0, 0.0]), 2) == [0, 2]  # b, then d (the largest tied id)
    assert top_k(ids, np.array([3.0, 1.0, 1.0, 1.0, 0.0]), 9) == [0, 2, 3, 1, 4]
    with pytest.raises(ValueError, match="NaN"):
        ranked({"a": float("nan")})


def test_bm25_hits_follow_the_rule():
    from rankface.retrieval.lucene import Bm25Retriever

    # Lucene breaks ties by its internal document number: here the order the documents were indexed in.
    raw = [SimpleNamespace(docid=d, score=s) for d, s in (("a", 2.0), ("c", 1.5), ("b", 1.5), ("d", 1.0))]
    assert [(h.docid, h.rank) for h in Bm25Retriever._hits(raw)] == [("a", 1), ("c", 2), ("b", 3), ("d", 4)]
    raw = [SimpleNamespace(docid=d, score=s) for d, s in (("a", 2.0), ("b", 1.5), ("c", 1.5))]
    assert [h.docid for h in Bm25Retriever._hits(raw)] == ["a", "c", "b"]


def test_training_windows_follow_the_rule():
    # Window = rank 1 only: the negative is whichever of the tied documents the rule puts first.
    run = {"q1": {"n1": 5.0, "n2": 5.0, "p": 1.0}}
    groups, _ = build_training_groups({"q1": "x"}, {"q1": {"p": 1}}, run, num_negatives=1, rank_window=(1, 1))
    assert [g.negative_docids for g in groups] == [("n2",)]
