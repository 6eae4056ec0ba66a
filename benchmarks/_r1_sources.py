"""R1's data: the collection, the pooled labels and the negative sources (BM25, the strong retriever, their clean
versions for the ceiling), with each source's false-negative rates.

A sibling module of `pooling_bias.py` (the script's folder is on `sys.path`).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _r1_settings import (
    BM25_WINDOW,
    FN_RATIO,
    NDCG_MARGIN,
    ORACLE_POOL_QRELS,
    POOL_DEPTH,
    RESULTS,
    STRONG_CANDIDATES,
    Store,
    log,
)

from rankface.utils.io import write_json
from rankface.utils.ties import ranked


@dataclass
class Context:
    """The collection, the pooled labels and the negative sources shared by every system."""

    args: argparse.Namespace
    collection: object
    docs: dict[str, str]
    queries: dict[str, dict[str, str]]  # split -> {qid: text}
    full_qrels: dict[str, dict[str, dict[str, int]]]  # split -> qrels
    candidates: dict[str, dict[str, dict[str, float]]]  # split -> BM25 top-100 (test, dev subset)
    pooled_qrels_path: Path
    oracle_qrels_path: Path
    runs: dict[str, Path]  # negative source -> TREC run file
    train_qids: list[str]  # the pooled-labelled queries that train (a subset in quick mode)
    all_train_qids: list[str]  # every judged train query that duplicates no test/dev query
    bm25_train: dict[str, dict[str, float]]  # BM25 top-100 of `all_train_qids`
    report: dict = field(default_factory=dict)


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def top(docs: Mapping[str, float] | None, n: int) -> dict[str, float]:
    """The top-`n` of one query's run in rankface's one order (`rankface.utils.ties`, as `build_training_groups`)."""
    return dict(ranked(docs or {})[:n])


def judged_pool_labels(full_qrels: Mapping[str, Mapping[str, int]], pool_run: Mapping[str, Mapping[str, float]],
                       qids: Sequence[str], depth: int) -> dict[str, dict[str, int]]:
    """Labels of a fully judged pool: every document of each query's top-`depth` keeps its grade >= 1, so a relevant
    pooled document is labelled and never a negative. CET's model (y = r * s) then holds exactly: a false negative
    can only lie outside the pool."""
    return {q: {d: g for d, g in full_qrels.get(q, {}).items() if g >= 1 and d in top(pool_run.get(q), depth)}
            for q in qids}


def prepare_context(args: argparse.Namespace) -> Context:
    from rankface.data.ir import load_collection
    from rankface.data.mining import simulate_pooled_labels
    from rankface.retrieval.first_stage import bm25_run
    from rankface.retrieval.trec import write_qrels, write_run

    work = args.out / "data"
    collection = load_collection(args.collection)
    docs = collection.docs()
    queries = {split: dict(collection.queries(split)) for split in ("train", "dev", "test")}
    full_qrels = {split: collection.qrels(split) for split in ("train", "dev", "test")}
    held_out = {normalise(t) for split in ("test", "dev") for t in queries[split].values()}
    duplicates = [q for q, t in queries["train"].items() if normalise(t) in held_out]

    bm25 = {split: bm25_run(collection, split, depth=100, cache_dir=args.cache_dir) for split in queries}
    pooled, pool_report = simulate_pooled_labels(
        full_qrels["train"], bm25["train"], pool_depth=POOL_DEPTH, min_grade=2,
        queries=list(queries["train"]), doc_ids=docs.keys(), exclude=duplicates,
    )
    train_qids = sorted(pooled)
    if args.max_train_queries is not None and args.max_train_queries < len(train_qids):
        train_qids = sorted(random.Random(0).sample(train_qids, args.max_train_queries))
    pooled = {q: pooled[q] for q in train_qids}
    if args.pool_labels == "judged":
        pooled = judged_pool_labels(full_qrels["train"], bm25["train"], train_qids, POOL_DEPTH)
    # Oracle: the same queries, every grade >= 2 doc a positive; negatives only from docs without any judgment
    # (grade-1 docs are neither positives nor negatives), so the run is filtered before the window is taken.
    oracle = {q: {d: g for d, g in full_qrels["train"][q].items() if g >= 2 and d in docs} for q in train_qids}
    bm25_train = {q: top(bm25["train"][q], BM25_WINDOW) for q in train_qids}
    unjudged = {
        q: {d: s for d, s in bm25["train"][q].items() if d not in full_qrels["train"].get(q, {})} for q in train_qids
    }
    oracle_run = {q: top(r, BM25_WINDOW) for q, r in unjudged.items()}
    in_pool = {q: set(top(bm25["train"].get(q), 100)) for q in train_qids}
    oracle_pool = {q: {d: g for d, g in oracle[q].items() if d in in_pool[q]} for q in train_qids}
    oracle_pool = {q: positives for q, positives in oracle_pool.items() if positives}

    pooled_path, oracle_path = work / "pooled_qrels.train.txt", work / "oracle_qrels.train.txt"
    write_qrels(pooled_path, pooled)
    write_qrels(oracle_path, oracle)
    write_qrels(work / ORACLE_POOL_QRELS, oracle_pool)
    runs = {"bm25": work / "bm25.train.top50.trec", "oracle": work / "oracle_negatives.train.trec"}
    runs["oracle-pool"] = runs["oracle"]
    write_run(runs["bm25"], bm25_train, tag="bm25")
    write_run(runs["oracle"], oracle_run, tag="bm25-unjudged")

    dev_qids = sorted(q for q in queries["dev"] if q in full_qrels["dev"])
    if args.dev_max_queries is not None and args.dev_max_queries < len(dev_qids):
        dev_qids = sorted(random.Random(0).sample(dev_qids, args.dev_max_queries))
    test_qids = sorted(q for q in queries["test"] if q in full_qrels["test"])
    candidates = {
        "test": {q: bm25["test"].get(q, {}) for q in test_qids},
        "dev": {q: bm25["dev"].get(q, {}) for q in dev_qids},
    }
    report = {
        "train_queries": len(queries["train"]),
        "train_queries_duplicating_test_or_dev": len(duplicates),
        "pooled_labels": pool_report.as_dict(),
        "train_queries_used": len(train_qids),
        "train_queries_with_empty_bm25": sum(1 for q in queries["train"] if not bm25["train"].get(q)),
        "train_queries_with_bm25_short_of_window": sum(1 for q in train_qids if len(bm25_train[q]) < BM25_WINDOW),
        "oracle_positives": sum(len(v) for v in oracle.values()),
        "oracle_pool_positives": sum(len(v) for v in oracle_pool.values()),
        "test_queries": len(test_qids),
        "test_queries_with_empty_bm25": sum(1 for q in test_qids if not candidates["test"][q]),
        "dev_queries": len(dev_qids),
    }
    log(
        f"pooled labels: {len(train_qids)} train queries used ({report['train_queries_duplicating_test_or_dev']} "
        f"duplicates of test/dev dropped, {pool_report.queries_without_pooled_positive} without a grade>=2 doc in the "
        f"BM25 top-{POOL_DEPTH}, {pool_report.queries_missing_from_run} with no BM25 hit); test "
        f"{len(test_qids)} queries ({report['test_queries_with_empty_bm25']} with no BM25 hit: they score 0 for "
        f"every reranker); dev {len(dev_qids)}"
    )
    write_json(work / "data_report.json", report)
    dup = set(duplicates)
    all_train_qids = sorted(q for q in queries["train"] if q in full_qrels["train"] and q not in dup)
    return Context(args, collection, docs, queries, full_qrels, candidates, pooled_path, oracle_path, runs,
                   train_qids, all_train_qids, {q: top(bm25["train"].get(q), 100) for q in all_train_qids}, report)


def source_row(ctx: Context, name: str, run: Mapping, window: int, seed: int = 0) -> dict:
    """nDCG@10 of the run against the full qrels and the FN rates of its sampled negatives.

    nDCG@10 is measured on every judged, non-duplicate train query (`ndcg10_train_full_qrels`, the criterion), and
    on the pooled-labelled ones (`ndcg10_pooled_queries`): those were *selected* for having a grade >= 2 doc in the
    BM25 top-10, so BM25 looks better there than it is, and no other run could fairly be compared with it there.
    """
    from rankface.data.ir import build_training_groups
    from rankface.data.mining import false_negative_rate
    from rankface.evaluation.ranking import evaluate
    from rankface.retrieval.trec import read_qrels

    pooled = read_qrels(ctx.pooled_qrels_path)
    queries = {q: ctx.queries["train"][q] for q in ctx.train_qids}
    full = {q: ctx.full_qrels["train"][q] for q in ctx.train_qids}
    all_full = {q: ctx.full_qrels["train"][q] for q in ctx.all_train_qids}
    groups, report = build_training_groups(
        queries, pooled, run, num_negatives=ctx.args.num_negatives, rank_window=(1, window), positives="top",
        seed=seed, doc_ids=ctx.docs.keys(),
    )
    # Every unlabelled doc of the window, not only the K sampled: the rate the sampling converges to.
    window_docs = {}
    for q in ctx.train_qids:
        ranked = list(top(run.get(q), window))
        window_docs[q] = [d for d in ranked if d not in pooled.get(q, {})]
    return {
        "source": name,
        "window": [1, window],
        "ndcg10_train_full_qrels": evaluate({q: run.get(q, {}) for q in ctx.all_train_qids}, all_full,
                                            ["nDCG@10"])["nDCG@10"],
        "ndcg10_pooled_queries": evaluate({q: run.get(q, {}) for q in ctx.train_qids}, full, ["nDCG@10"])["nDCG@10"],
        "fn_rate_grade1": false_negative_rate(groups, full, 1).rate,
        "fn_rate_grade2": false_negative_rate(groups, full, 2).rate,
        "fn_rate_grade1_whole_window": false_negative_rate(window_docs, full, 1).rate,
        "sampled_negatives": sum(len(g.negative_docids) for g in groups),
        "queries_used": report.queries_used,
        "queries_sampled_with_replacement": report.queries_sampled_with_replacement,
        "queries_without_candidates": report.queries_without_candidates,
    }


STRONG_RUN = "data/strong_source.train.run"  # TREC format; not *.trec, which stays git-ignored


def save_strong_run(ctx: Context, run: Mapping, window: int) -> str:
    """Write the strong source's top-`window` of every train query; returns its path relative to the results."""
    from rankface.retrieval.trec import write_run

    write_run(ctx.args.out / STRONG_RUN, {q: top(run.get(q), window) for q in ctx.all_train_qids if run.get(q)},
              tag="strong")
    return STRONG_RUN


CLEAN_STRONG_RUN = "data/clean_strong.train.run"  # committed: it depends on the regenerated dense-ft ranking below
DENSE_FT_DEEP = "data/dense-ft.plain__bm25-neg.seed0.train.top100.trec"
RRF_DEEP = "data/rrf_bm25_dense-ft.train.top100.trec"
CLEAN_REPORT = "data/clean_negatives.json"


def clean_strong_run(ctx: Context, source: dict) -> str:
    """The strong source with its false negatives replaced (`_r1_ceiling.clean_run`); its path in the results.

    Replacements come from below the strong window, so they need the dense-ft ranking deeper than the saved top-10:
    that ranking (`DENSE_FT_DEEP`, git-ignored) is regenerated by retraining the strong retriever (plain/bm25-neg,
    seed 0, same settings) when it is missing; the share of the saved top-10 it reproduces is saved beside it."""
    from _r1_ceiling import clean_run

    from rankface.retrieval.trec import read_qrels, read_run, write_run

    path = ctx.args.out / CLEAN_STRONG_RUN
    if path.is_file():
        return CLEAN_STRONG_RUN
    saved = read_run(ctx.args.out / source["run_file"])
    if source["name"] == "dense-ft":
        deep = read_run(dense_ft_deep_run(ctx, saved, source["window"]))
    elif (ctx.args.out / RRF_DEEP).is_file() and source["name"] == "rrf":  # kept beside the results when it was built
        deep = read_run(ctx.args.out / RRF_DEEP)
    else:
        raise SystemExit(f"clean/strong-neg needs the {source['name']} ranking below its window ({RRF_DEEP} for rrf); "
                         "it is missing")
    run, counts = clean_run(saved, source["window"], read_qrels(ctx.pooled_qrels_path), ctx.full_qrels["train"],
                            ctx.docs.keys(), deeper=window_then_deeper(saved, source["window"], deep))
    write_run(path, run, tag="clean-strong")
    save_clean_report(ctx, "strong", counts)
    return CLEAN_STRONG_RUN


def window_then_deeper(window_run: Mapping[str, Mapping[str, float]], window: int,
                       deep: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Each query's top-`window` of `window_run` (exactly what plain training read), then `deep`'s other documents
    in `deep`'s order: the ranking the replacements are taken from."""
    out = {}
    for q, scores in window_run.items():
        head = list(top(scores, window))
        tail = [d for d, _ in ranked(deep.get(q, {})) if d not in set(head)]
        out[q] = {d: float(len(head) + len(tail) - i) for i, d in enumerate(head + tail)}
    return out


def clean_bm25_run(ctx: Context) -> Path:
    """BM25's top-50 negatives with the false negatives replaced from its top-100 (`_r1_ceiling.clean_run`)."""
    from _r1_ceiling import clean_run

    from rankface.retrieval.trec import read_qrels, read_run, write_run

    path = ctx.args.out / "data" / "clean_bm25.train.trec"  # derived from BM25 alone: git-ignored, rebuilt at will
    if not path.is_file():
        window_run = read_run(ctx.runs["bm25"])  # exactly what plain/bm25-neg reads
        run, counts = clean_run(window_run, BM25_WINDOW, read_qrels(ctx.pooled_qrels_path), ctx.full_qrels["train"],
                                ctx.docs.keys(), deeper=window_then_deeper(window_run, BM25_WINDOW, ctx.bm25_train))
        write_run(path, run, tag="clean-bm25")
        save_clean_report(ctx, "bm25", counts)
    return path


def save_clean_report(ctx: Context, name: str, counts: dict) -> None:
    path = ctx.args.out / CLEAN_REPORT
    report = json.loads(path.read_text()) if path.is_file() else {}
    report[name] = counts
    write_json(path, report)
    log(f"clean {name} negatives: {counts}")


def dense_ft_deep_run(ctx: Context, saved: Mapping[str, Mapping[str, float]], window: int) -> Path:
    """The strong retriever's top-100 of every train query, regenerated when missing (see `clean_strong_run`)."""
    from _r1_runs import load_model, score_splits, training_arguments  # the runs module imports this one

    from rankface.training import train

    path = ctx.args.out / DENSE_FT_DEEP
    if path.is_file():
        return path
    from rankface.retrieval.trec import write_run

    output_dir = ctx.args.out / "models" / "dense-ft-regenerated"
    log("regenerating the strong retriever's top-100 (plain/bm25-neg seed 0, retrained; no record is saved)")
    train(training_arguments(ctx.args, ctx, "plain/bm25-neg", 0, output_dir))
    model = load_model(ctx.args, str(output_dir / "model"), corpus=ctx.docs)
    dense = score_splits(model, ctx, (), train_run_depth=100)["train_dense"]
    write_run(path, dense, tag="dense-ft")
    overlap = [len(set(top(dense.get(q), window)) & set(top(saved[q], window))) / max(1, len(top(saved[q], window)))
               for q in saved]
    write_json(ctx.args.out / "data" / "dense_ft_regenerated.json", {
        "why": "clean/strong-neg needs the strong retriever's ranking below its saved window; the retriever's model "
               "was not kept, so it was retrained with the same settings and seed",
        "saved_window_overlap_mean": statistics.fmean(overlap) if overlap else None,
        "queries": len(overlap)})
    log(f"regenerated dense-ft: mean overlap with the saved top-{window}: {statistics.fmean(overlap):.3f}")
    shutil.rmtree(output_dir, ignore_errors=True)
    return path


def build_strong_source(ctx: Context, store: Store) -> dict:
    """Measure the candidates, choose the `strong` source (criteria above), save the table and the run."""
    from _r1_runs import load_model, run_trained, score_splits  # the runs module imports this one

    from rankface.data.mining import fuse_runs
    from rankface.retrieval.trec import read_run, write_run

    path = ctx.args.out / "data" / "negative_sources.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == store.hash:
            return saved
    if ctx.args.encoder == "cross" or ctx.args.pool_labels != "one":
        return strong_source_from_bi(ctx, store, path)
    retriever = run_trained(ctx, store, "plain/bm25-neg", 0, keep_model=True)
    dense_path = ctx.args.out / "data" / "dense-ft.plain__bm25-neg.seed0.train.top100.trec"
    if not dense_path.is_file():  # the record exists from an earlier run but its dense run was not kept
        model_dir = ctx.args.out / "models" / "plain__bm25-neg__seed0" / "model"
        if not model_dir.is_dir():
            raise SystemExit(f"{dense_path} and {model_dir} are missing: delete {store.path('plain/bm25-neg', 0)} "
                             "to retrain the strong retriever")
        dense = score_splits(load_model(ctx.args, str(model_dir), corpus=ctx.docs), ctx, (),
                             train_run_depth=100)["train_dense"]
        write_run(dense_path, dense, tag="dense-ft")
    dense = read_run(dense_path)
    rrf = fuse_runs([ctx.bm25_train, dense], method="rrf", k=60, depth=100)
    rrf_path = ctx.args.out / RRF_DEEP
    write_run(rrf_path, rrf, tag="rrf")
    files = {"dense-ft": dense_path, "rrf": rrf_path}
    runs = {"dense-ft": dense, "rrf": rrf}
    rows = [source_row(ctx, "bm25", ctx.bm25_train, BM25_WINDOW)]  # its top-50 is the bm25 negatives run
    for name, window in STRONG_CANDIDATES:
        rows.append({**source_row(ctx, name, runs[name], window), "run_file": str(files[name])})
    base = rows[0]
    for row in rows[1:]:
        row["fn_ratio_to_bm25"] = row["fn_rate_grade1"] / base["fn_rate_grade1"] if base["fn_rate_grade1"] else None
        row["meets_criteria"] = bool(
            row["ndcg10_train_full_qrels"] >= base["ndcg10_train_full_qrels"] + NDCG_MARGIN
            and row["fn_ratio_to_bm25"] is not None and row["fn_ratio_to_bm25"] >= FN_RATIO
        )
    qualified = [r for r in rows[1:] if r["meets_criteria"]]
    if qualified:
        chosen, why = qualified[0], (
            f"first candidate (preference: same 1-50 window as BM25, dense before fusion) with nDCG@10 >= BM25 + "
            f"{NDCG_MARGIN} on the training queries and FN rate >= {FN_RATIO}x BM25's")
    else:
        better = [r for r in rows[1:] if r["ndcg10_train_full_qrels"] > base["ndcg10_train_full_qrels"]]
        pool = better or rows[1:]
        chosen = max(pool, key=lambda r: r["fn_ratio_to_bm25"] or 0.0)
        why = ("NO candidate met both criteria; fallback: the highest FN ratio among those "
               + ("beating BM25" if better else "measured (none beats BM25)"))
    # BM25 at the candidates' narrower windows: separates "a better retriever surfaces more false negatives" from
    # "a narrower window is denser in relevant documents".
    same_window = [source_row(ctx, "bm25", ctx.bm25_train, w) for w in sorted({w for _, w in STRONG_CANDIDATES})
                   if w != BM25_WINDOW]
    result = {
        "fingerprint": store.hash,
        "rows": rows,
        "bm25_same_window": same_window,
        "chosen": {"name": chosen["source"], "window": chosen["window"][1], "run_file": chosen["run_file"],
                   "criteria_met": chosen.get("meets_criteria", False), "why": why},
        "retriever": {"system": "plain/bm25-neg", "seed": 0, "test_ndcg10": retriever["test"]["aggregate"]["nDCG@10"]},
    }
    # The chosen run, cut to its window, is kept beside the results (and committed): a later session on another
    # machine trains the strong-negative systems from it without retraining the retriever.
    result["chosen"]["run_file"] = save_strong_run(ctx, runs[chosen["source"]], chosen["window"][1])
    write_json(path, result)
    log(f"strong source: {chosen['source']} ranks 1-{chosen['window'][1]} ({why})")
    shutil.rmtree(ctx.args.out / "models" / "plain__bm25-neg__seed0", ignore_errors=True)
    return result


def strong_source_from_bi(ctx: Context, store: Store, path: Path) -> dict:
    """The `strong` source R1-bi chose (its fine-tuned bi-encoder's run, kept in its results folder), for the
    cross-encoder R1 and for R1-bi with judged pools. A cross-encoder scores pairs and cannot search the corpus, so it
    cannot be its own retriever; with judged pools the same retriever keeps the comparison to R1-bi's one-label
    pools about the labels alone. The bm25 and chosen rows are re-measured here (the sampled false-negative rate
    depends on this run's K and labels)."""
    from rankface.retrieval.trec import read_run

    source_dir = Path(ctx.args.strong_from) if ctx.args.strong_from else RESULTS / "full-query-side"
    saved_path = source_dir / "data" / "negative_sources.json"
    if not saved_path.is_file():
        raise SystemExit(
            f"{saved_path} is missing: this run takes its strong source from R1-bi. Run first: python "
            f"benchmarks/pooling_bias.py --systems plain/bm25-neg --seeds 0 --sweep '' --k-sweep '' --results-dir "
            f"{source_dir} (or pass --strong-from with an R1-bi results folder)")
    saved = json.loads(saved_path.read_text())
    chosen = saved["chosen"]
    run = read_run(source_dir / chosen["run_file"])
    rows = [source_row(ctx, "bm25", ctx.bm25_train, BM25_WINDOW),
            {**source_row(ctx, chosen["name"], run, chosen["window"]), "run_file": STRONG_RUN}]
    base = rows[0]
    rows[1]["fn_ratio_to_bm25"] = rows[1]["fn_rate_grade1"] / base["fn_rate_grade1"] if base["fn_rate_grade1"] else None
    rows[1]["meets_criteria"] = bool(
        rows[1]["ndcg10_train_full_qrels"] >= base["ndcg10_train_full_qrels"] + NDCG_MARGIN
        and rows[1]["fn_ratio_to_bm25"] is not None and rows[1]["fn_ratio_to_bm25"] >= FN_RATIO)
    result = {
        "fingerprint": store.hash,
        "rows": rows,
        "bm25_same_window": [],
        "chosen": {**chosen, "run_file": save_strong_run(ctx, run, chosen["window"]),
                   "criteria_met": rows[1]["meets_criteria"],
                   "why": f"R1-bi's choice ({source_dir.name}, settings {saved.get('fingerprint')}): {chosen['why']}"},
        "retriever": saved["retriever"],
        "from": {"folder": source_dir.name, "fingerprint": saved.get("fingerprint")},
    }
    write_json(path, result)
    log(f"strong source: R1-bi's {chosen['name']} ranks 1-{chosen['window']} from {source_dir}")
    return result
