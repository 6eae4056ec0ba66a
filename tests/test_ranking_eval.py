"""evaluate() (ir_measures) against metrics written out here by hand, trec_eval conventions included."""

from __future__ import annotations

import math
import random

import pytest

from rankface.evaluation.ranking import Evaluation, evaluate, format_table, paired_ttest
from rankface.retrieval.lucene import Hit


# ---------------------------------------------------------------- independent reference (trec_eval semantics)
def _order(docs):
    # trec_eval sorts by score descending, ties by docid descending
    return [d for d, _ in sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def ref_ndcg(ranked, grades, k):
    gains = [max(grades.get(d, 0), 0) for d in ranked[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def ref_rr(ranked, grades, k, min_grade):
    for i, d in enumerate(ranked[:k]):
        if grades.get(d, 0) >= min_grade:
            return 1.0 / (i + 1)
    return 0.0


def ref_recall(ranked, grades, k):
    rel = {d for d, g in grades.items() if g >= 1}
    return len(rel & set(ranked[:k])) / len(rel) if rel else 0.0


def ref_ap(ranked, grades):
    rel = {d for d, g in grades.items() if g >= 1}
    if not rel:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranked):
        if d in rel:
            hits += 1
            total += hits / (i + 1)
    return total / len(rel)


def reference(run, qrels, rr_min_grade=1):
    per = {"nDCG@10": {}, "RR@10": {}, "R@100": {}, "AP": {}}
    for qid, grades in qrels.items():
        ranked = _order(run.get(qid, {}))
        per["nDCG@10"][qid] = ref_ndcg(ranked, grades, 10)
        per["RR@10"][qid] = ref_rr(ranked, grades, 10, rr_min_grade)
        per["R@100"][qid] = ref_recall(ranked, grades, 100)
        per["AP"][qid] = ref_ap(ranked, grades)
    return per


@pytest.fixture(scope="module")
def synthetic():
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(150)]
    qrels, run = {}, {}
    for q in range(12):
        qid = f"q{q}"
        judged = rng.sample(docs, 25)
        qrels[qid] = {d: rng.choice([0, 0, 1, 2, 3]) for d in judged}
        if q < 10:  # q10, q11 are missing from the run: they must count as 0
            ranked = rng.sample(docs, 120)
            # integer-ish scores create ties, which must be broken the trec_eval way
            run[qid] = {d: float(rng.randint(0, 40)) for d in ranked}
    run["q_unjudged"] = {"d1": 1.0}  # ignored: no judgments
    qrels["q_all_zero"] = {"d3": 0, "d4": 0}  # judged but nothing relevant: counts, scores 0
    run["q_all_zero"] = {"d3": 2.0}
    return run, qrels


def test_matches_independent_implementation(synthetic):
    run, qrels = synthetic
    ev = evaluate(run, qrels)
    ref = reference(run, qrels)
    assert ev.num_queries == len(qrels) == 13
    assert set(ev.missing_queries) == {"q10", "q11"}
    for measure, values in ref.items():
        assert set(ev.per_query[measure]) == set(qrels)
        for qid, value in values.items():
            assert ev.per_query[measure][qid] == pytest.approx(value, abs=1e-9), (measure, qid)
        assert ev.aggregate[measure] == pytest.approx(sum(values.values()) / len(qrels), abs=1e-9)
    assert ev.per_query["nDCG@10"]["q10"] == 0.0
    assert ev["AP"] == ev.aggregate["AP"]


def test_rr_min_grade(synthetic):
    run, qrels = synthetic
    ev = evaluate(run, qrels, measures=["RR@10", "RR(rel=3)@10"], rr_min_grade=2)
    ref2 = reference(run, qrels, rr_min_grade=2)["RR@10"]
    ref3 = reference(run, qrels, rr_min_grade=3)["RR@10"]
    assert ev.per_query["RR@10"] == pytest.approx(ref2)
    assert ev.per_query["RR(rel=3)@10"] == pytest.approx(ref3)  # an explicit rel= wins
    assert ev.aggregate["RR@10"] != pytest.approx(evaluate(run, qrels, measures=["RR@10"]).aggregate["RR@10"])


def test_hand_computed_example():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"c": 3.0, "a": 2.0, "x": 1.0, "b": 0.5}}
    ev = evaluate(run, qrels, measures=["nDCG@10", "RR@10", "AP", "R@2"])
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ev["nDCG@10"] == pytest.approx(dcg / idcg)
    assert ev["RR@10"] == pytest.approx(0.5)
    assert ev["AP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert ev["R@2"] == pytest.approx(0.5)
    # ranked hits are accepted as well as {docid: score}
    hits = {"q": [Hit(d, s, r) for r, (d, s) in enumerate(run["q"].items(), 1)]}
    assert evaluate(hits, qrels, measures=["nDCG@10", "RR@10", "AP", "R@2"]).aggregate == ev.aggregate


def test_paired_ttest_against_formula():
    qrels = {f"q{i}": {"rel": 1} for i in range(8)}
    rng = random.Random(3)
    run_a = {q: {"rel": 1.0, **{f"n{j}": rng.random() * 2 for j in range(3)}} for q in qrels}
    run_b = {q: {"rel": 0.5, **{f"n{j}": rng.random() for j in range(3)}} for q in qrels}
    a, b = evaluate(run_a, qrels), evaluate(run_b, qrels)
    t, p = paired_ttest(a, b, "RR@10")
    diffs = [a.per_query["RR@10"][q] - b.per_query["RR@10"][q] for q in sorted(qrels)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    assert t == pytest.approx(mean / (sd / math.sqrt(n)))
    assert 0.0 < p < 1.0
    assert paired_ttest(a, a, "RR@10") == (0.0, 1.0)


def test_format_table_and_errors():
    qrels = {"q": {"a": 1}}
    table = format_table({"bm25": evaluate({"q": {"a": 1.0}}, qrels), "none": evaluate({}, qrels)},
                         ["nDCG@10", "R@100"])
    lines = table.splitlines()
    assert lines[0] == "| system | nDCG@10 | R@100 | queries |"
    assert lines[2] == "| bm25 | 1.0000 | 1.0000 | 1 |"
    assert lines[3] == "| none | 0.0000 | 0.0000 | 1 |"
    with pytest.raises(KeyError, match="AP"):
        format_table({"x": Evaluation({"nDCG@10": 1.0}, {}, 1)}, ["AP"])
    with pytest.raises(ValueError, match="empty"):
        evaluate({"q": {"a": 1.0}}, {})
