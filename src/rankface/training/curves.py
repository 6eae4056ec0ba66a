"""Learning curves from a training log: evaluation metric and training loss against the optimizer step."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from rankface.utils.io import atomic_write


def curve_points(log: Sequence[Mapping], metric: str = "nDCG@10") -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """`(evaluations, losses)` of a trainer-state log: `[(step, metric)]` and `[(step, loss)]`, in step order."""
    evaluations = sorted((e["step"], e["eval"][metric]) for e in log if metric in e.get("eval", {}))
    losses = sorted((e["step"], e["loss"]) for e in log if "loss" in e and "eval" not in e)
    return evaluations, losses


def plot_learning_curve(
    runs: Mapping[str, Sequence[Mapping]],
    path: str | os.PathLike,
    metric: str = "nDCG@10",
    eval_label: str = "dev",
    title: str = "",
    smooth: int = 25,
) -> None:
    """One PNG: `metric` on the evaluation split against step (left) and training loss (right, a moving average
    over `smooth` steps), one colour per run, the same colour in both panels.

    Args:
        runs: `{label: trainer-state log}`.
        path: the PNG (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.get_cmap("tab10")
    for index, (label, log) in enumerate(runs.items()):
        evaluations, losses = curve_points(log, metric)
        colour = colours(index % 10)
        if evaluations:
            steps, values = zip(*evaluations)
            left.plot(steps, values, "o-", color=colour, label=label)
        if losses:
            steps, values = map(np.asarray, zip(*losses))
            width = max(1, min(smooth, len(values)))
            averaged = np.convolve(values, np.ones(width) / width, mode="valid")
            right.plot(steps[width - 1 :], averaged, color=colour, label=label)
    left.set(xlabel="optimizer step", ylabel=f"{metric} ({eval_label})", title=f"{eval_label} {metric} (step 0 = start)")
    right.set(xlabel="optimizer step", ylabel="training loss", title=f"training loss (moving average of {smooth})")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        if len(runs) > 1 and axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


__all__ = ["curve_points", "plot_learning_curve"]
