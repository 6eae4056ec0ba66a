"""R1's report: the tables (systems, tests, negative sources, sweeps, CET diagnostics, the ceiling and the shares,
the oracle propensity) and the RESULT line, from every saved record.

A sibling module of `pooling_bias.py` (the script's folder is on `sys.path`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from _r1_runs import k_sweep_key, sweep_key
from _r1_settings import MEASURES, POOL_DEPTH, Store
from _r1_sources import CLEAN_REPORT
from _r1_systems import BASELINES, BY_NAME, DECIDING, EXTRA, ORACLE_PROPENSITY, ORDER, SYSTEMS, TRAINED


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _averaged(records: list[dict], split: str = "test"):
    """An `Evaluation` whose per-query values are the means over `records` (seeds)."""
    from rankface.evaluation.ranking import Evaluation

    per_query = {}
    for m in MEASURES:
        qids = records[0][split]["per_query"][m]
        per_query[m] = {q: statistics.fmean(r[split]["per_query"][m][q] for r in records) for q in qids}
    aggregate = {m: statistics.fmean(v.values()) for m, v in per_query.items()}
    return Evaluation(aggregate=aggregate, per_query=per_query, num_queries=len(per_query[MEASURES[0]]))


def paired(store: Store, a: str, b: str, seeds: Sequence[int], measure: str = "nDCG@10",
           b_seeds: Sequence[int] | None = None) -> dict | None:
    """Paired t-test over test queries of system a vs b, per-query values averaged over their common seeds (or, with
    `b_seeds`, a over its saved `seeds` and b over `b_seeds`: a trained system against a deterministic baseline)."""
    from rankface.evaluation.ranking import paired_ttest

    if b_seeds is None:
        common = [s for s in seeds if store.path(a, s).is_file() and store.path(b, s).is_file()]
        a_seeds = b_seeds = common
    else:
        common = a_seeds = [s for s in seeds if store.path(a, s).is_file()]
        b_seeds = [s for s in b_seeds if store.path(b, s).is_file()]
    if not a_seeds or not b_seeds:
        return None
    ra = _averaged([store.load(a, s) for s in a_seeds])
    rb = _averaged([store.load(b, s) for s in b_seeds])
    t, p = paired_ttest(ra, rb, measure)
    return {"a": a, "b": b, "seeds": common, "delta": ra[measure] - rb[measure], "t": t, "p": p}


def diagnostics_lines(seeds: Sequence[int], store: Store) -> list[str]:
    """CET's view of its own mined negatives, per (system, seed) that recorded it: does the selection model's
    propensity single out the known false negatives, which way does that move their weight, and how close is the
    selection model to the relevance model?"""
    rows = []
    for system in (s for s in ORDER if BY_NAME[s].method == "cet"):
        for seed in seeds:
            rec = store.load(system, seed) if store.path(system, seed).is_file() else None
            diag = (rec or {}).get("cet_diagnostics")
            if not diag:
                continue
            prop, by_label = diag["propensity"], diag["relevance_loss_w_f_by_label"]
            prop_t = diag.get("propensity_T") or {}
            quantiles_t = _propensity_t_quantiles(diag)
            corr = diag.get("correlations") or {}
            during = (rec["train"].get("cet_correlations") or {}).get("corr_g_f")
            rows.append(
                f"| {system} | {seed} | {diag['false_negative_rate']['grade>=1']['rate']:.3f} | "
                f"{prop['auc_false_negatives']:.3f} | {prop['mean_false_negatives']:.3f} | "
                f"{prop['mean_other_negatives']:.3f} | {_cell(prop_t.get('mean_false_negatives'))} | "
                f"{_cell(prop_t.get('mean_other_negatives'))} | "
                + (" / ".join(f"{q:.3f}" for q in quantiles_t) if quantiles_t else "") + " | "
                f"{by_label['false_negatives']:.3f} | {by_label['other_negatives']:.3f} | {_cell(corr.get('g_f'))} | "
                f"{_cell(corr.get('w_f_f'))} | "
                + (f"{during['first']:.3f} -> {during['last']:.3f}" if during else "") + " |")
    if not rows:
        return []
    title = ("CET diagnostics on the mined training negatives (known false negatives = full qrels grade >= 1). "
             "CET's propensity is sigmoid(g/T) (w_f = 1 / (1 - sigmoid(g/T)), the weight on a negative in the "
             "relevance model's loss); sigmoid(g) is shown for continuity with older notes, but with 20 x cosine "
             "logits it saturates near 1. sigmoid(g/T) p05 / p50 / p95 of older records are derived exactly from "
             "their saved sigmoid(g) quantiles (a monotone map); their FN / other means were not saved. corr over "
             "the mined negatives after training; 'during training': the per-batch corr(g, f) at step 1 (before any "
             "update) and at the last step:\n")
    head = ("| system | seed | FN rate | propensity AUC, FN vs other | sigmoid(g) FN | sigmoid(g) other | sigmoid(g/T) FN | "
            "sigmoid(g/T) other | sigmoid(g/T) p05 / p50 / p95 | w_f FN | w_f other | corr(g, f) | corr(w_f, f) | "
            "corr(g, f) during training |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    return [title, head, "\n".join(rows) + "\n"]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _propensity_t_quantiles(diag: dict) -> list[float]:
    """p05, p50, p95 of sigmoid(g/T): saved (`propensity_T`), or mapped from sigmoid(g)'s quantiles (g = logit)."""
    if diag.get("propensity_T", {}).get("quantiles"):
        q = diag["propensity_T"]["quantiles"]
        return [q["p05"], q["p50"], q["p95"]]
    q = diag.get("propensity", {}).get("quantiles")
    if not q:
        return []
    temperature = diag["temperature"]

    def mapped(p: float) -> float:
        p = min(max(p, 1e-15), 1 - 1e-15)
        return 1 / (1 + math.exp(-math.log(p / (1 - p)) / temperature))

    return [mapped(q[k]) for k in ("p05", "p50", "p95")]


def report(args: argparse.Namespace, store: Store) -> str:
    """The R1 tables and RESULT line from every saved record (every saved seed, whatever `--seeds` says)."""
    lines = []
    settings = store.settings
    seed_list = store.saved_seeds() or args.seed_list
    lines.append(
        f"## R1 pooling bias ({args.encoder}-encoder, mode {args.mode})\n\n"
        f"Settings: MiniLM-L6 weights, layers {settings['num_layers'] or 6}, max length {settings['max_length']}, "
        f"K = {settings['num_negatives']}, batch {settings['batch_size']} queries, {settings['steps']} steps, "
        f"lr {settings['learning_rate']}, training mode {settings['training_mode']}"
        f"{', mixed precision ' + settings['mixed_precision'] if settings.get('mixed_precision') else ''}"
        f"{' (token embeddings frozen)' if settings['freeze_embeddings'] else ''}, pairwise loss, CET T = "
        f"{args.cet_temperature} "
        f"({settings['cet_weights_from']}, selection {settings['cet_selection']}); pooled labels from BM25 "
        f"top-{POOL_DEPTH} ({'every pooled doc judged' if settings.get('pool_labels') == 'judged' else 'one positive'}"
        f" per query); test = BM25 top-100 of the test queries reranked.\n"
    )
    data_report = args.out / "data" / "data_report.json"
    if data_report.is_file():
        d = json.loads(data_report.read_text())
        lines.append(
            f"Train queries used {d['train_queries_used']} (of {d['train_queries']}; "
            f"{d['train_queries_duplicating_test_or_dev']} duplicates of test/dev dropped, "
            f"{d['pooled_labels']['queries_without_pooled_positive']} without a grade >= 2 doc in the BM25 top-10, "
            f"{d['train_queries_with_empty_bm25']} with no BM25 hit); test queries {d['test_queries']} "
            f"({d['test_queries_with_empty_bm25']} with no BM25 hit, scored 0 by every system).\n"
        )
    header = "| system | seeds | nDCG@10 | RR@10 (grade>=2) | R@100 | dev nDCG@10 |"
    rows = [header, "|---|---:|---:|---:|---:|---:|"]
    means: dict[str, float] = {}
    for system in (*BASELINES, *TRAINED, *EXTRA):
        seeds = [0] if system in BASELINES else seed_list
        recs = [store.load(system, s) for s in seeds if store.path(system, s).is_file()]
        if not recs:
            judged = settings.get("pool_labels") == "judged"
            if system in BASELINES or not BY_NAME[system].needs_judged_pools or judged:
                rows.append(f"| {system} | 0 | (not run yet) | | | |")
            continue
        cells = []
        for m in MEASURES:
            mu, sd = _mean_std([r["test"]["aggregate"][m] for r in recs])
            cells.append(f"{mu:.4f} ± {sd:.4f}" if len(recs) > 1 else f"{mu:.4f}")
            if m == "nDCG@10":
                means[system] = mu
        dev_mu, _ = _mean_std([r["dev"]["aggregate"]["nDCG@10"] for r in recs])
        rows.append(f"| {system} | {len(recs)} | " + " | ".join(cells) + f" | {dev_mu:.4f} |")
    lines.append("\n".join(rows) + "\n")

    tests = {}
    for x in ("strong", "bm25", "mlp", "norm", "tl"):
        cet, plain = ((f"cet-{x}/strong-neg", "plain/strong-neg") if x in ("mlp", "norm", "tl")
                      else (f"cet/{x}-neg", f"plain/{x}-neg"))
        res = paired(store, cet, plain, seed_list)
        tests[x] = res
        if res:
            lines.append(f"- paired t-test over test queries, {cet} vs {plain} (seeds {res['seeds']}): "
                         f"Δ nDCG@10 = {res['delta']:+.4f}, t = {res['t']:.2f}, p = {res['p']:.3g}")
    for a, b in (("plain/strong-neg", "plain/bm25-neg"), ("plain/bm25-neg", "dense"), ("oracle", "plain/bm25-neg"),
                 ("cet-tl/strong-neg", "cet/strong-neg"), ("cet/strong-neg", "plain/bm25-neg")):
        res = paired(store, a, b, seed_list, b_seeds=[0] if b == "dense" else None)
        if res:
            lines.append(f"- {a} vs {b} (seeds {res['seeds']}): Δ nDCG@10 = {res['delta']:+.4f}, p = {res['p']:.3g}")
    gate = paired(store, "plain/bm25-neg", "dense", seed_list, b_seeds=[0])
    if gate:
        passed = gate["delta"] > 0 and gate["p"] < 0.05
        lines.append(f"- **learning gate** (plain/bm25-neg beats the zero-shot encoder on test, p < 0.05): "
                     f"{'PASSED' if passed else 'NOT PASSED'}: Δ nDCG@10 = {gate['delta']:+.4f}, p = {gate['p']:.3g} "
                     f"(seeds {gate['seeds']})" + ("" if passed else "; the method comparison below cannot be read as "
                                                    "evidence at this budget"))
    res = paired(store, "plain/bm25-neg", "bm25", [0])
    if res and store.path("plain/bm25-neg", 0).is_file():
        dev_plain = store.load("plain/bm25-neg", 0)["dev"]["aggregate"]["nDCG@10"]
        dev_bm25 = store.load("bm25", 0)["dev"]["aggregate"]["nDCG@10"]
        lines.append(f"- learnability check on dev: plain/bm25-neg seed 0 nDCG@10 {dev_plain:.4f} vs BM25 "
                     f"{dev_bm25:.4f}")
    lines.append("")

    fn = {}
    sources = args.out / "data" / "negative_sources.json"
    if sources.is_file():
        src = json.loads(sources.read_text())
        table = [("| negative source | window | nDCG@10 train (full qrels) | nDCG@10 pooled queries | FN rate grade>=1 | "
                  "FN rate grade>=2 | FN grade>=1, whole window | ratio to BM25 | meets criteria |"),
                 "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in src["rows"]:
            ratio = r.get("fn_ratio_to_bm25")
            table.append(
                f"| {r['source']} | {r['window'][0]}-{r['window'][1]} | {r['ndcg10_train_full_qrels']:.4f} | "
                f"{r.get('ndcg10_pooled_queries', math.nan):.4f} | "
                f"{r['fn_rate_grade1']:.3f} | {r['fn_rate_grade2']:.3f} | {r['fn_rate_grade1_whole_window']:.3f} | "
                f"{'' if ratio is None else f'{ratio:.2f}'} | {r.get('meets_criteria', '')} |"
            )
        for r in src.get("bm25_same_window", []):
            table.append(
                f"| bm25 (reference) | {r['window'][0]}-{r['window'][1]} | {r['ndcg10_train_full_qrels']:.4f} | "
                f"{r['ndcg10_pooled_queries']:.4f} | {r['fn_rate_grade1']:.3f} | {r['fn_rate_grade2']:.3f} | "
                f"{r['fn_rate_grade1_whole_window']:.3f} | | |"
            )
        chosen = src["chosen"]
        lines.append("\n".join(table))
        lines.append(f"\n`strong` = {chosen['name']} ranks 1-{chosen['window']}: {chosen['why']}. dense-ft = the "
                     f"plain/bm25-neg seed-0 bi-encoder (test nDCG@10 {src['retriever']['test_ndcg10']:.4f}) over the "
                     "whole corpus; rrf = RRF (k 60) of BM25 top-100 and dense-ft top-100.\n")
        fn["bm25"] = src["rows"][0]["fn_rate_grade1"]
        fn["strong"] = next(r["fn_rate_grade1"] for r in src["rows"][1:]
                            if r["source"] == chosen["name"] and r["window"][1] == chosen["window"])
        lines += window_lines(src)

    sweep_rows = []
    for t in sorted({*args.sweep_list, *saved_sweep_values(store, "T")}):
        key = sweep_key(args, t)
        if store.path(key, 0).is_file():
            rec = store.load(key, 0)
            sweep_rows.append(f"| {t:g} | {rec['dev']['aggregate']['nDCG@10']:.4f} | "
                              f"{rec['dev']['aggregate']['RR@10']:.4f} | {rec['train']['cet_weight_mean']:.3f} | "
                              f"{rec['train']['cet_weight_max_batch_mean']:.3g} |")
    if sweep_rows:
        plain_dev = store.load("plain/strong-neg", 0) if store.path("plain/strong-neg", 0).is_file() else None
        lines.append("CET temperature sweep (cet/strong-neg, seed 0, dev split"
                     + (f"; plain/strong-neg dev nDCG@10 {plain_dev['dev']['aggregate']['nDCG@10']:.4f}"
                        if plain_dev else "") + "):\n")
        lines.append("| T | dev nDCG@10 | dev RR@10 | mean CET weight | max batch-mean weight |\n|---:|---:|---:|---:|---:|")
        lines.append("\n".join(sweep_rows) + "\n")

    k_rows = []
    for k in sorted({*args.k_sweep_list, *map(int, saved_sweep_values(store, "K"))}):
        if store.path(k_sweep_key(k), 0).is_file():
            rec = store.load(k_sweep_key(k), 0)
            k_rows.append(f"| {k} | {rec['dev']['aggregate']['nDCG@10']:.4f} | {rec['dev']['aggregate']['RR@10']:.4f} |")
    if k_rows and store.path("cet/strong-neg", 0).is_file():
        main_dev = store.load("cet/strong-neg", 0)["dev"]["aggregate"]
        lines.append(f"CET negatives-per-query sweep (cet/strong-neg, T = {args.cet_temperature:g}, seed 0, dev split):\n")
        lines.append("| K | dev nDCG@10 | dev RR@10 |\n|---:|---:|---:|")
        lines.append(f"| {args.num_negatives} (main) | {main_dev['nDCG@10']:.4f} | {main_dev['RR@10']:.4f} |")
        lines.append("\n".join(k_rows) + "\n")
    lines += diagnostics_lines(seed_list, store)
    ceiling = ceiling_lines(store, seed_list)
    lines += ceiling["lines"]
    lines += oracle_propensity_lines(store, seed_list)
    curves = plot_curves(args, store)
    if curves:
        lines.append(f"Learning curves (dev nDCG@10 and training loss against step): `{curves}`\n")

    complete = [s for s in seed_list if all(store.path(x, s).is_file() for x in DECIDING)]
    strong_test = tests.get("strong")

    def fmt(v: float | None) -> str:
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    result = {
        "bm25_ndcg10": fmt(means.get("bm25")),
        "dense_ndcg10": fmt(means.get("dense")),
        "plain_bm25_ndcg10": fmt(means.get("plain/bm25-neg")),
        "plain_strong_ndcg10": fmt(means.get("plain/strong-neg")),
        "cet_strong_ndcg10": fmt(means.get("cet/strong-neg")),
        "cet_bm25_ndcg10": fmt(means.get("cet/bm25-neg")),
        "oracle_ndcg10": fmt(means.get("oracle")),
        "p_cet_vs_plain_strong": "nan" if not strong_test else f"{strong_test['p']:.3g}",
        "p_plain_vs_dense": "nan" if not gate else f"{gate['p']:.3g}",
        "fn_rate_bm25": fmt(fn.get("bm25")),
        "fn_rate_strong": fmt(fn.get("strong")),
        "clean_strong_ndcg10": fmt(means.get("clean/strong-neg")),
        **ceiling["result"],
        "steps": settings["steps"],
        "training": settings["training_mode"],
        "encoder": args.encoder,
        "seeds": len(complete),
        "mode": args.mode,
    }
    lines.append("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return "\n".join(lines)


def window_lines(src: dict) -> list[str]:
    """The strong retriever against BM25 on the same windows (1-10 and 1-50): is the strong source's higher
    false-negative rate the retriever's, or the narrower window's? Counts only, from `negative_sources.json`."""
    rows = {(r["source"], r["window"][1]): r for r in (*src["rows"], *src.get("bm25_same_window", []))}
    table = []
    for window in (10, 50):
        cells = []
        for name in ("dense-ft", "bm25"):
            r = rows.get((name, window))
            cells.append("" if r is None else f"{r['fn_rate_grade1']:.3f} ({r['fn_rate_grade1_whole_window']:.3f})")
        if any(cells):
            table.append(f"| 1-{window} | " + " | ".join(cells) + " |")
    if not table:
        return []
    return [("Same windows, two retrievers: false-negative rate (grade >= 1) of the sampled negatives (of the whole "
            "window). dense-ft = the strong retriever:\n"),
            "| window | dense-ft | BM25 |\n|---|---:|---:|", "\n".join(table) + "\n"]


def saved_sweep_values(store: Store, kind: str) -> list[float]:
    """The T (kind "T") or K ("K") values of the saved seed-0 sweep records of cet/strong-neg."""
    values = []
    for path in store.out.glob(f"sweep__cet-strong-neg-{kind}*__seed0.json"):
        text = path.name[len(f"sweep__cet-strong-neg-{kind}"):-len("__seed0.json")]
        try:
            values.append(float(text))
        except ValueError:
            continue
    return values


# The ceiling of each negative source (plain and clean on it), and the CET systems on it, reported as a share of it.
SHARE_SYSTEMS = {
    source: (f"plain/{source}-neg", f"clean/{source}-neg",
             tuple(s.name for s in SYSTEMS if s.method == "cet" and s.negatives == source))
    for source in ("strong", "bm25")
}


def oracle_propensity_lines(store: Store, seeds: Sequence[int]) -> list[str]:
    """The oracle-propensity sweep (judged pools): CET's weighting with the right propensity, against plain."""
    rows = []
    for system, p in ORACLE_PROPENSITY.items():
        saved = [s for s in seeds if store.path(system, s).is_file()]
        if not saved:
            continue
        recs = [store.load(system, s) for s in saved]
        test = statistics.fmean(r["test"]["aggregate"]["nDCG@10"] for r in recs)
        res = paired(store, system, "plain/strong-neg", saved)
        by_label = [r.get("cet_diagnostics", {}).get("relevance_loss_w_f_by_label") or {} for r in recs]
        fn = [b["false_negatives"] for b in by_label if b.get("false_negatives") is not None]
        other = [b["other_negatives"] for b in by_label if b.get("other_negatives") is not None]
        rows.append(f"| {p:g} | {saved} | {1 / (1 - p):.2f} / {1 / p:.2f} | "
                    f"{statistics.fmean(fn) if fn else math.nan:.2f} / {statistics.fmean(other) if other else math.nan:.2f}"
                    f" | {test:.4f} | " + (f"{res['delta']:+.4f} (p = {res['p']:.3g})" if res else "") + " |")
    if not rows:
        return []
    return [("cet-oracle-propensity (judged pools; no selection model: p for documents of the BM25 top-10 pool, "
             "1 - p outside it, w_f = 1 / (1 - p) as in CET): the bound of CET's weighting form when the propensity "
             "is right:\n"),
            ("| p | seeds | w_f pooled / not pooled | w_f FN / other (mined negatives) | test nDCG@10 | vs plain/strong-neg |"
            "\n|---:|---|---|---|---:|---|"), "\n".join(rows) + "\n"]


def ceiling_lines(store: Store, seeds: Sequence[int]) -> dict:
    """The ceiling A = clean - plain per negative source, and each CET system's share of it (plain 0, clean 1), on
    the seeds every system of the comparison has saved; bootstrap over queries and seeds (`_r1_ceiling`)."""
    from _r1_ceiling import per_query_matrix, share_of_ceiling

    rows, result = [], {"ceiling_strong": "nan", "share_cet_strong": "nan", "share_cet_indep_strong": "nan",
                        "p_share_cet": "nan", "p_share_cet_indep": "nan"}
    for source, (plain, clean, systems) in SHARE_SYSTEMS.items():
        base = [s for s in seeds if store.path(plain, s).is_file() and store.path(clean, s).is_file()]
        if not base:
            continue
        qids, plain_m = per_query_matrix([store.load(plain, s) for s in base])
        _, clean_m = per_query_matrix([store.load(clean, s) for s in base])
        a = share_of_ceiling(plain_m, clean_m)
        rows.append(f"| {clean} - {plain} (the ceiling A) | {base} | {a['ceiling']:+.4f} "
                    f"[{a['ceiling_ci'][0]:+.4f}, {a['ceiling_ci'][1]:+.4f}] | {a['p_ceiling']:.3g} | 1 | |")
        if source == "strong":
            result["ceiling_strong"] = f"{a['ceiling']:.4f}"
        for system in systems:
            common = [s for s in base if store.path(system, s).is_file()]
            if not common:
                continue
            pick = [base.index(s) for s in common]
            sys_qids, sys_m = per_query_matrix([store.load(system, s) for s in common])
            if sys_qids != qids:
                raise SystemExit(f"{system}: its test queries differ from {plain}'s")
            out = share_of_ceiling(plain_m[pick], clean_m[pick], sys_m)
            rows.append(f"| {system} - {plain} | {common} | {out['gain']:+.4f} | {out['p_share']:.3g} | "
                        f"{out['share']:.2f} [{out['share_ci'][0]:.2f}, {out['share_ci'][1]:.2f}] | "
                        f"A on these seeds {out['ceiling']:+.4f} |")
            if source == "strong" and system in ("cet/strong-neg", "cet-indep/strong-neg"):
                name = "cet" if system == "cet/strong-neg" else "cet_indep"
                result[f"share_{name}_strong"] = f"{out['share']:.3f}"
                result[f"p_share_{name}"] = f"{out['p_share']:.3g}"
    if not rows:
        return {"lines": [], "result": result}
    clean_report = store.out / CLEAN_REPORT
    counts = json.loads(clean_report.read_text()) if clean_report.is_file() else {}
    note = "; ".join(f"{k}: {v['false_negatives_replaced']} false negatives replaced in {v['queries']} queries "
                     f"({v['false_negatives_without_replacement']} without a replacement, dropped)"
                     for k, v in counts.items())
    lines = ["Ceiling: `clean/X-neg` trains on X's negatives with every one the full train qrels grade >= 1 replaced "
             "in place by the next candidate below the window that they do not grade relevant (same seed: the same "
             "groups otherwise)" + (f" ({note})" if note else "") + ". A = clean - plain; each system's share of A "
             "(plain = 0, clean = 1), with 95 % bootstrap intervals (queries and seeds resampled together) and the "
             "two-sided bootstrap p against 0 (of A, or of the system's gain over plain):\n",
             "| comparison | seeds | Δ test nDCG@10 | p | share of A | |\n|---|---|---:|---:|---|---|",
             "\n".join(rows) + "\n"]
    return {"lines": lines, "result": result}


CURVE_SYSTEMS = ("plain/bm25-neg", "plain/strong-neg", "cet/strong-neg", "cet/bm25-neg")


def plot_curves(args: argparse.Namespace, store: Store) -> str | None:
    """learning_curves.png: dev nDCG@10 and training loss against step of the deciding systems (seed 0)."""
    from rankface.training.curves import plot_learning_curve

    logs = {}
    for system in CURVE_SYSTEMS:
        if store.path(system, 0).is_file():
            curve = store.load(system, 0)["train"].get("curve") or {}
            logs[system] = ([{"step": s, "eval": {"nDCG@10": v}} for s, v in curve.get("dev_ndcg10", [])]
                            + [{"step": s, "loss": v} for s, v in curve.get("loss", [])])
    if not any(logs.values()):
        return None
    path = args.out / "learning_curves.png"
    plot_learning_curve(logs, path, eval_label="dev", smooth=4,
                        title=f"R1 {args.encoder}-encoder, {store.settings['training_mode']}, seed 0 "
                              "(loss points are 25-step means)")
    return str(path.relative_to(Path(__file__).resolve().parent.parent)) if path.is_relative_to(
        Path(__file__).resolve().parent.parent) else str(path)
