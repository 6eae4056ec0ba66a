"""The face benchmarks' figures, drawn so a reader can read them at a glance: one colour per system, the same in every
figure of a report (F1's accuracy against resolution and learning curves, F2's error-versus-discard curves), a log
resolution axis with every measured resolution marked, and line styles that mean one thing each.

A benchmark script imports it as `from _plots import ...` (run as `python benchmarks/X.py`, the script's folder is on
`sys.path`; a test that loads a benchmark puts `benchmarks/` on `sys.path` first).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rankface.utils.io import save_png

# One colour per system (F1) and per quality (F2), fixed: a system has its colour in every figure of a report. A
# quality that belongs to a system's model takes that system's colour (the RI, the MagFace norm).
COLOURS = {
    "pretrained": "#7f7f7f",
    "arcface": "#1f77b4",
    "arcface+unpg": "#17becf",
    "cosface": "#2ca02c",
    "cosface+unpg": "#98df8a",
    "magface": "#9467bd",
    "ri": "#d62728",
    "ri+reg": "#ff7f0e",
    "ri+reg+id": "#e377c2",
    "ri-headlr": "#8c564b",
    # issue 21: the random-head UNPG sweep (arcface-rh is its baseline) and the fixed RI
    "arcface-rh": "#393b79",
    "arcface+unpg-rh-k1": "#6b6ecf",
    "arcface+unpg-rh": "#17becf",
    "arcface+unpg-rh-k3": "#e6550d",
    "arcface+unpg-rh-nofilter": "#843c39",
    "ri-fix": "#ff9896",
    "ri-fix-fmap": "#b22222",
    "ri-fix-150": "#e7ba52",
    "ri-log-150": "#8c6d31",
    # F2 qualities beyond the systems' own
    "norm": "#bcbd22",  # the embedding norm of the RI model
    "magface norm": "#9467bd",
    "pretrained norm": "#7f7f7f",
    "resolution oracle": "#000000",
    "random": "#000000",
    "error oracle": "#000000",
}
# References are black and told apart by their dashes; everything else is solid.
REFERENCE_STYLES = {"resolution oracle": "-.", "random": ":", "error oracle": "--"}
_FALLBACK = ("#aec7e8", "#ffbb78", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")


def colour(name: str) -> str:
    """The fixed colour of a system or quality; a name not listed gets one from a spare palette, chosen by a stable
    hash of the name (the same in every figure and on every run)."""
    if name in COLOURS:
        return COLOURS[name]
    return _FALLBACK[zlib.crc32(name.encode()) % len(_FALLBACK)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in worker processes
    import matplotlib.pyplot as plt

    return plt


def _resolution_axis(ax, resolutions: Sequence[int]) -> None:
    """A log2 resolution axis with a tick at every measured resolution (8, 12, 16, 24 and 112 do not crowd)."""
    rs = sorted({int(r) for r in resolutions})
    ax.set_xscale("log", base=2)
    ax.set_xticks(rs, [str(r) for r in rs])
    ax.minorticks_off()
    ax.set_xlim(rs[0] / 1.15, rs[-1] * 1.15)
    ax.set_xlabel("resolution r (px, log scale)")


def plot_accuracy_vs_resolution(rows: Mapping[str, Mapping[str, Mapping[int, float]]], path: str | os.PathLike,
                                title: str, ylabel: str = "10-fold accuracy (%)", reference: str | None = "arcface",
                                not_in_difference: Sequence[str] = ("pretrained",)) -> Path:
    """F1: accuracy against resolution, one colour per system, solid LR-LR and dashed HR-LR; when `reference` is one
    of the systems, a second panel shows each system's difference to it (systems within a point of each other are
    then still told apart; `not_in_difference`, e.g. the untrained anchor, would only stretch its axis).

    Args:
        rows: `{system: {"lr-lr": {r: accuracy}, "hr-lr": {r: accuracy}}}`; HR-LR at the full resolution is the
            LR-LR value (both images at 112 px), so both lines of a system meet there.
        path: the PNG (written atomically).
    """
    if not rows:
        raise ValueError("plot_accuracy_vs_resolution: no systems")
    plt = _pyplot()
    from matplotlib.lines import Line2D

    with_delta = reference in rows and len(rows) > 1
    fig, axes = plt.subplots(1, 2 if with_delta else 1, figsize=(14 if with_delta else 8.5, 5), dpi=120,
                             squeeze=False)
    resolutions = sorted({int(r) for settings in rows.values() for points in settings.values() for r in points})
    for panel, ax in enumerate(axes[0]):
        for system, settings in rows.items():
            for setting, dashes in (("lr-lr", "-"), ("hr-lr", "--")):
                points = settings.get(setting) or {}
                if panel == 1 and system in not_in_difference:
                    continue
                if panel == 1:
                    base = rows[reference].get(setting) or {}
                    points = {r: v - base[r] for r, v in points.items() if r in base}
                if not points:
                    continue
                rs = sorted(points)
                ax.plot(rs, [points[r] for r in rs], dashes, marker="o" if setting == "lr-lr" else "s",
                        markersize=4, color=colour(system), lw=1.8 if setting == "lr-lr" else 1.3)
        _resolution_axis(ax, resolutions)
        ax.grid(True, alpha=0.3)
        if panel == 0:
            ax.set_ylabel(ylabel)
            ax.set_title("accuracy", fontsize=10)
        else:
            ax.axhline(0, color=colour(reference), lw=1)
            ax.set_ylabel(f"difference to {reference} (points)")
            ax.set_title(f"difference to {reference}", fontsize=10)
    handles = [Line2D([], [], color=colour(s), lw=2, label=s) for s in rows]
    handles += [Line2D([], [], color="black", ls="-", marker="o", markersize=4, label="LR-LR (both at r)"),
                Line2D([], [], color="black", ls="--", marker="s", markersize=4, label="HR-LR (112 vs r)")]
    axes[0][-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def plot_learning_curves(runs: Mapping[str, Sequence[Sequence[tuple[int, Mapping[str, float]]]]],
                         path: str | os.PathLike, keys: Sequence[str], title: str,
                         ylabel: str = "10-fold accuracy (%)") -> Path:
    """Accuracy against optimizer step, one panel per key (e.g. `lr-lr@16`, `lr-lr@8`), one colour per system.

    Args:
        runs: `{system: [run, ...]}`, a run being `[(step, {key: accuracy}), ...]` (one per seed and half). Each run
            is drawn thin; the mean over a system's runs, at the steps they all share, thick.
        keys: the panels, in order.
        title: says which pairs the accuracy is on (validation or test) and that nothing is selected on test pairs.
    """
    if not runs:
        raise ValueError("plot_learning_curves: no runs")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys) + 1.6, 4.2), dpi=120, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for system, system_runs in runs.items():
            curves = [{int(step): values[key] for step, values in run if key in values} for run in system_runs]
            curves = [c for c in curves if c]
            if not curves:
                continue
            for curve in curves:
                steps = sorted(curve)
                ax.plot(steps, [curve[s] for s in steps], color=colour(system), lw=0.8, alpha=0.35)
            shared = sorted(set.intersection(*(set(c) for c in curves)))
            ax.plot(shared, [float(np.mean([c[s] for c in curves])) for s in shared], "o-", markersize=3,
                    color=colour(system), lw=2, label=f"{system} ({len(curves)} run{'s' if len(curves) > 1 else ''})")
        ax.set_xlabel("optimizer step (0 = the pretrained start)")
        ax.set_ylabel(ylabel)
        ax.set_title(key.upper().replace("@", " at ") + " px", fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def plot_step_series(runs: Mapping[str, Sequence[Mapping[str, Sequence[float]]]], path: str | os.PathLike,
                     panels: Mapping[str, tuple[str, Sequence[str]]], title: str, smooth: int = 1,
                     labels: Mapping[str, str] | None = None) -> Path:
    """Training-log quantities against optimizer step (e.g. UNPG's mechanism), one panel per entry of `panels`:
    the colour says the system (the legend under the panels), the dashes say the series (each panel's legend).

    Args:
        runs: `{system: [run, ...]}`, a run being columns `{"step": [S], name: [S], ...}` (one per seed and half).
        panels: `{panel title: (y label, [series names])}`.
        smooth: draw the centred moving mean over this many logged steps (per-step logs are too noisy to compare
            systems by eye); 1 draws the values as logged.
        labels: the legend's words for a series name (default: the name).
    """
    if not runs:
        raise ValueError("plot_step_series: no runs")
    from matplotlib.lines import Line2D

    plt = _pyplot()
    dashes = ("-", "--", ":", "-.")
    # constrained layout makes room for the figure legend under the panels (tight_layout would ignore it)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.6, 4.6), dpi=120, squeeze=False,
                             layout="constrained")
    for ax, (panel, (ylabel, names)) in zip(axes[0], panels.items(), strict=True):
        drawn = set()
        for system, system_runs in runs.items():
            for run in system_runs:
                for style, name in zip(dashes, names, strict=False):
                    if name in run:
                        ax.plot(run["step"], moving_mean(run[name], smooth), style, color=colour(system), lw=1.1,
                                alpha=0.85)
                        drawn.add(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=10)
        ax.grid(True, alpha=0.3)
        if len(drawn) > 1:
            ax.legend(handles=[Line2D([], [], color="black", linestyle=style, label=(labels or {}).get(name, name))
                               for style, name in zip(dashes, names, strict=False) if name in drawn],
                      fontsize=7, frameon=False)
    fig.legend(handles=[Line2D([], [], color=colour(system), lw=2, label=system) for system in runs],
               loc="outside lower center", ncol=min(len(runs), 5), fontsize=8, frameon=False)
    note = f" (moving mean over {smooth} steps)" if smooth > 1 else ""
    fig.suptitle(title + note, fontsize=10)
    return save_png(fig, path)


def moving_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving mean over `window` points that skips NaN (a step without the quantity) instead of spreading
    it; a point whose whole window is NaN stays NaN."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1:
        return x
    finite = np.isfinite(x)
    kernel = np.ones(window)
    total = np.convolve(np.where(finite, x, 0.0), kernel, mode="same")
    count = np.convolve(finite.astype(np.float64), kernel, mode="same")
    return np.divide(total, count, out=np.full_like(x, np.nan), where=count > 0)


def plot_erc_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike,
                    title: str, upto: float = 0.3, paucs: Mapping[str, float] | None = None,
                    ylabel: str = "FNMR at the fixed threshold") -> Path:
    """F2: FNMR of the kept genuine pairs against the discarded fraction, one colour per quality (the RI in the RI
    system's colour, the MagFace norm in MagFace's), references black with their own dashes.

    Args:
        curves: `{quality: (discard [D], fnmr [D])}`.
        paucs: `{quality: pAUC(upto)}` for the legend.
    """
    if not curves:
        raise ValueError("plot_erc_curves: no curves")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for name, (discard, fnmr) in curves.items():
        label = name if paucs is None or name not in paucs else f"{name} (pAUC {paucs[name]:.4f})"
        ax.plot(discard, fnmr, REFERENCE_STYLES.get(name, "-"), color=colour(name), label=label,
                lw=1.2 if name in REFERENCE_STYLES else 2)
    ax.axvline(upto, color="grey", lw=0.8, alpha=0.6)
    ax.set_xlabel("fraction of pairs discarded (lowest quality first)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return save_png(fig, path)


__all__ = ["COLOURS", "colour", "plot_accuracy_vs_resolution", "plot_erc_curves", "plot_learning_curves",
           "plot_step_series"]
