"""Pooled-label simulation, run fusion, dense runs and false-negative rates on synthetic qrels and runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from numerics import ACROSS_PATHS, assert_well_separated
from tiny_models import tiny_bert_config, tiny_tokenizer
from transformers import BertModel

from rankface.data.ir import TrainingGroup, build_training_groups
from rankface.data.mining import dense_run, false_negative_rate, fuse_runs, pooled_labels_main, simulate_pooled_labels
from rankface.retrieval.trec import read_qrels, write_qrels, write_run


def _run(*docids: str) -> dict[str, float]:
    """A run for one query: the first docid scores highest."""
    return {d: float(100 - i) for i, d in enumerate(docids)}


@pytest.fixture
def synthetic():
    run = {
        "q1": _run(*(f"d{i}" for i in range(1, 13))),  # pool (P=10) = d1..d10
        "q2": {"a": 5.0, "c": 3.0, "b": 5.0, "x": 1.0},  # tie a/b at 5.0: docid descending (utils.ties) puts b (rank 1) before a
        "q3": _run("e1", "e2", "e3"),
        "q5": _run("f1", "f2"),
        "q6": _run("ghost", "g1", "g2"),
    }
    full = {
        "q1": {"d3": 2, "d5": 3, "d7": 2, "d11": 3, "d2": 0, "d9": 1},  # best pooled: d5 (grade 3); d11 outside pool
        "q2": {"b": 2, "a": 2, "c": 1},  # equal grades: better rank wins -> b
        "q3": {"e1": 1, "e2": 1, "zz": 3},  # nothing >= 2 in the pool -> dropped
        "q4": {"h1": 3},  # not in the run
        "q6": {"ghost": 3, "g2": 2},  # ghost is not in the corpus -> g2
    }
    corpus = {f"d{i}" for i in range(1, 13)} | {
        "a",
        "b",
        "c",
        "x",
        "e1",
        "e2",
        "e3",
        "zz",
        "f1",
        "f2",
        "g1",
        "g2",
        "h1",
    }
    return full, run, corpus


def test_pooled_labels_follow_protocol(synthetic):
    full, run, corpus = synthetic
    pooled, report = simulate_pooled_labels(full, run, pool_depth=10, min_grade=2, doc_ids=corpus)
    assert pooled == {"q1": {"d5": 3}, "q2": {"b": 2}, "q6": {"g2": 2}}
    assert all(len(docs) == 1 for docs in pooled.values())  # exactly one labelled positive
    r = report.as_dict()
    assert r["queries_total"] == 6  # run's 5 queries, then q4 from the qrels
    assert r["queries_labelled"] == 3
    assert r["queries_without_pooled_positive"] == 1 and r["examples"]["without_pooled_positive"] == ["q3"]
    assert r["queries_missing_from_run"] == 1 and r["examples"]["missing_from_run"] == ["q4"]
    assert r["queries_without_qrels"] == 1 and r["examples"]["without_qrels"] == ["q5"]
    total = sum(
        r[k]
        for k in (
            "queries_labelled",
            "queries_excluded",
            "queries_without_pooled_positive",
            "queries_without_qrels",
            "queries_missing_from_run",
        )
    )
    assert total == r["queries_total"]
    assert r["pooled_docs_unknown_to_corpus"] == 1  # ghost
    assert r["full_positives_missing_from_corpus"] == 1  # ghost, graded 3
    assert r["queries_with_short_pool"] == 3  # q2, q3, q6 have fewer than 10 run docs (q5 stops at its qrels)
    assert r["positive_grades"] == {"3": 1, "2": 2}
    assert r["positive_rank_mean"] == pytest.approx((5 + 1 + 2) / 3)  # g2 is rank 2 once ghost is skipped
    # q1: d3, d5, d7 in the pool; q2: a, b; q6: g2
    assert r["relevant_in_pool_mean"] == pytest.approx((3 + 2 + 1) / 3)
    # q1 has 5 docs graded >= 1 (d3 d5 d7 d11 d9), q2 3, q6 2: one labelled each
    assert r["relevant_unlabelled_share"] == pytest.approx((4 / 5 + 2 / 3 + 1 / 2) / 3)


def test_pool_depth_and_min_grade_change_the_labels(synthetic):
    full, run, _ = synthetic
    pooled, _ = simulate_pooled_labels(full, run, pool_depth=4)
    assert pooled["q1"] == {"d3": 2}  # d5 is rank 5: outside a top-4 pool
    pooled, report = simulate_pooled_labels(full, run, pool_depth=12, min_grade=1, queries=["q1", "q3"])
    assert pooled == {"q1": {"d5": 3}, "q3": {"e1": 1}}
    assert report.queries_total == 2
    # without a corpus, the ghost doc may be the positive
    pooled, _ = simulate_pooled_labels(full, run, queries=["q6"])
    assert pooled == {"q6": {"ghost": 3}}
    _, report = simulate_pooled_labels(full, run, exclude=["q1"])
    assert report.queries_excluded == 1 and report.queries_labelled == 2


def test_pooled_labels_bad_arguments(synthetic):
    full, run, _ = synthetic
    with pytest.raises(ValueError, match="pool_depth"):
        simulate_pooled_labels(full, run, pool_depth=0)
    with pytest.raises(ValueError, match="min_grade"):
        simulate_pooled_labels(full, run, min_grade=0)


def test_pool_labels_cli_writes_standard_qrels(synthetic, tmp_path, capsys):
    full, run, _ = synthetic
    write_qrels(tmp_path / "full.qrels", full)
    write_run(tmp_path / "bm25.trec", run, tag="bm25")
    out = tmp_path / "out" / "pooled.qrels"
    assert (
        pooled_labels_main(
            ["--qrels", str(tmp_path / "full.qrels"), "--run", str(tmp_path / "bm25.trec"), "--output", str(out)]
        )
        == 0
    )
    assert read_qrels(out) == {"q1": {"d5": 3}, "q2": {"b": 2}, "q6": {"ghost": 3}}
    report = json.loads((tmp_path / "out" / "pooled.qrels.report.json").read_text())
    assert report["queries_labelled"] == 3 and report["pool_depth"] == 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pooled.qrels", "pooled.qrels.report.json"]
    assert "3/6 queries labelled" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pooled_labels_main(["--output", str(out)])  # neither qrels nor a collection


def test_fuse_runs_rrf_and_combsum():
    r1 = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    r2 = {"q": {"c": 0.9, "a": 0.5}, "q2": {"z": 1.0}}
    fused = fuse_runs([r1, r2], k=60)
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61}
    assert fused["q"] == pytest.approx(expected)
    assert list(fused["q"]) == ["a", "c", "b"]
    assert fused["q2"] == pytest.approx({"z": 1 / 61})
    assert list(fuse_runs([r1, r2], depth=1)["q"]) == ["a"]
    weighted = fuse_runs([r1, r2], weights=[0.0, 1.0])
    assert weighted["q"]["b"] == 0.0
    comb = fuse_runs([r1, r2], method="combsum")
    assert comb["q"] == pytest.approx({"a": 1.0 + 0.0, "b": 0.5, "c": 0.0 + 1.0})
    with pytest.raises(ValueError, match="weights"):
        fuse_runs([r1, r2], weights=[1.0])
    with pytest.raises(ValueError, match="method"):
        fuse_runs([r1], method="borda")


def test_false_negative_rate_counts_and_formats(synthetic):
    full, run, corpus = synthetic
    pooled, _ = simulate_pooled_labels(full, run, doc_ids=corpus)
    queries = {q: f"text {q}" for q in run}
    groups, group_report = build_training_groups(
        queries, pooled, run, num_negatives=3, rank_window=(1, 10), doc_ids=corpus, seed=1
    )
    # q1 has 9 candidates (d5 removed); q2 has 3; q6 has 1 (ghost unknown, g2 labelled) -> with replacement;
    # q3 and q5 have no pooled positive.
    assert {g.qid for g in groups} == {"q1", "q2", "q6"}
    assert group_report.queries_sampled_with_replacement == 1  # fewer than K candidates: counted
    assert group_report.run_docids_unknown_to_corpus == 1
    assert group_report.queries_without_positive == 2
    # independent count of the expected false negatives
    negatives = [(g.qid, d) for g in groups for d in g.negative_docids]
    fn1 = sum(1 for q, d in negatives if full.get(q, {}).get(d, 0) >= 1)
    fn2 = sum(1 for q, d in negatives if full.get(q, {}).get(d, 0) >= 2)
    rep1 = false_negative_rate(groups, full, min_grade=1)
    rep2 = false_negative_rate(negatives, full, min_grade=2)
    assert rep1.negatives == rep2.negatives == 9
    assert rep1.false_negatives == fn1 and rep2.false_negatives == fn2
    assert rep1.rate == pytest.approx(fn1 / 9) and rep2.rate == pytest.approx(fn2 / 9)
    hand = false_negative_rate({"q1": ["d3", "d7", "d1", "d9"], "nope": ["x"]}, full, min_grade=2)
    assert (hand.negatives, hand.false_negatives, hand.negatives_unjudged_queries) == (4, 2, 1)
    assert hand.rate == 0.5
    with pytest.raises(TypeError, match=r"negatives\[0\]"):
        false_negative_rate(["d1"], full)
    assert false_negative_rate([TrainingGroup("q1", "d5", ("d3", "d3"))], full).false_negatives == 2


@pytest.mark.numerics
def test_dense_run_matches_bi_encoder_scores():
    from rankface.models.bi_encoder import BiEncoder

    torch.manual_seed(0)
    model = BertModel(tiny_bert_config(), add_pooling_layer=False)
    encoder = BiEncoder(model.eval(), tiny_tokenizer(), max_length=16)
    corpus = {f"doc{i}": " ".join("abcdefghij"[(i + j) % 10] for j in range(i % 4 + 1)) for i in range(8)}
    queries = {"q1": "a b", "q2": "j"}
    run = dense_run(encoder, queries, corpus, k=3, precision="fp32")
    assert set(run) == {"q1", "q2"} and all(len(docs) == 3 for docs in run.values())
    for qid, text in queries.items():
        scores = dict(zip(corpus, encoder.predict([(text, corpus[d]) for d in corpus], precision="fp32")))
        # The run holds the top 3 by cosine, best first. Its scores come from other (differently padded) batches, so
        # they agree to float noise (tests/numerics.py); these texts score well apart, so the order is the model's.
        assert_well_separated(scores.values(), top=3)
        want = sorted(scores, key=scores.get, reverse=True)[:3]
        assert list(run[qid]) == want
        np.testing.assert_allclose([run[qid][d] for d in want], [scores[d] for d in want], **ACROSS_PATHS)
    with pytest.raises(ValueError, match="corpus"):
        dense_run(encoder, queries, {}, k=3)


@pytest.mark.slow
@pytest.mark.shared_data
def test_pool_labels_on_nfcorpus(shared, tmp_path):
    """R1's pooled labels from BM25 top-10 over the real NFCorpus train split (starts the JVM: ~20 s)."""
    out = tmp_path / "pooled.qrels"
    argv = [
        "--collection",
        str(shared / "data" / "ir" / "nfcorpus"),
        "--split",
        "train",
        "--drop-duplicates-of",
        "test",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output",
        str(out),
    ]
    assert pooled_labels_main(argv) == 0
    pooled = read_qrels(out)
    report = json.loads(out.with_name("pooled.qrels.report.json").read_text())
    assert all(len(docs) == 1 and min(docs.values()) >= 2 for docs in pooled.values())
    assert len(pooled) == report["queries_labelled"] > 1000
    assert report["queries_excluded"] >= 1  # a few train queries duplicate test queries
    parts = (
        "queries_labelled",
        "queries_excluded",
        "queries_without_pooled_positive",
        "queries_without_qrels",
        "queries_missing_from_run",
    )
    assert sum(report[k] for k in parts) == report["queries_total"] == 2569
    assert 1.0 <= report["positive_rank_mean"] <= 10.0
