"""Face image quality evaluation: error-versus-discard curves (ERC) and their partial area (protocol F2).

Protocol (../shared/docs/benchmarks.md, F2): the decision threshold is fixed once, at FMR = 1e-2 over
all impostor pairs (`score > threshold` accepts; at most `floor(fmr * n_impostors)` impostors accepted,
the convention of `evaluation.verification.tar_at_far`). Pairs are then ordered by quality, a pair's
quality being the lower of its two images' (`pair_quality`), and the lowest-quality fraction `d` of
all pairs is discarded, d from 0 to 0.5; the curve is the FNMR of the genuine pairs that remain. The
summary is the area under the curve from d = 0 to 0.3 (trapezoids; lower is better). References: a
random ordering (mean over several seeds) and the error oracle, which discards false non-matches first
(the best any quality function can do). A resolution oracle is just `quality = resolution`.

Quality ties are broken in a seeded random order, never by pair index: pair lists are often sorted by
label (LFW lists 300 genuine then 300 impostor pairs per fold), which would leak into the curve.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankface.utils.io import save_png

DEFAULT_DISCARD = np.round(np.linspace(0.0, 0.5, 51), 10)  # steps of 0.01 up to 0.5


def _array(x, name: str, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"quality evaluation: `{name}` must be 1-D (one value per pair), got shape {arr.shape}")
    return arr


def pair_quality(first, second) -> np.ndarray:
    """Quality of a pair: the lower of its two images' qualities, `[P], [P] -> [P]`."""
    a, b = _array(first, "first"), _array(second, "second")
    if a.shape != b.shape:
        raise ValueError(f"pair_quality: `first` {a.shape} and `second` {b.shape} must have the same length")
    return np.minimum(a, b)


def _check(scores, is_genuine, quality=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    s = _array(scores, "scores")
    g = _array(is_genuine, "is_genuine", dtype=bool)
    if g.shape != s.shape:
        raise ValueError(f"quality evaluation: `is_genuine` has {g.size} pairs but `scores` has {s.size}")
    if not np.isfinite(s).all():
        raise ValueError("quality evaluation: `scores` contains NaN or inf")
    if g.all() or not g.any():
        raise ValueError("quality evaluation: needs both genuine and impostor pairs")
    q = None
    if quality is not None:
        q = _array(quality, "quality")
        if q.shape != s.shape:
            raise ValueError(f"quality evaluation: `quality` has {q.size} values but there are {s.size} pairs")
        if np.isnan(q).any():
            raise ValueError("quality evaluation: `quality` contains NaN")
    return s, g, q


def threshold_at_fmr(scores, is_genuine, fmr: float = 1e-2) -> tuple[float, float]:
    """Threshold over all impostor pairs admitting at most `floor(fmr * n_impostors)` of them (`score > t`).

    Returns:
        `(threshold, achieved_fmr)`.
    """
    if not 0.0 < fmr < 1.0:
        raise ValueError(f"threshold_at_fmr: `fmr` must be in (0, 1), got {fmr}")
    s, g, _ = _check(scores, is_genuine)
    impostors = np.sort(s[~g])[::-1]
    allowed = int(np.floor(fmr * impostors.size + 1e-9))
    threshold = float(impostors[allowed]) if allowed < impostors.size else -np.inf
    return threshold, float(np.mean(impostors > threshold))


def partial_auc(discard: np.ndarray, fnmr: np.ndarray, upto: float = 0.3) -> float:
    """Trapezoidal area under `fnmr(discard)` from 0 to `upto` (the curve is interpolated at `upto`)."""
    d, f = np.asarray(discard, dtype=np.float64), np.asarray(fnmr, dtype=np.float64)
    if d.size == 0 or d[0] != 0.0 or np.any(np.diff(d) <= 0):
        raise ValueError("partial_auc: `discard` must start at 0 and increase strictly")
    if upto > d[-1] + 1e-12:
        raise ValueError(f"partial_auc: `upto`={upto} is beyond the last discard fraction {d[-1]}")
    inside = d < upto - 1e-12
    xs = np.append(d[inside], upto)
    ys = np.append(f[inside], np.interp(upto, d, f))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


@dataclass
class ERCCurve:
    """One error-versus-discard curve.

    Attributes:
        name: label in tables and plots.
        discard: `[D]` discarded fractions of all pairs.
        fnmr: `[D]` FNMR of the remaining genuine pairs at the fixed threshold (NaN if none remain).
        threshold: the fixed decision threshold.
        fmr: FMR achieved by the threshold over all impostor pairs.
        target_fmr: the FMR asked for.
    """

    name: str
    discard: np.ndarray
    fnmr: np.ndarray
    threshold: float
    fmr: float
    target_fmr: float
    meta: dict = field(default_factory=dict)

    def pauc(self, upto: float = 0.3) -> float:
        """Area under the curve from d = 0 to `upto` (lower is better)."""
        return partial_auc(self.discard, self.fnmr, upto)

    def fnmr_at(self, d: float) -> float:
        """FNMR at discard fraction `d` (linear interpolation between grid points)."""
        return float(np.interp(d, self.discard, self.fnmr))


def _order(quality: np.ndarray, tie_seed: int) -> np.ndarray:
    ties = np.random.default_rng(tie_seed).permutation(quality.size)
    return np.lexsort((ties, quality))  # by quality ascending, ties in a seeded random order


def _fnmr_curve(
    s: np.ndarray, g: np.ndarray, q: np.ndarray, threshold: float, discard: np.ndarray, tie_seed: int
) -> np.ndarray:
    order = _order(q, tie_seed)
    genuine = g[order]
    miss = genuine & (s[order] <= threshold)
    # cumulative counts over the discarded prefix; what remains is the total minus the prefix
    cum_gen = np.concatenate([[0], np.cumsum(genuine)])
    cum_miss = np.concatenate([[0], np.cumsum(miss)])
    n = s.size
    k = np.rint(discard * n).astype(np.int64)  # rint: 0.29 * 6000 is 1739.999...
    remaining_gen = cum_gen[-1] - cum_gen[k]
    remaining_miss = cum_miss[-1] - cum_miss[k]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(remaining_gen > 0, remaining_miss / np.maximum(remaining_gen, 1), np.nan)


def _discard_grid(discard: Sequence[float] | np.ndarray | None) -> np.ndarray:
    d = DEFAULT_DISCARD if discard is None else np.asarray(discard, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or d[0] != 0.0 or np.any(np.diff(d) <= 0) or d[-1] >= 1.0:
        raise ValueError("quality evaluation: `discard` must be increasing fractions starting at 0 and below 1")
    return d


def error_versus_discard(
    scores,
    is_genuine,
    quality,
    *,
    fmr: float = 1e-2,
    discard: Sequence[float] | np.ndarray | None = None,
    threshold: float | None = None,
    tie_seed: int = 0,
    name: str = "quality",
) -> ERCCurve:
    """Error-versus-discard curve of one quality ordering.

    Args:
        scores: `[P]` similarity of each pair (higher = more alike).
        is_genuine: `[P]` bool, True for same-identity pairs.
        quality: `[P]` pair quality (higher = better; use `pair_quality` for the min of two images).
        fmr: FMR at which the threshold is fixed, over all impostor pairs.
        discard: discard fractions (default 0, 0.01, ..., 0.5).
        threshold: use this threshold instead of the one at `fmr`.
        tie_seed: seed of the random order among equal qualities.
        name: label of the curve.
    """
    s, g, q = _check(scores, is_genuine, quality)
    d = _discard_grid(discard)
    t, achieved = threshold_at_fmr(s, g, fmr)
    if threshold is not None:
        t, achieved = float(threshold), float(np.mean(s[~g] > threshold))
    return ERCCurve(name, d, _fnmr_curve(s, g, q, t, d, tie_seed), t, achieved, fmr)


def random_erc(
    scores,
    is_genuine,
    *,
    repeats: int = 10,
    seed: int = 0,
    fmr: float = 1e-2,
    discard: Sequence[float] | np.ndarray | None = None,
    name: str = "random",
) -> ERCCurve:
    """Mean curve of `repeats` uniformly random qualities (the no-information reference)."""
    s, g, _ = _check(scores, is_genuine)
    d = _discard_grid(discard)
    t, achieved = threshold_at_fmr(s, g, fmr)
    rng = np.random.default_rng(seed)
    curves = [_fnmr_curve(s, g, rng.random(s.size), t, d, seed + r) for r in range(repeats)]
    return ERCCurve(name, d, np.mean(curves, axis=0), t, achieved, fmr, {"repeats": repeats})


def error_oracle_quality(scores, is_genuine, threshold: float) -> np.ndarray:
    """Quality of the error oracle `[P]`: false non-matches lowest (lowest score first), then impostor pairs
    (discarding them leaves FNMR unchanged), correctly accepted genuine pairs highest."""
    s, g, _ = _check(scores, is_genuine)
    group = np.where(g & (s <= threshold), 0.0, np.where(g, 2.0, 1.0))
    within = (np.argsort(np.argsort(s, kind="stable"), kind="stable") + 1.0) / (s.size + 1.0)  # score rank in (0, 1)
    return group + within


def oracle_erc(
    scores, is_genuine, *, fmr: float = 1e-2, discard: Sequence[float] | np.ndarray | None = None, name: str = "oracle"
) -> ERCCurve:
    """Curve of the error oracle (`error_oracle_quality`): the lower bound for every quality function."""
    s, g, _ = _check(scores, is_genuine)
    t, _ = threshold_at_fmr(s, g, fmr)
    return error_versus_discard(s, g, error_oracle_quality(s, g, t), fmr=fmr, discard=discard, name=name)


def evaluate_quality(
    scores,
    is_genuine,
    qualities: Mapping[str, object],
    *,
    fmr: float = 1e-2,
    discard: Sequence[float] | np.ndarray | None = None,
    references: bool = True,
    tie_seed: int = 0,
) -> dict[str, ERCCurve]:
    """Curves for several pair-quality arrays `{name: [P]}`, plus `random` and `oracle` when `references`."""
    curves = {
        name: error_versus_discard(scores, is_genuine, q, fmr=fmr, discard=discard, tie_seed=tie_seed, name=name)
        for name, q in qualities.items()
    }
    if references:
        curves["random"] = random_erc(scores, is_genuine, fmr=fmr, discard=discard, seed=tie_seed)
        curves["oracle"] = oracle_erc(scores, is_genuine, fmr=fmr, discard=discard)
    return curves


def erc_table(curves: Mapping[str, ERCCurve], upto: float = 0.3, at: Sequence[float] = (0.0, 0.1, 0.2, 0.3)) -> str:
    """Markdown table: FNMR at a few discard fractions and pAUC(`upto`) per curve."""
    if not curves:
        raise ValueError("erc_table: no curves")
    target = next(iter(curves.values())).target_fmr
    head = "| quality | " + " | ".join(f"FNMR d={d:g}" for d in at) + f" | pAUC({upto:g}) |"
    rule = "|---|" + "---:|" * (len(at) + 1)
    rows = [
        f"| {name} | " + " | ".join(f"{c.fnmr_at(d):.4f}" for d in at) + f" | {c.pauc(upto):.5f} |"
        for name, c in curves.items()
    ]
    return "\n".join([f"FNMR at the threshold of FMR = {target:g} (all impostor pairs).", "", head, rule, *rows])


def plot_erc(
    curves: Mapping[str, ERCCurve], path: str | os.PathLike, title: str = "Error versus discard", upto: float = 0.3
) -> Path:
    """Plot the curves (FNMR against discarded fraction) as a PNG, written atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; safe in worker processes
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_erc: no curves")
    target = next(iter(curves.values())).target_fmr
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        for name, c in curves.items():
            style = {"random": ":", "oracle": "--"}.get(name, "-")
            ax.plot(c.discard, c.fnmr, style, label=f"{name} (pAUC {c.pauc(upto):.4f})")
        ax.axvline(upto, color="grey", lw=0.8, alpha=0.6)
        ax.set_xlabel("fraction of pairs discarded (lowest quality first)")
        ax.set_ylabel(f"FNMR at FMR = {target:g}")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    except BaseException:
        plt.close(fig)
        raise
    return save_png(fig, path)
