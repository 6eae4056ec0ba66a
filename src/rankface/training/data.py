"""What reranker training reads: training groups mined from a first-stage run, and evaluation candidates."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rankface.data.ir import IRCollection, build_training_groups, load_collection
from rankface.paths import resolve_collection
from rankface.retrieval.first_stage import bm25_run
from rankface.retrieval.trec import read_qrels, read_run


@dataclass(frozen=True)
class GradedGroup:
    """A query with `D` first-stage candidates and their qrels grades (0 for unjudged), for the graded listwise loss.

    `positive_docid` / `negative_docids` name the same documents in the same order, so the text collation that
    serves one-positive groups serves these too; only the loss reads `grades`.
    """

    qid: str
    docids: tuple[str, ...]
    grades: tuple[int, ...]

    @property
    def positive_docid(self) -> str:
        return self.docids[0]

    @property
    def negative_docids(self) -> tuple[str, ...]:
        return self.docids[1:]


def build_graded_groups(queries, qrels, run, size: int, rank_window: tuple[int, int], doc_ids, seed: int):
    """One `GradedGroup` per query: its best-graded candidate of the run window (ties: better rank) and `size - 1`
    others drawn from the window (seeded), each with its grade. Queries without a graded candidate are skipped.

    Returns `(groups, report)`, the report counting what happened to every query.
    """
    from rankface.utils.ties import ranked

    rng = random.Random(seed)
    lo, hi = rank_window
    groups, report = [], {"queries_total": len(queries), "queries_used": 0, "queries_without_graded_candidate": 0,
                          "queries_with_short_window": 0}
    for qid in queries:
        window = [d for d, _ in ranked(run.get(qid, {}))[lo - 1 : hi] if d in doc_ids]
        judged = qrels.get(qid, {})
        graded = [d for d in window if judged.get(d, 0) > 0]
        if not graded:
            report["queries_without_graded_candidate"] += 1
            continue
        best = max(graded, key=lambda d: judged[d])  # max keeps the first (best-ranked) of equal grades
        others = [d for d in window if d != best]
        if len(others) < size - 1:
            report["queries_with_short_window"] += 1
            others = others + rng.choices(others or [best], k=size - 1 - len(others))
        chosen = [best, *rng.sample(others, size - 1)]
        groups.append(GradedGroup(qid, tuple(chosen), tuple(int(judged.get(d, 0)) for d in chosen)))
        report["queries_used"] += 1
    report["groups"] = len(groups)
    return groups, report


@dataclass
class TrainingData:
    collection: IRCollection
    docs: dict[str, str]
    train_queries: dict[str, str]
    groups: list  # list[TrainingGroup]
    train_run: dict[str, dict[str, float]]  # the first stage the negatives came from
    group_report: dict
    eval_queries: dict[str, str]
    eval_qrels: dict[str, dict[str, int]]
    eval_candidates: dict[str, dict[str, float]]
    train_qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # graded judgments of the training split
    selection_run: dict[str, dict[str, float]] | None = None  # what CET's MLP selection model reads (None: train_run)
    groups_of_epoch: Callable[[int], list] | None = None  # with resample_each_epoch: the groups drawn for an epoch

    def start_epoch(self, epoch: int) -> None:
        """Redraw the groups for `epoch` (a no-op unless resampling); the count stays, so the loader's order does."""
        if self.groups_of_epoch is None:
            return
        groups = self.groups_of_epoch(epoch)
        if len(groups) != len(self.groups):
            raise RuntimeError(f"epoch {epoch} drew {len(groups)} groups, not {len(self.groups)}")
        self.groups = groups

    @property
    def selection_features_run(self) -> dict[str, dict[str, float]]:
        """The run whose ranks and scores CET's MLP selection model reads: `cet_selection_run`, else the negatives'."""
        return self.train_run if self.selection_run is None else self.selection_run

    def group_texts(self, groups: Sequence) -> tuple[list[str], list[list[str]]]:
        """`(queries, [[positive, negative_1, ..., negative_K], ...])` for a batch of groups."""
        queries = [self.train_queries[g.qid] for g in groups]
        documents = [[self.docs[g.positive_docid], *(self.docs[d] for d in g.negative_docids)] for g in groups]
        return queries, documents


def training_queries(collection: IRCollection, split: str, exclude_queries_in: Sequence[str] = (),
                     max_queries: int | None = None, seed: int = 42) -> dict[str, str]:
    """`{qid: text}` that a run trains on: `split`'s queries less those whose text is also a query of one of the
    `exclude_queries_in` splits, then at most `max_queries` of them (drawn with `seed`)."""
    queries = dict(collection.queries(split))
    excluded = _texts_of_other_splits(collection, exclude_queries_in)
    queries = {q: t for q, t in queries.items() if t not in excluded}
    if max_queries is not None and max_queries < len(queries):
        chosen = random.Random(seed).sample(sorted(queries), max_queries)
        queries = {q: queries[q] for q in sorted(chosen)}
    return queries


def prepare_training_data(args) -> TrainingData:
    """Load the collection, mine negatives, build groups and the evaluation candidates, as `args` says."""
    collection = load_collection(resolve_collection(args.collection))
    docs = collection.docs()
    train_queries = training_queries(collection, args.train_split, args.exclude_queries_in, args.max_train_queries,
                                     args.seed)
    qrels = read_qrels(args.train_qrels) if args.train_qrels else collection.qrels(args.train_split)
    if args.negatives_run:
        run = read_run(args.negatives_run)
    else:
        run = bm25_run(collection, args.train_split, depth=args.negatives_to_rank, cache_dir=args.cache_dir)
    window = (args.negatives_from_rank, args.negatives_to_rank)

    def groups_for(seed: int) -> tuple[list, dict]:
        if args.positives == "graded":
            return build_graded_groups(train_queries, qrels, run, size=args.num_negatives + 1, rank_window=window,
                                       doc_ids=docs.keys(), seed=seed)
        groups, report = build_training_groups(
            train_queries, qrels, run, num_negatives=args.num_negatives, rank_window=window, positives=args.positives,
            min_positive_grade=args.min_positive_grade, doc_ids=docs.keys(), seed=seed,
        )
        return groups, report.as_dict()

    groups, report = groups_for(args.seed)
    if not groups:
        kind = "graded training groups" if args.positives == "graded" else "training groups"
        raise ValueError(f"no {kind} could be built from split {args.train_split!r}: {report}")
    data = _with_evaluation(args, collection, docs, train_queries, qrels, groups, run, report)
    if getattr(args, "resample_each_epoch", False):
        data.groups_of_epoch = lambda epoch: groups_for(epoch_seed(args.seed, epoch))[0]
    return data


def epoch_seed(seed: int, epoch: int) -> int:
    """The group-sampling seed of `epoch` when groups are redrawn each epoch; epoch 0 keeps `seed` itself."""
    return seed + 1_000_003 * epoch


def _with_evaluation(args, collection, docs, train_queries, train_qrels, groups, run, group_report: dict) -> TrainingData:
    """The training data plus the evaluation split's queries, qrels and BM25 candidates, as `args` says."""
    eval_queries, eval_qrels, eval_candidates = {}, {}, {}
    if args.eval_split:
        eval_queries = dict(collection.queries(args.eval_split))
        eval_qrels = collection.qrels(args.eval_split)
        eval_queries = {q: t for q, t in eval_queries.items() if q in eval_qrels}
        if args.eval_max_queries is not None and args.eval_max_queries < len(eval_queries):
            chosen = random.Random(args.seed).sample(sorted(eval_queries), args.eval_max_queries)
            eval_queries = {q: eval_queries[q] for q in sorted(chosen)}
        eval_qrels = {q: eval_qrels[q] for q in eval_queries}
        full = bm25_run(collection, args.eval_split, depth=args.eval_depth, cache_dir=args.cache_dir)
        eval_candidates = {q: full.get(q, {}) for q in eval_queries}
    return TrainingData(
        collection=collection,
        docs=docs,
        train_queries=train_queries,
        groups=groups,
        train_run=run,
        group_report=group_report,
        eval_queries=eval_queries,
        eval_qrels=eval_qrels,
        eval_candidates=eval_candidates,
        train_qrels={q: train_qrels.get(q, {}) for q in train_queries},
        selection_run=read_run(args.cet_selection_run) if getattr(args, "cet_selection_run", None) else None,
    )


def _texts_of_other_splits(collection: IRCollection, splits: Sequence[str]) -> set[str]:
    texts: set[str] = set()
    for split in splits:
        texts.update(collection.queries(split).values())
    return texts
