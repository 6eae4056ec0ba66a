"""benchmarks/_common.py: per-round ratio statistics, round orders, and the CPU class a benchmark prints."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # benchmarks import it as `_common`
import _common


def test_ratio_stats_median_quartiles_and_range_of_the_per_round_ratios():
    stats = _common.ratio_stats([2.0, 6.0, 12.0, 20.0], [2.0, 3.0, 4.0, 5.0])  # ratios 1, 2, 3, 4
    # Quartiles by linear interpolation between order statistics: position (n - 1) p = 0.75 for p = 1/4.
    assert stats["ratios"] == [1.0, 2.0, 3.0, 4.0]
    assert stats["median"] == pytest.approx(2.5)
    assert (stats["q1"], stats["q3"]) == (pytest.approx(1.75), pytest.approx(3.25))
    assert (stats["min"], stats["max"], stats["rounds"]) == (1.0, 4.0, 4)


def test_median_of_round_ratios_survives_load_that_changes_mid_run():
    # System B costs 1.1x system A. Load quadruples from round 6 on, and 3 rounds get a burst that hits only B.
    load = [1.0] * 5 + [4.0] * 7
    a = [1.0 * x for x in load]
    b = [1.1 * x for x in load]
    for r in (2, 7, 10):
        b[r] *= 3
    stats = _common.ratio_stats(b, a)
    assert stats["median"] == pytest.approx(1.1)
    assert stats["max"] == pytest.approx(3.3)
    # The same timings taken system by system (A's rounds before the load came, B's after) mislead the medians' ratio.
    assert statistics.median(b[5:]) / statistics.median(a[:5]) > 4


def test_ratio_stats_needs_paired_rounds():
    with pytest.raises(ValueError, match="same number"):
        _common.ratio_stats([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same number"):
        _common.ratio_stats([], [])


def test_round_orders_rotate_and_palindromes_balance_positions():
    orders = _common.round_orders(["a", "b", "c"], 6)
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert [o[0] for o in orders] == ["a", "b", "c", "a", "b", "c"]  # each system first equally often
    for order in _common.round_orders(["a", "b", "c"], 4, palindrome=True):
        assert sorted(order) == ["a", "a", "b", "b", "c", "c"]
        mean_position = {n: sum(i for i, m in enumerate(order) if m == n) / 2 for n in "abc"}
        assert set(mean_position.values()) == {2.5}  # linear drift within the round costs every system the same


def test_cpu_class_line(capsys):
    info = _common.print_cpu_class()
    line = capsys.readouterr().out
    assert info["class"] in ("baseline", "avx2", "avx512", "avx512-bf16") and info["threads"] >= 1
    assert line.startswith(f"CPU class {info['class']}") and "avx512_bf16=" in line and "torch threads" in line
    assert _common.class_tag({"class": "avx2", "emulated": True}) == "avx2-emulated"
