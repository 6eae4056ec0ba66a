"""Sparse labels and negative sources for pooling-bias experiments (protocol R1, CET).

- `simulate_pooled_labels`: turn dense graded qrels into the sparse labels a pooled collection gives (one judged
  positive per query, found in the top of a first-stage run), so that false negatives can be *counted*;
- `dense_run`, `fuse_runs`: negative sources besides BM25 (a bi-encoder over the corpus, reciprocal-rank fusion);
- `false_negative_rate`: the share of mined negatives that the dense qrels grade relevant.

Negatives themselves are sampled by `rankface.data.ir.build_training_groups` (rank window, labelled positives
removed, every skip counted); this module does not duplicate it. Runs are `{qid: {docid: score}}`, qrels
`{qid: {docid: grade}}`, as `rankface.data.trec` reads them.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankface.data.ir import CountingReport
from rankface.utils.io import write_json
from rankface.utils.ties import ranked

logger = logging.getLogger(__name__)

__all__ = [
    "FalseNegativeReport",
    "PoolingReport",
    "dense_run",
    "false_negative_rate",
    "fuse_runs",
    "pooled_labels_main",
    "simulate_pooled_labels",
]

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def _ranked(docs: Mapping[str, float]) -> list[str]:
    # rankface's one order (`utils.ties`): the one `write_run`, `build_training_groups` and evaluation use.
    return [d for d, _ in ranked(docs)]


# ---------------------------------------------------------------------------------------------- pooled labels
@dataclass
class PoolingReport(CountingReport):
    """What `simulate_pooled_labels` did with every query; query counts add up to `queries_total`:

    `queries_total = queries_labelled + queries_excluded + queries_without_pooled_positive + queries_without_qrels
    + queries_missing_from_run`.
    """

    pool_depth: int = 10
    min_grade: int = 2
    queries_total: int = 0
    queries_labelled: int = 0
    queries_excluded: int = 0
    queries_without_pooled_positive: int = 0
    queries_without_qrels: int = 0
    queries_missing_from_run: int = 0
    queries_with_short_pool: int = 0
    pooled_docs_unknown_to_corpus: int = 0
    full_positives_missing_from_corpus: int = 0
    positive_grades: dict[str, int] = field(default_factory=dict)
    positive_rank_mean: float = 0.0
    relevant_in_pool_mean: float = 0.0
    relevant_unlabelled_share: float = 0.0
    examples: dict[str, list[str]] = field(default_factory=dict)


def simulate_pooled_labels(
    full_qrels: Qrels,
    pool_run: Run,
    pool_depth: int = 10,
    min_grade: int = 2,
    queries: Iterable[str] | None = None,
    doc_ids: Collection[str] | None = None,
    exclude: Iterable[str] = (),
) -> tuple[dict[str, dict[str, int]], PoolingReport]:
    """Sparse labels as a pooled collection would give them (benchmarks.md, R1 "Pooled labels").

    For each query the pool is the top-`pool_depth` of `pool_run` (score descending, ties by docid). Its labelled
    positive is the highest-graded pooled document with grade >= `min_grade` (ties: the better rank). Exactly one
    positive per query, every other document unlabelled; queries with none are dropped and counted.

    Args:
        full_qrels: dense graded judgments `{qid: {docid: grade}}` (kept for evaluation only).
        pool_run: the pooling run `{qid: {docid: score}}` (R1: BM25 k1 0.9, b 0.4).
        pool_depth: `P`, the pool depth.
        min_grade: lowest grade a labelled positive may have.
        queries: the query ids to label, in order; default the run's queries, then the qrels' others.
        doc_ids: the corpus's document ids; pooled documents outside it are skipped and counted.
        exclude: query ids to leave out, counted (R1: train queries whose text equals a test query's).

    Returns:
        `(pooled_qrels, report)`: `{qid: {positive_docid: its grade}}` and the `PoolingReport`.
    """
    if pool_depth < 1:
        raise ValueError(f"pool_depth must be >= 1, got {pool_depth}")
    if min_grade < 1:
        raise ValueError(f"min_grade must be >= 1 (grade 0 is judged non-relevant), got {min_grade}")
    if queries is None:
        queries = list(pool_run) + [q for q in full_qrels if q not in pool_run]
    excluded = {str(q) for q in exclude}
    report = PoolingReport(pool_depth=pool_depth, min_grade=min_grade)
    pooled: dict[str, dict[str, int]] = {}
    ranks, in_pool, unlabelled_share = [], [], []
    for qid in queries:
        report.queries_total += 1
        if qid in excluded:
            report.queries_excluded += 1
            continue
        judged = full_qrels.get(qid)
        if not judged:
            report.queries_without_qrels += 1
            report._note("without_qrels", qid)
            continue
        if doc_ids is not None:
            report.full_positives_missing_from_corpus += sum(
                1 for d, g in judged.items() if g >= 1 and d not in doc_ids
            )
        docs = pool_run.get(qid)
        if not docs:
            report.queries_missing_from_run += 1
            report._note("missing_from_run", qid)
            continue
        pool = []
        for docid in _ranked(docs)[:pool_depth]:
            if doc_ids is not None and docid not in doc_ids:
                report.pooled_docs_unknown_to_corpus += 1
                report._note("unknown_docids", qid)
                continue
            pool.append(docid)
        if len(docs) < pool_depth:
            report.queries_with_short_pool += 1
            report._note("short_pool", qid)
        relevant = [(rank, d) for rank, d in enumerate(pool, start=1) if judged.get(d, 0) >= min_grade]
        if not relevant:
            report.queries_without_pooled_positive += 1
            report._note("without_pooled_positive", qid)
            continue
        rank, positive = min(relevant, key=lambda rd: (-judged[rd[1]], rd[0]))
        grade = judged[positive]
        pooled[qid] = {positive: grade}
        report.queries_labelled += 1
        report.positive_grades[str(grade)] = report.positive_grades.get(str(grade), 0) + 1
        ranks.append(rank)
        in_pool.append(len(relevant))
        all_relevant = sum(1 for g in judged.values() if g >= 1)
        unlabelled_share.append((all_relevant - 1) / all_relevant)
    if ranks:
        report.positive_rank_mean = sum(ranks) / len(ranks)
        report.relevant_in_pool_mean = sum(in_pool) / len(in_pool)
        report.relevant_unlabelled_share = sum(unlabelled_share) / len(unlabelled_share)
    return pooled, report


# ---------------------------------------------------------------------------------------------- runs
def dense_run(
    bi_encoder, queries: Mapping[str, str], corpus: Mapping[str, str], k: int = 100, **search_options
) -> dict[str, dict[str, float]]:
    """Exact dense retrieval: the top-`k` documents of `corpus` per query by cosine similarity.

    Args:
        bi_encoder: a `rankface.models.bi_encoder.BiEncoder`, or the path of a checkpoint it loads
            (e.g. `rankface.paths.minilm_path()` for zero-shot all-MiniLM-L6-v2).
        queries: `{qid: text}`.
        corpus: `{docid: text}`.
        k: run depth.
        **search_options: passed to `BiEncoder.search` (batch_size, show_progress_bar, precision).

    Returns:
        A run `{qid: {docid: cosine}}`.
    """
    from rankface.models.bi_encoder import BiEncoder

    if isinstance(bi_encoder, str | os.PathLike):
        bi_encoder = BiEncoder.from_pretrained(bi_encoder)
    if not hasattr(bi_encoder, "search"):
        raise TypeError(f"bi_encoder must be a BiEncoder or a checkpoint path, got {type(bi_encoder).__name__}")
    if not corpus:
        raise ValueError("dense_run needs a non-empty corpus")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return bi_encoder.search(queries, corpus, k=k, **search_options)


def fuse_runs(
    runs: Sequence[Run],
    method: str = "rrf",
    k: int = 60,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> dict[str, dict[str, float]]:
    """Fuse runs per query.

    - `rrf` (Cormack, Clarke, Buettcher, SIGIR 2009): `score(d) = sum_i w_i / (k + rank_i(d))`, a document absent
      from run i contributing nothing;
    - `combsum`: `sum_i w_i * minmax_i(score_i(d))`, each run's scores min-max normalised per query.

    Args:
        runs: two or more runs `{qid: {docid: score}}`; a query present in any run is fused.
        method: `"rrf"` or `"combsum"`.
        k: the RRF constant.
        weights: one weight per run (default all 1).
        depth: keep the fused top-`depth` per query (default all).
    """
    if method not in ("rrf", "combsum"):
        raise ValueError(f"method must be 'rrf' or 'combsum', got {method!r}")
    if len(runs) < 1:
        raise ValueError("fuse_runs needs at least one run")
    weights = [1.0] * len(runs) if weights is None else list(weights)
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    qids: list[str] = []
    seen: set[str] = set()
    for run in runs:
        for qid in run:
            if qid not in seen:
                seen.add(qid)
                qids.append(qid)
    fused: dict[str, dict[str, float]] = {}
    for qid in qids:
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights):
            docs = run.get(qid) or {}
            if not docs:
                continue
            if method == "rrf":
                for rank, docid in enumerate(_ranked(docs), start=1):
                    scores[docid] = scores.get(docid, 0.0) + weight / (k + rank)
            else:
                lo, hi = min(docs.values()), max(docs.values())
                span = hi - lo
                for docid, score in docs.items():
                    # A run whose scores are all equal says nothing about order: every doc gets 1.
                    norm = (float(score) - lo) / span if span > 0 else 1.0
                    scores[docid] = scores.get(docid, 0.0) + weight * norm
        order = ranked(scores)
        fused[qid] = dict(order[:depth] if depth is not None else order)
    return fused


# ---------------------------------------------------------------------------------------------- false negatives
@dataclass
class FalseNegativeReport:
    """Share of mined negatives that the dense qrels grade >= `min_grade`.

    Negatives of queries absent from the full qrels cannot be checked: they are counted in
    `negatives_unjudged_queries` and left out of the denominator.
    """

    min_grade: int
    negatives: int = 0
    false_negatives: int = 0
    rate: float = 0.0
    queries: int = 0
    negatives_unjudged_queries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _negatives_by_query(negatives) -> dict[str, list[str]]:
    """Accepts `TrainingGroup`s, `(qid, docid)` pairs, or `{qid: [docids]}`; duplicates are kept (sampled twice)."""
    if isinstance(negatives, Mapping):
        return {str(q): list(ds) for q, ds in negatives.items()}
    out: dict[str, list[str]] = {}
    for i, item in enumerate(negatives):
        if hasattr(item, "negative_docids"):
            out.setdefault(item.qid, []).extend(item.negative_docids)
        elif isinstance(item, tuple | list) and len(item) == 2:
            out.setdefault(str(item[0]), []).append(str(item[1]))
        else:
            raise TypeError(
                f"negatives[{i}] must be a TrainingGroup or a (qid, docid) pair, got {type(item).__name__}: {item!r}"
            )
    return out


def false_negative_rate(negatives, full_qrels: Qrels, min_grade: int = 1) -> FalseNegativeReport:
    """How many sampled negatives are in fact relevant according to the dense judgments.

    Args:
        negatives: `TrainingGroup`s (from `build_training_groups`), `(qid, docid)` pairs or `{qid: [docids]}`.
        full_qrels: the dense qrels `{qid: {docid: grade}}`.
        min_grade: grade from which a judged document counts as relevant (R1 reports 1 and 2).
    """
    if min_grade < 1:
        raise ValueError(f"min_grade must be >= 1, got {min_grade}")
    report = FalseNegativeReport(min_grade=min_grade)
    for qid, docids in _negatives_by_query(negatives).items():
        judged = full_qrels.get(qid)
        if not judged:
            report.negatives_unjudged_queries += len(docids)
            continue
        report.queries += 1
        report.negatives += len(docids)
        report.false_negatives += sum(1 for d in docids if judged.get(d, 0) >= min_grade)
    report.rate = report.false_negatives / report.negatives if report.negatives else 0.0
    return report


# ---------------------------------------------------------------------------------------------- CLI
def pooled_labels_main(argv: Sequence[str] | None = None) -> int:
    """`rankface pool-labels`: write the simulated pooled qrels (and a JSON report) from dense qrels and a run.

    The pool run is a TREC run file (`--run`), or BM25 over a collection's split (`--collection`, `--split`), the
    R1 setting. Output files are written atomically.
    """
    parser = argparse.ArgumentParser(
        prog="rankface pool-labels",
        description="Simulate sparse pooled labels: one judged positive per query from the top-P of a run.",
    )
    parser.add_argument("--qrels", help="dense graded qrels (TREC); default the collection split's qrels")
    parser.add_argument("--run", help="pool run (TREC); default BM25 of --collection/--split")
    parser.add_argument("--collection", help="collection folder or ir_datasets id (corpus ids, BM25 pool, qrels)")
    parser.add_argument("--split", default="train", help="split of --collection (default: train)")
    parser.add_argument("--pool-depth", type=int, default=10, help="P: pool = top-P of the run (default 10)")
    parser.add_argument("--min-grade", type=int, default=2, help="lowest grade of the labelled positive (default 2)")
    parser.add_argument("--k1", type=float, default=0.9, help="BM25 k1 for the default pool (default 0.9)")
    parser.add_argument("--b", type=float, default=0.4, help="BM25 b for the default pool (default 0.4)")
    parser.add_argument("--cache-dir", default="~/.cache/rankface", help="index and run cache for the BM25 pool")
    parser.add_argument(
        "--drop-duplicates-of",
        metavar="SPLIT",
        help="leave out queries whose text equals a query of this split of --collection (R1: test)",
    )
    parser.add_argument("--output", required=True, help="pooled qrels to write (TREC)")
    parser.add_argument("--report", help="JSON report to write (default: <output>.report.json)")
    args = parser.parse_args(argv)

    from rankface.data.trec import read_qrels, read_run, write_qrels

    collection = None
    if args.collection:
        from rankface.data.ir import load_collection

        collection = load_collection(args.collection)
    if args.qrels:
        full_qrels = read_qrels(args.qrels)
    elif collection is not None:
        full_qrels = collection.qrels(args.split)
    else:
        parser.error("give --qrels, or --collection whose split has qrels")
    if args.run:
        pool_run = read_run(args.run)
    elif collection is not None:
        from rankface.retrieval.first_stage import bm25_run

        pool_run = bm25_run(
            collection, args.split, depth=args.pool_depth, cache_dir=args.cache_dir, k1=args.k1, b=args.b
        )
    else:
        parser.error("give --run, or --collection to pool with BM25")
    queries = list(collection.queries(args.split)) if collection is not None else None
    doc_ids = collection.doc_ids() if collection is not None else None
    exclude: list[str] = []
    if args.drop_duplicates_of:
        if collection is None:
            parser.error("--drop-duplicates-of needs --collection")
        texts = {_normalise(t) for t in collection.queries(args.drop_duplicates_of).values()}
        exclude = [q for q, t in collection.queries(args.split).items() if _normalise(t) in texts]
    pooled, report = simulate_pooled_labels(
        full_qrels,
        pool_run,
        pool_depth=args.pool_depth,
        min_grade=args.min_grade,
        queries=queries,
        doc_ids=doc_ids,
        exclude=exclude,
    )
    output = Path(args.output)
    write_qrels(output, pooled)
    report_path = Path(args.report) if args.report else output.with_name(output.name + ".report.json")
    write_json(report_path, report.as_dict())
    print(
        f"pooled labels: {report.queries_labelled}/{report.queries_total} queries labelled "
        f"({report.queries_without_pooled_positive} without a grade>={args.min_grade} doc in the top-{args.pool_depth}, "
        f"{report.queries_missing_from_run} missing from the run, {report.queries_without_qrels} without qrels) "
        f"-> {output} (report {report_path})"
    )
    return 0


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())
