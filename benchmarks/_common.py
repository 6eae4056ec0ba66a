"""Pieces every benchmark shares: the CPU class it ran on, and robust statistics of interleaved timings.

A benchmark script imports it as `from _common import ...` (run as `python benchmarks/X.py`, the script's folder
is on `sys.path`; a test that loads a benchmark puts `benchmarks/` on `sys.path` first).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np


def cpu_class() -> dict:
    """The CPU class the kernels run at (`rankface.hardware.cpu_class`) and the torch threads, for a results file.

    `class` is `avx512-bf16`, `avx512`, `avx2` or `baseline`; `emulated` is True when instruction-set caps
    (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, FBGEMM_ENABLE_INSTRUCTIONS) make it smaller
    than the hardware's.
    """
    import torch

    from rankface.hardware import cpu_class as hardware_class

    return {**hardware_class(), "threads": torch.get_num_threads()}


def print_cpu_class(info: dict | None = None, file=None) -> dict:
    """Print the one-line CPU class (flags, caps, threads) a benchmark ran on; returns it."""
    from rankface.hardware import describe_class

    info = cpu_class() if info is None else info
    print(f"{describe_class(info)}; {info['threads']} torch threads", file=file or sys.stdout, flush=True)
    return info


def class_tag(info: dict) -> str:
    """A short file-name tag for a CPU class: `avx512-bf16`, or `avx2-emulated` when caps emulate it."""
    return info["class"] + ("-emulated" if info["emulated"] else "")


def ratio_stats(numerator: Sequence[float], denominator: Sequence[float]) -> dict:
    """Statistics of the per-round ratios `numerator[i] / denominator[i]` of two interleaved systems.

    Each round times both systems back to back, so load from other processes that changes between rounds cancels in
    the round's ratio; the median over rounds then ignores the few rounds that a burst of load hit unevenly. (The
    ratio of the two medians does not: load that grows mid-run shifts both medians by different rounds.)

    Returns:
        `{"median", "q1", "q3", "min", "max", "rounds", "ratios"}`; quartiles interpolate linearly between order
        statistics (numpy's default percentile).
    """
    if len(numerator) != len(denominator) or not len(numerator):
        raise ValueError(f"need the same number (>= 1) of rounds for both systems, got {len(numerator)} and "
                         f"{len(denominator)}")
    ratios = np.asarray(numerator, dtype=float) / np.asarray(denominator, dtype=float)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "min": float(ratios.min()),
            "max": float(ratios.max()), "rounds": int(ratios.size), "ratios": ratios.tolist()}


def t_summary(values: Sequence[float]) -> dict:
    """Mean, 95 % t-interval and two-sided one-sample t p (against 0) of per-seed values."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, x.size - 1) * sd / np.sqrt(x.size))
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * stats.t.sf(abs(mean) / (sd / np.sqrt(x.size)), x.size - 1))
    return {"mean": mean, "low": mean - half, "high": mean + half, "p": p, "seeds": int(x.size),
            "values": x.tolist()}


def format_spread(stats: dict) -> str:
    """`1.012 (IQR 0.991-1.030, min-max 0.950-1.100, 10 rounds)`."""
    return (f"{stats['median']:.3f} (IQR {stats['q1']:.3f}-{stats['q3']:.3f}, min-max {stats['min']:.3f}-"
            f"{stats['max']:.3f}, {stats['rounds']} rounds)")


def round_orders(names: Sequence[str], rounds: int, palindrome: bool = False) -> list[list[str]]:
    """The order of the systems in each round, rotated by one each round, so no system always runs first.

    With `palindrome`, each round runs its order and then the reverse (`A B C C B A`): every system runs twice, at
    the same mean position in the round, so load that rises or falls steadily during the round adds the same time
    to each system's sum over the round.
    """
    names = list(names)
    orders = [names[r % len(names):] + names[: r % len(names)] for r in range(rounds)]
    return [order + order[::-1] for order in orders] if palindrome else orders


__all__ = ["class_tag", "cpu_class", "format_spread", "print_cpu_class", "ratio_stats", "round_orders"]
