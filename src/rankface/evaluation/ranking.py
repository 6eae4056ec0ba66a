"""Ranking metrics with ir_measures (trec_eval conventions), per-query values kept for significance tests.

Conventions (those of `trec_eval -c`, the figures in the shared READMEs):
- every query in the qrels counts; a query missing from the run (or with an empty ranking) scores 0;
- run queries without any judgment are ignored;
- nDCG uses the grades as linear gains; R@k, AP and RR count grade >= 1 as relevant; `RR@k` written without an
  explicit `rel=` uses grade >= `rr_min_grade`;
- score ties are broken by docid descending for every measure (trec_eval's order, `rankface.utils.ties`, the order
  rankface writes runs in).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankface.utils.ties import ranked

__all__ = ["DEFAULT_MEASURES", "Comparison", "Evaluation", "compare_runs", "evaluate", "evaluations_to_json",
           "format_comparisons", "format_per_query", "format_table", "paired_ttest"]

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "AP")


@dataclass
class Evaluation:
    """Metric values of one run against one qrels.

    Attributes:
        aggregate: `{measure: mean over every qrels query}`.
        per_query: `{measure: {qid: value}}`, every qrels query present (0 where the run has nothing).
        num_queries: number of qrels queries averaged over.
        missing_queries: qrels queries absent from the run (or with an empty ranking); they count as 0.
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    num_queries: int
    missing_queries: list[str] = field(default_factory=list)

    def __getitem__(self, measure: str) -> float:
        return self.aggregate[measure]


def _parse(name: str, rr_min_grade: int):
    import ir_measures

    measure = ir_measures.parse_measure(name)
    # ir_measures' RR defaults to rel=1; apply the caller's relevance threshold unless the name sets one.
    if measure.NAME == "RR" and "rel" not in measure.params and rr_min_grade != 1:
        measure = measure(rel=rr_min_grade)
    return measure


def evaluate(run: Mapping[str, Mapping[str, float] | Sequence[Any]], qrels: Mapping[str, Mapping[str, int]],
             measures: Sequence[str] = DEFAULT_MEASURES, rr_min_grade: int = 1) -> Evaluation:
    """Score a run against qrels with ir_measures.

    Args:
        run: `{qid: {docid: score}}` or `{qid: [Hit, ...]}` (higher is better; ties go to the larger docid, as
            in trec_eval, for every measure).
        qrels: `{qid: {docid: grade}}`.
        measures: ir_measures names, e.g. `nDCG@10`, `RR@10`, `R@100`, `AP`, `P@5`, `RR(rel=2)@10`; the results
            are keyed by these strings.
        rr_min_grade: the lowest grade that counts as relevant for `RR` measures given without `rel=`.

    Returns:
        An `Evaluation` averaged over every query in `qrels`.
    """
    import ir_measures

    if not qrels:
        raise ValueError("qrels are empty: nothing to evaluate against")
    if isinstance(measures, str):
        measures = [measures]
    names = list(dict.fromkeys(measures))
    if not names:
        raise ValueError("no measures given")
    parsed = {name: _parse(name, rr_min_grade) for name in names}
    qrels_list = [ir_measures.Qrel(str(q), str(d), int(g)) for q, docs in qrels.items() for d, g in docs.items()]
    judged = {str(q) for q in qrels}
    # ir_measures' providers break score ties differently (pytrec_eval: docid descending, like trec_eval; its
    # msmarco provider, used for RR@k: docid ascending). Ranking each query once here by rankface's one rule
    # (trec_eval's) and passing strictly decreasing scores makes every measure see the same order.
    run_list = []
    for q, docs in run.items():
        if str(q) not in judged:
            continue
        if not isinstance(docs, Mapping):  # a ranked list of hits (`Hit`, `RerankedHit`)
            docs = {h.docid: h.score for h in docs}
        ordered = ranked({str(d): s for d, s in docs.items()})
        run_list.extend(ir_measures.ScoredDoc(str(q), d, float(len(ordered) - i)) for i, (d, _) in enumerate(ordered))
    per_query: dict[str, dict[str, float]] = {name: dict.fromkeys(sorted(judged), 0.0) for name in names}
    by_measure: dict = {}
    for name, m in parsed.items():  # two names may parse to one measure (e.g. `R@100` and `R(rel=1)@100`)
        by_measure.setdefault(m, []).append(name)
    if run_list:
        for metric in ir_measures.iter_calc(list(by_measure), qrels_list, run_list):
            for name in by_measure[metric.measure]:
                per_query[name][metric.query_id] = float(metric.value)
    present = {str(q) for q, docs in run.items() if docs}
    aggregate = {name: math.fsum(values.values()) / len(values) for name, values in per_query.items()}
    return Evaluation(aggregate=aggregate, per_query=per_query, num_queries=len(judged),
                      missing_queries=sorted(judged - present))


def paired_ttest(a: Evaluation, b: Evaluation, measure: str) -> tuple[float, float]:
    """Two-sided paired t-test of `measure` between two systems over the queries both were scored on.

    Returns:
        `(t, p)`; `t > 0` means `a` scores higher. Identical per-query values give `(0.0, 1.0)`.
    """
    from scipy import stats

    qa, qb = a.per_query[measure], b.per_query[measure]
    common = sorted(set(qa) & set(qb))
    if len(common) < 2:
        raise ValueError(f"a paired t-test needs at least 2 common queries, found {len(common)}")
    xa = [qa[q] for q in common]
    xb = [qb[q] for q in common]
    if all(x == y for x, y in zip(xa, xb, strict=True)):
        return 0.0, 1.0  # scipy returns nan for zero variance; no difference is no evidence of one
    result = stats.ttest_rel(xa, xb)
    return float(result.statistic), float(result.pvalue)


def format_table(rows: Mapping[str, Evaluation], measures: Iterable[str] | None = None, digits: int = 4) -> str:
    """A Markdown table: one row per system, one column per measure (plus the number of queries)."""
    if not rows:
        raise ValueError("no systems to tabulate")
    measures = list(measures) if measures is not None else list(next(iter(rows.values())).aggregate)
    header = "| system | " + " | ".join(measures) + " | queries |"
    sep = "|---|" + "---:|" * len(measures) + "---:|"
    lines = [header, sep]
    for system, ev in rows.items():
        missing = [m for m in measures if m not in ev.aggregate]
        if missing:
            raise KeyError(f"system {system!r} was not evaluated on {missing}; it has {list(ev.aggregate)}")
        cells = " | ".join(f"{ev.aggregate[m]:.{digits}f}" for m in measures)
        lines.append(f"| {system} | {cells} | {ev.num_queries} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """A paired t-test of one measure between two systems over the same queries.

    Attributes:
        a, b: the systems' names; `mean_difference` and `t` are positive when `a` scores higher.
        p: two-sided p-value, uncorrected for the number of comparisons made.
    """

    a: str
    b: str
    measure: str
    mean_difference: float
    t: float
    p: float
    queries: int


def compare_runs(rows: Mapping[str, Evaluation], measures: Iterable[str]) -> list[Comparison]:
    """Paired t-tests (`paired_ttest`) of every pair of systems, in the order given, for every measure."""
    comparisons = []
    for measure in measures:
        for (name_a, a), (name_b, b) in itertools.combinations(rows.items(), 2):
            qa, qb = a.per_query[measure], b.per_query[measure]
            common = sorted(set(qa) & set(qb))
            t, p = paired_ttest(a, b, measure)
            diff = math.fsum(qa[q] - qb[q] for q in common) / len(common)
            comparisons.append(Comparison(name_a, name_b, measure, diff, t, p, len(common)))
    return comparisons


def format_comparisons(comparisons: Sequence[Comparison], digits: int = 4) -> str:
    """A Markdown table of paired t-tests: one row per (pair of systems, measure)."""
    lines = ["| system A | system B | measure | mean A - B | t | p | queries |", "|---|---|---|---:|---:|---:|---:|"]
    for c in comparisons:
        lines.append(f"| {c.a} | {c.b} | {c.measure} | {c.mean_difference:+.{digits}f} | {c.t:.3f} | {c.p:.4g} | "
                     f"{c.queries} |")
    return "\n".join(lines)


def format_per_query(rows: Mapping[str, Evaluation], measures: Iterable[str], digits: int = 4) -> str:
    """Markdown tables of per-query values: one table per measure, one row per qrels query, one column per system."""
    systems = list(rows)
    tables = []
    for measure in measures:
        qids = sorted(set().union(*(rows[s].per_query[measure] for s in systems)))
        lines = [f"| {measure} | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
        for qid in qids:
            cells = " | ".join(f"{rows[s].per_query[measure].get(qid, 0.0):.{digits}f}" for s in systems)
            lines.append(f"| {qid} | {cells} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def evaluations_to_json(rows: Mapping[str, Evaluation], measures: Iterable[str], per_query: bool = False,
                        comparisons: Sequence[Comparison] = ()) -> dict[str, Any]:
    """A JSON-ready summary: per system its means, query counts and (with `per_query`) every query's value; the
    paired tests if any were made."""
    measures = list(measures)
    systems = {}
    for name, ev in rows.items():
        entry: dict[str, Any] = {"aggregate": {m: ev.aggregate[m] for m in measures}, "num_queries": ev.num_queries,
                                 "missing_queries": list(ev.missing_queries)}
        if per_query:
            entry["per_query"] = {m: dict(ev.per_query[m]) for m in measures}
        systems[name] = entry
    out: dict[str, Any] = {"measures": measures, "systems": systems}
    if comparisons:
        out["paired_ttests"] = [{"a": c.a, "b": c.b, "measure": c.measure, "mean_difference": c.mean_difference,
                                 "t": c.t, "p": c.p, "queries": c.queries} for c in comparisons]
    return out
