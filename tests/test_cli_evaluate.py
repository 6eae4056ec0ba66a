"""`rankface evaluate`: per-query values, JSON output and paired t-tests, against values computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from rankface.cli import main

# Reciprocal rank of each query's one relevant document (dN for qN), computed by hand from the runs below.
RR = {
    "a": {"q1": 1.0, "q2": 0.5, "q3": 1.0, "q4": 0.25},
    "b": {"q1": 0.5, "q2": 1 / 3, "q3": 1.0, "q4": 0.0},  # b has no ranking for q4
    "c": {"q1": 1.0, "q2": 1.0, "q3": 0.5, "q4": 0.5},
}
RANKS = {"a": {"q1": 1, "q2": 2, "q3": 1, "q4": 4}, "b": {"q1": 2, "q2": 3, "q3": 1}, "c": {"q1": 1, "q2": 1, "q3": 2, "q4": 2}}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "qrels.txt").write_text("".join(f"q{i} 0 d{i} 1\n" for i in range(1, 5)))
    for system, ranks in RANKS.items():
        lines = []
        for qid, rank in ranks.items():
            relevant = "d" + qid[1:]
            others = iter(f"x{j}" for j in range(10))
            docs = [relevant if r == rank else next(others) for r in range(1, 5)]
            lines += [f"{qid} Q0 {d} {r} {10 - r} {system}\n" for r, d in enumerate(docs, 1)]
        (tmp_path / f"{system}.trec").write_text("".join(lines))
    return tmp_path


def _student_t3_two_sided_p(t: float) -> float:
    """Two-sided p of Student's t with 3 degrees of freedom, from its closed-form CDF."""
    x = abs(t) / math.sqrt(3)
    cdf = 0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi
    return 2 * (1 - cdf)


def _paired_t(a: dict, b: dict) -> tuple[float, float]:
    d = [a[q] - b[q] for q in sorted(a)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean, mean / (sd / math.sqrt(len(d)))


def test_json_holds_per_query_values_and_paired_ttests(files, capsys):
    runs = [str(files / f"{s}.trec") for s in ("a", "b", "c")]
    assert main(["evaluate", "--qrels", str(files / "qrels.txt"), *runs, "--measures", "RR@10", "--per-query",
                 "--significance", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == {"a.trec": runs[0], "b.trec": runs[1], "c.trec": runs[2]}
    for system in ("a", "b", "c"):
        entry = out["systems"][f"{system}.trec"]
        assert entry["per_query"]["RR@10"] == pytest.approx(RR[system], abs=1e-12)
        assert entry["aggregate"]["RR@10"] == pytest.approx(sum(RR[system].values()) / 4, abs=1e-12)
    assert out["systems"]["b.trec"]["missing_queries"] == ["q4"]
    tests = {(t["a"], t["b"]): t for t in out["paired_ttests"]}
    assert list(tests) == [("a.trec", "b.trec"), ("a.trec", "c.trec"), ("b.trec", "c.trec")]
    for x, y in tests:
        mean, t = _paired_t(RR[x[0]], RR[y[0]])
        assert tests[x, y]["mean_difference"] == pytest.approx(mean, abs=1e-12)
        assert tests[x, y]["t"] == pytest.approx(t, rel=1e-9)
        assert tests[x, y]["p"] == pytest.approx(_student_t3_two_sided_p(t), rel=1e-6)
        assert tests[x, y]["queries"] == 4 and tests[x, y]["measure"] == "RR@10"


def test_markdown_per_query_and_significance_tables(files, capsys):
    runs = [str(files / "a.trec"), str(files / "b.trec")]
    assert main(["evaluate", "--qrels", str(files / "qrels.txt"), *runs, "--measures", "RR@10", "--per-query",
                 "--significance"]) == 0
    out = capsys.readouterr().out
    assert "| RR@10 | a.trec | b.trec |" in out
    assert "| q2 | 0.5000 | 0.3333 |" in out and "| q4 | 0.2500 | 0.0000 |" in out
    mean, t = _paired_t(RR["a"], RR["b"])
    assert f"| a.trec | b.trec | RR@10 | {mean:+.4f} | {t:.3f} | {_student_t3_two_sided_p(t):.4g} | 4 |" in out


def test_significance_needs_two_runs(files, capsys):
    assert main(["evaluate", "--qrels", str(files / "qrels.txt"), str(files / "a.trec"), "--significance"]) == 2
    assert "give two or more run files" in capsys.readouterr().err
