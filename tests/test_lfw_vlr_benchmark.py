"""Benchmark F1 (benchmarks/lfw_vlr.py): its own logic: the run plan, rounded pair scores, per-fold metrics, the
significance tests (paired t over folds against scipy's independent implementation, TAR bootstrap), and the shared
plotting helper's fixed colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_modules import load_benchmark

from rankface.data.faces import LFWPair
from rankface.evaluation.verification import cosine_pair_scores, tar_at_far

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark(BENCHMARKS / "lfw_vlr.py", "lfw_vlr_benchmark")


def test_issue11_plan_runs_the_headline_and_f2_models_first(bench):
    plan = bench.make_plan(bench.ISSUE11_PLAN, None, None)
    assert plan[:5] == [("pretrained", 0), ("arcface", 0), ("arcface+unpg", 0), ("ri", 0), ("magface", 0)]
    seeds = {s: sorted(seed for name, seed in plan if name == s) for s in dict.fromkeys(n for n, _ in plan)}
    assert seeds == {"pretrained": [0], "arcface": [0, 1, 2], "arcface+unpg": [0, 1, 2], "ri": [0, 1, 2],
                     "magface": [0], "cosface": [0], "cosface+unpg": [0], "ri+reg": [0], "ri+reg+id": [0]}
    assert len(plan) == len(set(plan))
    # a part of the plan keeps its order; --seeds gives every named system those seeds, seed by seed
    assert bench.make_plan(bench.ISSUE11_PLAN, ["ri", "arcface"], None) == [
        ("arcface", 0), ("ri", 0), ("arcface", 1), ("arcface", 2), ("ri", 1), ("ri", 2)]
    assert bench.make_plan(bench.ISSUE11_PLAN, ["pretrained", "cosface"], [3, 4]) == [
        ("pretrained", 3), ("cosface", 3), ("cosface", 4)]
    assert bench.make_plan(bench.ISSUE11_PLAN, ["ri-headlr"], None) == [("ri-headlr", 0)]  # outside the plan


def test_issue21_plan_order_halves_budgets_and_the_best_k_from_validation(bench, tmp_path):
    """Issue 21 item 5: RI iterations (150 steps, half A) first, then the fixed target and its feature-map regressor,
    the k sweep on half A, the feature-map RI over 3 seeds, the deciding pair with the best k on the validation pairs
    (seed by seed; F2's MagFace model after seed 0), arcface seeds 1-2; a rerun continues it."""
    base = bench.resolve_plan(bench.FULL_PLAN, tmp_path / "full")  # nothing saved: the deciding UNPG system waits
    plan = bench.make_plan([e[:2] for e in base], None, None)
    assert plan[:4] == [("pretrained", 0), ("ri-log-150", 0), ("ri-fix-150", 0), ("ri-fix", 0)]
    assert plan.index(("arcface+unpg-rh-nofilter", 0)) < plan.index(("ri-fix-fmap", 0)) < plan.index(("ri-fix-fmap", 1))
    assert len(plan) == len(set(plan)) and not any(s.startswith("best:") for s, _ in plan)
    halves = bench.plan_halves(base)
    assert halves[("ri-fix-150", 0)] == ["A"] and halves[("arcface+unpg-rh-k3", 0)] == ["A"]
    assert halves[("arcface-rh", 0)] == ["A", "B"] and halves[("ri-fix-fmap", 2)] == ["A", "B"]
    args = bench.parse_args([])
    assert bench.system_steps(args, "ri-fix-150") == 150 and bench.system_steps(args, "ri-fix") == 600
    assert bench.system_steps(bench.parse_args(["--steps", "40"]), "ri-fix-150") == 40
    assert "--ri_log_steps" in bench.system_overrides("ri-fix-150")
    flags = bench.training_flags(args, "ri-fix-150", 0, "A", Path("out"))
    assert flags[flags.index("--max_steps") + 1] == "150"
    # the sweep saved (validation curves only): the best mean of LR-LR 16 and 8 at the last point is chosen
    (tmp_path / "full").mkdir()
    for k, system in enumerate(bench.UNPG_SWEEP):
        last = {"lr-lr@16": 90.0 + (k == 2), "lr-lr@8": 80.0}
        record = {"train": {"curve": [[0, {"lr-lr@16": 99.0, "lr-lr@8": 99.0}], [600, last]]}}
        (tmp_path / "full" / f"{system.replace('+', '_')}-seed0-halfA.json").write_text(json.dumps(record))
    best, scores = bench.best_unpg_system(tmp_path / "full")
    assert best == bench.UNPG_SWEEP[2] and len(scores) == 4
    base = bench.resolve_plan(bench.FULL_PLAN, tmp_path / "full")
    plan = bench.make_plan([e[:2] for e in base], None, None)
    assert (best, 2) in plan and plan.index((best, 0)) > plan.index(("arcface-rh", 0))
    deciding = [run for run in plan if run[0] in ("arcface-rh", best) and run[1] > 0]
    assert deciding == [("arcface-rh", 1), (best, 1), ("arcface-rh", 2), (best, 2)]  # seed by seed: whole pairs
    assert plan.index((best, 0)) < plan.index(("magface", 1)) < plan.index(("arcface-rh", 1))  # F2's MagFace model
    assert plan.index((best, 2)) < plan.index(("arcface", 1))
    assert bench.plan_halves(base)[(best, 0)] == ["A", "B"]  # seed 0 of the deciding pair adds half B


def test_ri_systems_keep_the_training_defaults_their_records_were_made_with(bench):
    """Issue 21 made the fixed RI the training default; the systems saved before keep the old one through flags that
    reach training but not the records' identity, so the saved records stay current and mean what they did."""
    from rankface.training.face_arguments import parse_face_training_args

    args = bench.parse_args([])

    def resolved(system):
        settings = parse_face_training_args(bench.training_flags(args, system, 0, "A", Path("out")))
        return settings.ri_target_prototypes, settings.ri_form, settings.ri_quality_input

    assert resolved("ri") == resolved("ri-log-150") == ("classifier", "product", "embedding")
    assert resolved("ri-fix") == resolved("ri-fix-150") == ("initial", "product_clamped", "embedding")
    assert resolved("ri-fix-fmap") == ("initial", "product_clamped", "feature_map")
    assert "overrides" not in bench.run_settings(args, "ri", 0, "A")  # the identity of ri's saved records
    assert bench.run_settings(args, "ri-fix", 0, "A")["overrides"] == bench.system_overrides("ri-fix")


def test_ri_systems_share_the_ri_recipe_and_differ_only_in_their_switches(bench):
    assert {bench.SYSTEMS[s] for s in bench.RI_FAMILY} == {"lfw_vlr_ri.yaml"}
    assert bench.system_overrides("ri") == [] and "--ri_beta" in bench.system_overrides("ri+reg")
    assert (bench.CONFIGS / bench.SYSTEMS["magface"]).is_file()
    args = bench.parse_args(["--quick"])
    flags = bench.training_flags(args, "ri+reg+id", 1, "B", Path("out"))
    assert flags[flags.index("--heldout_folds") + 1:][:5] == ["5", "6", "7", "8", "9"]
    assert flags[flags.index("--eval_sets") + 1] == "validation"


def _pairs(folds: int = 2, per_fold: int = 20) -> list[LFWPair]:
    return [LFWPair(f, f"a{f}_{i}", f"b{f}_{i}", i < per_fold // 2) for f in range(folds) for i in range(per_fold)]


def test_score_half_rounds_scores_and_pairs_lr_and_hr_views(bench):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 112, 112, 3), dtype=np.uint8)
    dataset = [{"image": img} for img in images]
    projection = rng.normal(size=(112 * 112 * 3, 6))

    def embed(batch: np.ndarray) -> np.ndarray:  # a fixed random projection of the pixels: a real function of them
        return (batch.reshape(len(batch), -1).astype(np.float64) / 255.0) @ projection

    pair_index = np.array([[0, 1], [2, 3], [4, 0]])
    scores, _ = bench.score_half(embed, dataset, pair_index, [112, 16])
    assert set(scores) == {"lr-lr@112", "lr-lr@16", "hr-lr@16"}
    from rankface.data.faces import degrade_exact

    low = np.stack([degrade_exact(img, 16) for img in images])
    expected = cosine_pair_scores(embed(images[pair_index[:, 0]]), embed(low[pair_index[:, 1]]))
    np.testing.assert_allclose(scores["hr-lr@16"], expected, atol=0.5e-5 + 1e-7)  # rounded to 5 decimals
    assert all(round(v, 5) == v for v in scores["lr-lr@16"])


def _record(scores: dict, folds: list[int], half: str) -> dict:
    return {"settings": {"half": half, "eval_folds": folds}, "scores": scores}


def test_paired_fold_test_matches_scipy_ttest_rel(bench):
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(80, 2, 10), rng.normal(79, 2, 10)
    got = bench.paired_fold_test(a, b)
    expected = stats.ttest_rel(a, b)
    assert got["t"] == pytest.approx(expected.statistic, rel=1e-9)
    assert got["p"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert got["diff"] == pytest.approx(float(np.mean(a - b)))
    same = bench.paired_fold_test(a, a)
    assert same["p"] == 1.0 and same["diff"] == 0.0


def test_tar_of_resamples_follows_tar_at_far(bench):
    rng = np.random.default_rng(1)
    genuine, impostors = rng.normal(0.6, 0.2, 300), rng.normal(0.0, 0.2, 1500)
    scores = np.r_[genuine, impostors]
    labels = np.r_[np.ones(300, bool), np.zeros(1500, bool)]
    for far in (1e-2, 1e-3):
        got = bench.tar_from_sorted_impostors(genuine[None], impostors[None], far)
        assert got.shape == (1,) and got[0] == pytest.approx(tar_at_far(scores, labels, far)[0])


def test_bootstrap_finds_a_real_tar_gain_and_none_between_equal_systems(bench):
    pairs = _pairs(folds=10, per_fold=60)
    records = {}
    for name, gain in (("base", 0.0), ("better", 0.25), ("copy", 0.0)):
        runs = []
        for half, folds in (("A", [0, 1, 2, 3, 4]), ("B", [5, 6, 7, 8, 9])):
            idx = bench.half_pairs(pairs, folds)
            same = np.array([pairs[i].same for i in idx])
            noise = np.random.default_rng(len(runs)).normal(0, 0.2, idx.size)  # shared by all systems: paired
            scores = np.where(same, 0.3 + (gain if name == "better" else 0.0), 0.0) + noise
            runs.append(_record({"lr-lr@16": scores.tolist()}, folds, half))
        records[name] = [runs]
    gain = bench.paired_bootstrap_tar(records["better"], records["base"], "lr-lr@16", 1e-2, pairs, resamples=300)
    assert gain["diff"] > 20 and gain["p"] <= 1 / 300 * 2 and gain["ci95"][0] > 0
    none = bench.paired_bootstrap_tar(records["copy"], records["base"], "lr-lr@16", 1e-2, pairs, resamples=300)
    assert none["diff"] == 0.0 and none["p"] == 1.0


def test_system_metrics_and_significance_pool_seeds_by_fold(bench):
    pairs = _pairs(folds=10, per_fold=40)

    def runs(shift: float, seed: int) -> list[dict]:
        out = []
        for half, folds in (("A", [0, 1, 2, 3, 4]), ("B", [5, 6, 7, 8, 9])):
            idx = bench.half_pairs(pairs, folds)
            same = np.array([pairs[i].same for i in idx])
            noise = np.random.default_rng([seed, len(out)]).normal(0, 0.3, idx.size)
            scores = {k: (np.where(same, 0.4 + shift, 0.0) + noise).tolist() for k in bench.ACCURACY_KEYS}
            out.append(_record(scores, folds, half))
        return out

    results = {("arcface", s): runs(0.0, s) for s in (0, 1)} | {("ri", s): runs(0.3, s) for s in (0, 1)}
    metrics = {k: bench.system_metrics(v, pairs) for k, v in results.items()}
    assert sorted(metrics[("ri", 0)]["lr-lr@16"]["fold_accuracies"]) == list(range(10))
    pooled = bench.pooled_fold_accuracies([metrics[("ri", 0)], metrics[("ri", 1)]], "lr-lr@16")
    expected = [(metrics[("ri", 0)]["lr-lr@16"]["fold_accuracies"][f]
                 + metrics[("ri", 1)]["lr-lr@16"]["fold_accuracies"][f]) / 2 for f in range(10)]
    np.testing.assert_allclose(pooled, expected)
    rows = bench.significance(results, metrics, pairs, resamples=200)
    accuracy = [r for r in rows if r["figure"] == "accuracy lr-lr@16"]
    assert len(accuracy) == 1 and accuracy[0]["claim"] == "ri vs arcface" and accuracy[0]["seeds"] == "2/2"
    assert accuracy[0]["diff"] > 0 and accuracy[0]["p"] < 0.05


def test_plots_give_each_system_one_fixed_colour(bench, tmp_path):
    import _plots

    main = ["pretrained", "arcface", "arcface+unpg", "cosface", "cosface+unpg", "magface", "ri", "ri+reg",
            "ri+reg+id"]
    assert len({_plots.colour(s) for s in main}) == len(main)
    assert _plots.colour("ri") == _plots.colour("ri")  # fixed, and the RI quality of F2 is the RI system's colour
    assert _plots.colour("magface norm") == _plots.colour("magface")
    assert _plots.colour("something new") == _plots.colour("something new")
    rows = {s: {"lr-lr": {112: 99.0, 24: 90.0, 16: 85.0, 12: 75.0, 8: 70.0},
                "hr-lr": {112: 99.0, 24: 92.0, 16: 80.0, 12: 66.0, 8: 56.0}} for s in ("arcface", "ri")}
    png = _plots.plot_accuracy_vs_resolution(rows, tmp_path / "acc.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = {"arcface": [[(0, {"lr-lr@16": 77.0, "lr-lr@8": 66.0}), (50, {"lr-lr@16": 80.0, "lr-lr@8": 70.0})]]}
    assert _plots.plot_learning_curves(curves, tmp_path / "lc.png", ["lr-lr@16", "lr-lr@8"], "t").is_file()


def test_half_pairs_takes_balanced_prefixes_of_each_fold(bench):
    pairs = _pairs(folds=3, per_fold=20)  # per fold: 10 matched, then 10 mismatched (the View-2 file order)
    idx = bench.half_pairs(pairs, [0, 2], per_fold=6)
    assert [(pairs[i].fold, pairs[i].same) for i in idx] == [(0, True)] * 3 + [(0, False)] * 3 + [
        (2, True)] * 3 + [(2, False)] * 3
    assert idx.tolist()[:6] == [0, 1, 2, 10, 11, 12]
    assert len(bench.half_pairs(pairs, [1])) == 20  # the default keeps every pair of a fold


def _low_far_embeddings(seed: int, gain: float = 0.0):
    """60 images of 20 identities at 112 / 16 / 8 px; `gain` tightens the low-resolution clusters."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(20), 3)
    centres = np.random.default_rng(99).normal(size=(20, 6))  # the same identities for every system
    noise = {112: 0.4, 16: 1.0 - gain, 8: 1.4 - gain}
    return {r: centres[labels] + rng.normal(scale=s, size=(60, 6)) for r, s in noise.items()}, labels


def test_low_far_half_scores_every_pair_like_tar_at_far_on_an_explicit_pair_list(bench):
    embeddings, labels = _low_far_embeddings(0)
    entry = bench.low_far_half(embeddings, labels, resolutions=(16, 8), resamples=50)
    assert set(entry["keys"]) == {"lr-lr@16", "hr-lr@16", "lr-lr@8", "hr-lr@8"}
    i, j = np.triu_indices(60, k=1)  # LR-LR: each unordered pair once
    scores = cosine_pair_scores(embeddings[8][i], embeddings[8][j])
    same = labels[i] == labels[j]
    got = entry["keys"]["lr-lr@8"]
    assert got["impostors"] == int((~same).sum()) and got["genuine"] == int(same.sum())
    assert got["figures"]["tar@0.001"] == pytest.approx(tar_at_far(scores, same, 1e-3)[0], abs=1e-5)
    i, j = np.nonzero(~np.eye(60, dtype=bool))  # HR-LR: ordered pairs, 112 px first
    scores = cosine_pair_scores(embeddings[112][i], embeddings[16][j])
    same = labels[i] == labels[j]
    assert entry["keys"]["hr-lr@16"]["figures"]["tar@0.001"] == pytest.approx(tar_at_far(scores, same, 1e-3)[0],
                                                                              abs=1e-5)
    assert len(entry["keys"]["lr-lr@8"]["boot"]["tar@0.0001"]) == 50


def test_low_far_metrics_average_halves_and_give_the_unpg_result_keys(bench):
    def records(gain: float, seed: int) -> list[dict]:
        out = []
        for half in ("A", "B"):
            embeddings, labels = _low_far_embeddings(seed + (half == "B"), gain)
            out.append({"settings": {"half": half},
                        "low_far": bench.low_far_half(embeddings, labels, resolutions=(16, 8), resamples=200)})
        return out

    complete = {("arcface", 0): records(0.0, 0), ("arcface+unpg", 0): records(0.5, 0)}
    low = {s: bench.low_far_metrics([complete[(s, 0)]]) for s in ("arcface", "arcface+unpg")}
    halves = [r["low_far"]["keys"]["lr-lr@16"]["figures"]["tar@0.0001"] for r in complete[("arcface", 0)]]
    assert low["arcface"]["lr-lr@16"]["figures"]["tar@0.0001"] == pytest.approx(100 * np.mean(halves))
    rows = bench.low_far_significance(low)
    row = next(r for r in rows if r["figure"] == "all-pairs TAR@0.0001 lr-lr@16")
    assert row["claim"] == "arcface+unpg vs arcface" and row["diff"] > 0 and row["p"] < 0.05
    values = bench.result_values(bench.parse_args(["--quick"]), {}, low)
    assert {"arcface_tar1e4_16", "arcface_unpg_tar1e4_8", "p_unpg_tar1e4_16"} <= set(values)
    assert float(values["p_unpg_tar1e4_16"]) == pytest.approx(row["p"], rel=1e-3)
    assert any("TAR@1e-4" in line for line in bench.low_far_table(low, complete))


def test_low_far_metrics_count_only_the_seeds_that_were_scored(bench):
    """A seed whose model predates the low-FAR evaluation (no entry in one of its records) is left out of the mean,
    and the table's seeds column says how many seeds the figures rest on; no scored seed gives no row."""
    def records(seed: int, scored: bool) -> list[dict]:
        out = []
        for half in ("A", "B"):
            record = {"settings": {"half": half}}
            if scored or half == "A":
                embeddings, labels = _low_far_embeddings(seed + (half == "B"), 0.0)
                record["low_far"] = bench.low_far_half(embeddings, labels, resolutions=(16,), resamples=50)
            out.append(record)
        return out

    complete = {("arcface", 0): records(0, scored=False), ("arcface", 1): records(1, scored=True),
                ("arcface", 2): records(2, scored=True)}
    low = bench.low_far_metrics([complete[("arcface", seed)] for seed in range(3)])
    scored = [r["low_far"]["keys"]["lr-lr@16"]["figures"]["tar@0.0001"] for seed in (1, 2)
              for r in complete[("arcface", seed)]]
    assert low["lr-lr@16"]["seeds"] == 2
    assert low["lr-lr@16"]["figures"]["tar@0.0001"] == pytest.approx(100 * np.mean(scored))
    row = next(line for line in bench.low_far_table({"arcface": low}, complete) if line.startswith("| arcface |"))
    assert row.split(" | ")[1] == "2"
    assert bench.low_far_metrics([complete[("arcface", 0)]]) is None


def test_low_far_over_seeds_takes_the_seed_as_the_unit(bench):
    """Δ per seed is the mean over halves of first − second; the interval and p are scipy's one-sample t over seeds.
    A seed that one system lacks, or a half without low-FAR figures, leaves that seed out."""
    from scipy import stats

    def record(half: str, tar: float) -> dict:
        return {"settings": {"half": half}, "low_far": {"keys": {"lr-lr@16": {"figures": {"tar@0.0001": tar}}}}}

    unpg = {0: (0.50, 0.40), 1: (0.46, 0.44), 2: (0.52, 0.38)}
    base = {0: (0.45, 0.41), 1: (0.44, 0.43), 2: (0.47, 0.36)}
    complete = {(system, seed): [record("A", a), record("B", b)]
                for system, values in (("arcface+unpg-rh", unpg), ("arcface-rh", base)) for seed, (a, b) in values.items()}
    complete[("arcface+unpg-rh", 3)] = [record("A", 0.9), record("B", 0.9)]  # no arcface-rh seed 3: not paired
    lines = bench._tables.low_far_over_seeds(complete, [("arcface+unpg-rh", "arcface-rh")])
    deltas = [100 * ((unpg[k][0] - base[k][0]) + (unpg[k][1] - base[k][1])) / 2 for k in range(3)]
    test = stats.ttest_1samp(deltas, 0.0)
    half = stats.t.ppf(0.975, 2) * np.std(deltas, ddof=1) / np.sqrt(3)
    row = next(line for line in lines if line.startswith("| arcface+unpg-rh vs arcface-rh | TAR@0.0001 lr-lr@16 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == ", ".join(f"{d:+.2f}" for d in deltas)
    mean = np.mean(deltas)
    assert cells[3] == f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"
    assert cells[4].rstrip(" *") == f"{test.pvalue:.3g}"
    complete[("arcface-rh", 2)] = [record("A", 0.47)]  # one half only: seed 2 drops, two seeds remain
    row = next(line for line in bench._tables.low_far_over_seeds(complete, [("arcface+unpg-rh", "arcface-rh")])
               if "lr-lr@16" in line)
    assert row.split("|")[3].strip() == ", ".join(f"{d:+.2f}" for d in deltas[:2])
    del complete[("arcface-rh", 1)]
    assert bench._tables.low_far_over_seeds(complete, [("arcface+unpg-rh", "arcface-rh")]) == []  # one seed: no row


def test_unpg_mechanism_is_saved_per_step_tabulated_and_plotted(bench, tmp_path):
    log = [{"step": 0, "val": {}}]
    for step in range(1, 7):
        entry = {"step": step, "loss": 1.0, "unpg_pairs": 100, "negatives": 90 + step, "unpg_share": 0.01 * step,
                 "unpg_kept_max": 0.2, "unpg_hardest_class_mean": 0.3}
        if step != 3:  # a batch with < 4 pairs has no bounds
            entry.update(unpg_lower=-0.3, unpg_upper=0.25)
        log.append(entry)
    cols = bench.step_columns(log, bench.UNPG_LOG_KEYS)
    assert cols["step"] == [1, 2, 3, 4, 5, 6] and cols["negatives"] == [91, 92, 93, 94, 95, 96]
    assert np.isnan(cols["unpg_upper"][2]) and cols["unpg_upper"][0] == 0.25
    assert "unpg_hardest_class_max" not in cols
    assert bench.step_columns([{"step": 1, "loss": 2.0}], bench.UNPG_LOG_KEYS) is None
    table = bench.mechanism_table({"arcface+unpg": [cols]}, window=2)
    assert "| arcface+unpg | 1 | 92 / 96 of 100 / 100 | 0.25 / 0.25 | 0.2 / 0.2 | 0.3 / 0.3 | 0.015 / 0.055 |" in table
    import _plots

    png = _plots.plot_step_series({"arcface+unpg": [cols]}, tmp_path / "m.png",
                                  {"pairs": ("pairs", ["unpg_pairs", "negatives"])}, "t", smooth=3,
                                  labels={"negatives": "pairs kept"})
    assert png.is_file() and png.stat().st_size > 0
    # the smoothing skips a step without the quantity instead of spreading its NaN over the window
    smoothed = _plots.moving_mean(cols["unpg_upper"], 3)
    assert smoothed[2] == pytest.approx(0.25) and smoothed[0] == pytest.approx(0.25)
    assert np.all(np.isnan(_plots.moving_mean([np.nan, np.nan, 1.0], 1)[:2]))
    assert _plots.moving_mean([1.0, 2.0, 6.0, 3.0], 3).tolist() == pytest.approx([1.5, 3.0, 11 / 3, 4.5])


def test_ri_log_report_tabulates_xi_and_xi_hat_per_resolution_and_plots_them(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    entry = {"images": 4, "buckets": {r: {"xi": 0.1 * i, "xi_hat": 0.05 * i} for i, r in
                                      enumerate(["8", "16", "24", "112"])}, "auc_24_8": {"xi": 0.9, "xi_hat": 0.8}}
    record = {"settings": {"half": "A"}, "train": {"ri_buckets": [[0, entry], [150, entry]]}}
    lines = bench.ri_log_report(bench.parse_args(["--mode", "t"]), {("ri-fix-150", 0): [record]})
    assert "| 150 | 0.000 / 0.000 | 0.100 / 0.050 | 0.200 / 0.100 | 0.300 / 0.150 | 0.900 | 0.800 |" in lines
    assert (tmp_path / "t" / "ri_index.png").is_file()
    assert bench.ri_log_report(bench.parse_args([]), {("arcface", 0): [{"settings": {"half": "A"}, "train": {}}]}) == []


def test_ri_quality_probe_ridge_reads_a_linear_signal_and_rejects_a_missing_model(tmp_path):
    """The probe's ridge: with a tiny penalty it recovers an exact linear relation on unseen rows (standardised
    features, unpenalised intercept); with a huge one it predicts the fitted mean."""
    probe = next(load_benchmark(BENCHMARKS / "ri_quality_probe.py", "ri_quality_probe_benchmark"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 0, 1]
    w = np.array([0.5, -0.02, 3.0, 0.1, 0.0])
    y = x @ w + 0.7
    pred = probe.ridge_fit_predict(x[:150], y[:150], x[150:], penalty=1e-9)
    np.testing.assert_allclose(pred, y[150:], rtol=1e-6, atol=1e-6)
    flat = probe.ridge_fit_predict(x[:150], y[:150], x[150:], penalty=1e9)
    np.testing.assert_allclose(flat, np.full(50, y[:150].mean()), atol=1e-6)
    with pytest.raises(SystemExit):
        probe.parse_args(["--model", str(tmp_path / "absent")])
