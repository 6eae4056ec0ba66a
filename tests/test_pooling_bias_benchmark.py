"""Benchmark R1 (benchmarks/pooling_bias.py): settings, the results store, FN-rate rows and the report/RESULT line.

The training itself is `rankface.training` (tested in test_training.py); here the benchmark's own bookkeeping is
checked on synthetic records and a synthetic collection, against independently computed values.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import pytest
from benchmark_modules import load_benchmark
from scipy import stats

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "pooling_bias.py"
# benchmarks.md R1, in its order
RESULT_KEYS = [
    "bm25_ndcg10", "dense_ndcg10", "plain_bm25_ndcg10", "plain_strong_ndcg10", "cet_strong_ndcg10", "cet_bm25_ndcg10",
    "oracle_ndcg10", "p_cet_vs_plain_strong", "p_plain_vs_dense", "fn_rate_bm25", "fn_rate_strong",
    "clean_strong_ndcg10", "ceiling_strong", "share_cet_strong", "share_cet_indep_strong", "p_share_cet",
    "p_share_cet_indep", "steps", "training", "encoder", "seeds", "mode",
]


@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark(BENCHMARK, "pooling_bias_benchmark")


def test_quick_and_full_settings(bench, tmp_path):
    quick = bench.parse_args(["--quick", "--results-dir", str(tmp_path)])
    assert (quick.num_layers, quick.max_length, quick.num_negatives, quick.seed_list) == (2, 128, 3, [0])
    assert quick.max_train_queries is not None and quick.mode == "quick"
    full = bench.parse_args([])
    # R1 at >= 20x the old budget (800 steps x 16 queries), in the cached-corpus mode, 5 seeds, T and K sweeps.
    assert full.seed_list == [0, 1, 2, 3, 4] and full.num_layers is None and full.mode == "full-query-side"
    assert (full.steps, full.batch_size, full.training_mode, full.freeze_embeddings) == (800, 16, "query_side", True)
    assert full.out == bench.RESULTS / "full-query-side"
    assert full.sweep_list == [1.0, 2.0, 5.0, 10.0, 20.0] and full.k_sweep_list == [3] and full.num_negatives == 7
    cross = bench.parse_args(["--encoder", "cross"])
    assert cross.mode == "full-cross" and cross.out.name == "full-cross" and cross.training_mode == "full"
    assert bench.parse_args(["--training-mode", "full"]).mode == "full"
    judged = bench.parse_args(["--pool-labels", "judged"])
    assert judged.mode == "full-query-side-pool-judged"
    assert bench.training_settings(judged)["pool_labels"] == "judged"
    assert "pool_labels" not in bench.training_settings(full)  # R1's saved fingerprints stay valid


def test_judged_pool_labels_keep_every_pooled_grade(bench):
    full = {"q1": {"a": 2, "b": 1, "c": 2, "far": 2, "zero": 0}, "q2": {"x": 1}}
    pool_run = {"q1": {"a": 9.0, "b": 8.0, "zero": 7.0, "c": 6.0, "far": 1.0, "n": 5.0}, "q2": {"y": 3.0}}
    labels = bench.judged_pool_labels(full, pool_run, ["q1", "q2"], depth=4)
    assert labels == {"q1": {"a": 2, "b": 1, "c": 2}, "q2": {}}  # "far" is relevant but outside the pool


def test_store_skips_saved_and_refuses_other_settings(bench, tmp_path):
    store = bench.Store(tmp_path, {"steps": 10})
    assert store.load("plain/bm25-neg", 0) is None
    store.save("plain/bm25-neg", 0, {"test": {"x": 1}})
    assert store.path("plain/bm25-neg", 0).name == "plain__bm25-neg__seed0.json"
    assert store.load("plain/bm25-neg", 0)["test"] == {"x": 1}
    with pytest.raises(SystemExit, match="other settings"):
        bench.Store(tmp_path, {"steps": 20}).load("plain/bm25-neg", 0)


def _record(rng: random.Random, qids: list[str], shift: float) -> dict:
    split = {}
    for name in ("test", "dev"):
        per_query = {m: {q: min(1.0, max(0.0, rng.random() * 0.6 + shift)) for q in qids} for m in ("nDCG@10", "RR@10", "R@100")}
        aggregate = {m: float(np.mean(list(v.values()))) for m, v in per_query.items()}
        split[name] = {"aggregate": aggregate, "per_query": per_query, "num_queries": len(qids), "missing_queries": []}
    return split


def test_report_means_ttest_and_result_keys(bench, tmp_path):
    # --seeds 0: the report still covers every saved seed (0 and 1).
    args = bench.parse_args(["--results-dir", str(tmp_path), "--seeds", "0", "--sweep", "", "--k-sweep", ""])
    store = bench.Store(tmp_path, bench.training_settings(args))
    rng = random.Random(3)
    qids = [f"q{i}" for i in range(40)]
    records = {}
    for system in bench.BASELINES:
        records[(system, 0)] = store.save(system, 0, _record(rng, qids, 0.1))
    for i, system in enumerate((*bench.TRAINED, "clean/strong-neg", "cet-indep/strong-neg")):
        for seed in (0, 1):
            records[(system, seed)] = store.save(system, seed, {**_record(rng, qids, 0.05 * i), "train": {}})
    diagnostics = {"false_negative_rate": {"grade>=1": {"rate": 0.31}},
                   "propensity": {"auc_false_negatives": 0.7, "mean_false_negatives": 0.99, "mean_other_negatives": 0.96},
                   "relevance_loss_w_f_by_label": {"false_negatives": 2.9, "other_negatives": 2.6}}
    store.save("cet/strong-neg", 1, {**records[("cet/strong-neg", 1)], "cet_diagnostics": diagnostics})
    (tmp_path / "data").mkdir()
    bench.write_json(tmp_path / "data" / "negative_sources.json", {
        "fingerprint": store.hash,
        "rows": [
            {"source": "bm25", "window": [1, 50], "ndcg10_train_full_qrels": 0.3, "fn_rate_grade1": 0.2,
             "fn_rate_grade2": 0.1, "fn_rate_grade1_whole_window": 0.2},
            {"source": "rrf", "window": [1, 20], "ndcg10_train_full_qrels": 0.4, "fn_rate_grade1": 0.3,
             "fn_rate_grade2": 0.2, "fn_rate_grade1_whole_window": 0.3, "fn_ratio_to_bm25": 1.5,
             "meets_criteria": True, "run_file": "x"},
        ],
        "chosen": {"name": "rrf", "window": 20, "run_file": "x", "criteria_met": True, "why": "test"},
        "retriever": {"test_ndcg10": 0.33},
    })
    text = bench.report(args, store)
    result = text.strip().splitlines()[-1]
    assert result.startswith("RESULT ")
    pairs = dict(kv.split("=") for kv in result.split()[1:])
    assert list(pairs) == RESULT_KEYS
    # Independent reference: mean over seeds of the per-seed means; t-test on per-query means over seeds.
    plain = [records[("plain/strong-neg", s)]["test"]["per_query"]["nDCG@10"] for s in (0, 1)]
    cet = [records[("cet/strong-neg", s)]["test"]["per_query"]["nDCG@10"] for s in (0, 1)]
    expected_mean = np.mean([np.mean(list(p.values())) for p in plain])
    assert float(pairs["plain_strong_ndcg10"]) == pytest.approx(expected_mean, abs=1e-4)
    a = [np.mean([c[q] for c in cet]) for q in qids]
    b = [np.mean([p[q] for p in plain]) for q in qids]
    assert float(pairs["p_cet_vs_plain_strong"]) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-2)
    assert pairs["fn_rate_bm25"] == "0.2000" and pairs["fn_rate_strong"] == "0.3000"
    assert pairs["seeds"] == "2" and pairs["encoder"] == "bi" and pairs["mode"] == "full-query-side"
    assert pairs["steps"] == "800" and pairs["training"] == "query_side"
    # The learning gate: plain/bm25-neg against the zero-shot encoder, per-query means over the common seeds.
    dense = records[("dense", 0)]["test"]["per_query"]["nDCG@10"]
    plain_bm25 = [records[("plain/bm25-neg", s)]["test"]["per_query"]["nDCG@10"] for s in (0, 1)]
    gate = stats.ttest_rel([np.mean([p[q] for p in plain_bm25]) for q in qids], [dense[q] for q in qids]).pvalue
    assert float(pairs["p_plain_vs_dense"]) == pytest.approx(gate, rel=1e-2)
    assert "learning gate" in text
    assert "| cet/strong-neg | 1 | 0.310 | 0.700 | 0.990 | 0.960 |  |  |  | 2.900 | 2.600 |" in text  # seed 0 has none
    # The ceiling and the shares, against an independent computation over both seeds.
    def mean_of(system):
        return np.mean([np.mean(list(records[(system, s)]["test"]["per_query"]["nDCG@10"].values())) for s in (0, 1)])

    ceiling = mean_of("clean/strong-neg") - mean_of("plain/strong-neg")
    assert float(pairs["clean_strong_ndcg10"]) == pytest.approx(mean_of("clean/strong-neg"), abs=1e-4)
    assert float(pairs["ceiling_strong"]) == pytest.approx(ceiling, abs=1e-4)
    for name, system in (("cet", "cet/strong-neg"), ("cet_indep", "cet-indep/strong-neg")):
        share = (mean_of(system) - mean_of("plain/strong-neg")) / ceiling
        assert float(pairs[f"share_{name}_strong"]) == pytest.approx(share, abs=1e-3)
        assert 0 < float(pairs[f"p_share_{name}"]) <= 1
    assert "| clean/strong-neg - plain/strong-neg (the ceiling A) | [0, 1] |" in text
    assert "| 1-50 |  | 0.200 (0.200) |" in text  # the windows table: BM25's 1-50, no dense-ft row saved here


def test_report_with_nothing_saved_prints_nan(bench, tmp_path):
    args = bench.parse_args(["--quick", "--results-dir", str(tmp_path)])
    text = bench.report(args, bench.Store(tmp_path, bench.training_settings(args)))
    pairs = dict(kv.split("=") for kv in text.strip().splitlines()[-1].split()[1:])
    assert list(pairs) == RESULT_KEYS
    assert pairs["cet_strong_ndcg10"] == "nan" and pairs["seeds"] == "0"


def test_source_row_counts_false_negatives(bench, tmp_path):
    from rankface.retrieval.trec import write_qrels

    docs = {f"d{i}": f"text {i}" for i in range(8)}
    pooled_path = tmp_path / "pooled.txt"
    write_qrels(pooled_path, {"q1": {"d0": 2}, "q2": {"d4": 2}})
    full = {"q1": {"d0": 2, "d1": 1, "d2": 2}, "q2": {"d4": 2, "d7": 1}}
    run = {
        "q1": {f"d{i}": 10.0 - i for i in range(6)},  # d0 (labelled) d1 d2 d3 d4 d5
        "q2": {"d4": 5.0, "d5": 4.0, "d6": 3.0, "d7": 2.0, "d0": 1.0},
    }
    args = argparse.Namespace(num_negatives=3)
    ctx = bench.Context(args=args, collection=None, docs=docs, queries={"train": {"q1": "a", "q2": "b"}},
                        full_qrels={"train": full}, candidates={}, pooled_qrels_path=pooled_path,
                        oracle_qrels_path=tmp_path / "o.txt", runs={}, train_qids=["q1", "q2"],
                        all_train_qids=["q1", "q2"], bm25_train={})
    row = bench.source_row(ctx, "x", run, window=4)
    # Window 1-4 minus the labelled positive: q1 {d1, d2, d3} (2 relevant, both grade>=1, one grade>=2);
    # q2 {d5, d6, d7} (d7 grade 1). K = 3 = every candidate, so sampled == whole window.
    assert row["fn_rate_grade1"] == pytest.approx(3 / 6)
    assert row["fn_rate_grade2"] == pytest.approx(1 / 6)
    assert row["fn_rate_grade1_whole_window"] == pytest.approx(3 / 6)
    assert row["sampled_negatives"] == 6 and row["queries_used"] == 2
    # nDCG@10 of the run against the full qrels, by hand (linear gains, log2 discounts).
    def ndcg(ranking, judged):
        dcg = sum(judged.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranking[:10]))
        ideal = sorted(judged.values(), reverse=True)
        return dcg / sum(g / np.log2(i + 2) for i, g in enumerate(ideal[:10]))

    expected = np.mean([ndcg(list(run[q]), full[q]) for q in ("q1", "q2")])
    assert row["ndcg10_train_full_qrels"] == pytest.approx(expected, abs=1e-6)
    assert row["ndcg10_pooled_queries"] == pytest.approx(expected, abs=1e-6)


def test_top_orders_by_score_then_docid(bench):
    # rankface's one tie rule (rankface.utils.ties): equal scores go to the larger docid first, as in trec_eval.
    assert list(bench.top({"b": 1.0, "a": 1.0, "c": 2.0}, 2)) == ["c", "b"]
    assert bench.top(None, 3) == {}


def test_mlp_selection_diagnostics_read_the_pooling_run(bench, tmp_path):
    """cet-mlp's diagnostics score each mined negative with the saved MLP on the (rank, score) of the pooling run;
    a document that run lacks sits just below its last entry."""
    import math

    import torch

    from rankface.models.cet import RankFeatureSelector

    torch.manual_seed(0)
    selector = RankFeatureSelector()
    selector.fit_normalization(torch.tensor([[math.log1p(r), 10.0 - r] for r in range(1, 4)]))
    selector.save_pretrained(tmp_path / "selection_model")
    pool = tmp_path / "pool.trec"
    pool.write_text("q1 Q0 a 1 9.0 bm25\nq1 Q0 b 2 8.0 bm25\nq1 Q0 c 3 7.0 bm25\n")
    targs = argparse.Namespace(cet_selection_run=str(pool), negatives_run=str(tmp_path / "unused.trec"))
    logits = bench.mlp_selection_logits(tmp_path / "selection_model", targs, [("q1", "b"), ("q1", "z")])
    expected = selector.eval()(torch.tensor([[[math.log1p(2), 8.0], [math.log1p(4), 7.0]]]))[0]
    np.testing.assert_allclose(logits, expected.detach().numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def pool_split():
    yield from load_benchmark(BENCHMARK.parent / "pool_false_negatives.py", "pool_false_negatives")


def test_pool_false_negative_split_counts_by_hand(pool_split):
    strong = {"q": {"pos": 9.0, "a": 8.0, "b": 7.0, "c": 6.0}}
    pool_run = {"q": {"pos": 5.0, "a": 4.0, "x": 3.0}}
    counts = pool_split.split_counts(strong, pool_run, pooled={"q": {"pos": 2}},
                                     full={"q": {"pos": 2, "a": 1, "c": 2}}, window=4, pool_depth=3)
    # a: relevant, pooled; b: not relevant, outside; c: relevant, outside; the labelled positive is skipped
    assert counts == {(True, True): 1, (False, False): 1, (True, False): 1, (False, True): 0}


@pytest.fixture(scope="module")
def ceiling():
    yield from load_benchmark(BENCHMARK.parent / "_r1_ceiling.py", "r1_ceiling_benchmark")


def test_clean_run_replaces_each_false_negative_in_place_and_keeps_plain_s_groups(ceiling):
    """A hand-made query: ranks a..h, window 5. Labelled positive a; the full qrels grade b and d relevant (false
    negatives), and f (below the window) too. Plain samples from [b, c, d, e]; clean from [g, c, h, e]: b -> g
    (the first non-relevant doc below the window; f is relevant), d -> h."""
    from rankface.data.ir import build_training_groups

    run = {"q1": {d: 10.0 - i for i, d in enumerate("abcdefgh")}, "q2": {"x": 2.0, "y": 1.0}}
    labelled = {"q1": {"a": 2}, "q2": {"x": 2}}
    full = {"q1": {"a": 2, "b": 1, "d": 2, "f": 1}, "q2": {"x": 2, "y": 1}}
    cleaned, counts = ceiling.clean_run(run, 5, labelled, full)
    assert list(cleaned["q1"]) == ["g", "c", "h", "e"]
    assert cleaned["q1"]["g"] > cleaned["q1"]["c"] > cleaned["q1"]["h"] > cleaned["q1"]["e"]  # the order is kept
    # q2's only candidate y is relevant and nothing lies below it: dropped, and counted.
    assert "q2" not in cleaned
    assert counts == {"queries": 1, "false_negatives_replaced": 2, "false_negatives_without_replacement": 1,
                      "candidates": 4}
    # With the same seed, training draws plain's group with the false negatives swapped (same positions).
    queries = {"q1": "text"}
    for seed in range(5):
        plain, _ = build_training_groups(queries, labelled, run, num_negatives=3, rank_window=(1, 5), positives="top",
                                         seed=seed)
        clean, _ = build_training_groups(queries, labelled, cleaned, num_negatives=3, rank_window=(1, 5),
                                         positives="top", seed=seed)
        swap = {"b": "g", "d": "h"}
        assert clean[0].negative_docids == tuple(swap.get(d, d) for d in plain[0].negative_docids)
        assert clean[0].positive_docid == plain[0].positive_docid == "a"


def test_clean_run_takes_replacements_from_a_deeper_ranking(ceiling):
    window_run = {"q": {"p": 3.0, "fn": 2.0, "n": 1.0}}
    deeper = {"q": {"p": 9.0, "fn": 8.0, "n": 7.0, "rel": 6.0, "new": 5.0}}
    cleaned, _ = ceiling.clean_run(window_run, 3, {"q": {"p": 2}}, {"q": {"p": 2, "fn": 1, "rel": 2}}, deeper=deeper)
    assert list(cleaned["q"]) == ["new", "n"]


def test_share_of_ceiling_by_hand(ceiling):
    # 2 seeds x 3 queries; clean is plain + 0.1 everywhere, the system plain + 0.04: A = 0.1, share 0.4 exactly in
    # every bootstrap draw (the differences are constant), so the interval is a point and p is its floor.
    plain = np.array([[0.2, 0.4, 0.6], [0.3, 0.5, 0.1]])
    out = ceiling.share_of_ceiling(plain, plain + 0.1, plain + 0.04, resamples=200)
    assert out["ceiling"] == pytest.approx(0.1) and out["share"] == pytest.approx(0.4)
    assert out["share_ci"] == pytest.approx([0.4, 0.4]) and out["ceiling_ci"] == pytest.approx([0.1, 0.1])
    assert out["p_share"] == pytest.approx(1 / 200) and out["p_ceiling"] == pytest.approx(1 / 200)
    # A system no better than plain on average, with noise: share near 0, p well above 0.05.
    rng = np.random.default_rng(0)
    noisy = plain + rng.normal(0, 0.05, plain.shape)
    noisy -= noisy.mean() - plain.mean()
    out = ceiling.share_of_ceiling(plain, plain + 0.1, noisy, resamples=500)
    assert out["share"] == pytest.approx(0.0, abs=1e-9) and out["p_share"] > 0.2
    with pytest.raises(ValueError, match="one shape"):
        ceiling.share_of_ceiling(plain, plain[:1], None)


def test_oracle_propensity_rows_and_judged_pools_only(bench, tmp_path):
    args = bench.parse_args(["--results-dir", str(tmp_path), "--pool-labels", "judged", "--seeds", "0"])
    store = bench.Store(tmp_path, bench.training_settings(args))
    rng = random.Random(5)
    qids = [f"q{i}" for i in range(30)]
    plain = store.save("plain/strong-neg", 0, {**_record(rng, qids, 0.1), "train": {}})
    diag = {"relevance_loss_w_f_by_label": {"false_negatives": 1.5, "other_negatives": 4.0}}
    oracle = store.save("cet-oracle-propensity-p0.9/strong-neg", 0,
                        {**_record(rng, qids, 0.1), "train": {}, "cet_diagnostics": diag})
    lines = "\n".join(bench.oracle_propensity_lines(store, [0]))
    delta = oracle["test"]["aggregate"]["nDCG@10"] - plain["test"]["aggregate"]["nDCG@10"]
    assert f"| 0.9 | [0] | 10.00 / 1.11 | 1.50 / 4.00 | {oracle['test']['aggregate']['nDCG@10']:.4f} | {delta:+.4f}" in lines
    one = bench.parse_args(["--results-dir", str(tmp_path / "one"), "--seeds", "0"])
    ctx = argparse.Namespace(args=one)
    with pytest.raises(SystemExit, match="pool-labels judged"):
        bench.run_trained(ctx, bench.Store(one.out, bench.training_settings(one)), "cet-oracle-propensity-p0.9/strong-neg", 0)
