"""Face verification and identification from embeddings: k-fold pair accuracy, ROC AUC, TAR@FAR, gallery/probe
rank-k identification, embedding of (degraded) pair images, and the accuracy-vs-resolution plot.

Conventions follow the lfw112 README: cosine similarity of L2-normalised embeddings; "same" when score > threshold;
k-fold accuracy with the threshold that maximises accuracy on the other folds (midpoints between consecutive
distinct scores); TAR at FAR pooled over all pairs, the threshold admitting at most floor(FAR x impostors)
impostor pairs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankface.utils.io import save_png

# --------------------------------------------------------------------------------------------------------------
# Scores


def l2_normalize(x: np.ndarray | torch.Tensor, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of `[N, E]` embeddings (numpy float64 out)."""
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def cosine_pair_scores(first: np.ndarray | torch.Tensor, second: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine similarity of row-aligned embeddings `[P, E]` and `[P, E]` -> `[P]`."""
    a, b = l2_normalize(first), l2_normalize(second)
    if a.shape != b.shape:
        raise ValueError(f"cosine_pair_scores: shapes {a.shape} and {b.shape} differ")
    return np.einsum("ij,ij->i", a, b)


def _check_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores has {scores.size} entries, labels has {labels.size}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    return scores, labels.astype(bool)


# --------------------------------------------------------------------------------------------------------------
# Verification


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold maximising accuracy of `score > threshold` on `(scores, labels)`.

    Candidates are the midpoints between consecutive distinct scores plus one below the minimum and one above the
    maximum; ties in accuracy go to the smallest candidate.

    Args:
        scores: `[P]` similarities.
        labels: `[P]` booleans, true for same-identity pairs.
    """
    scores, labels = _check_scores_labels(scores, labels)
    if scores.size == 0:
        raise ValueError("best_threshold: no pairs")
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    distinct = np.flatnonzero(np.diff(s) > 0)  # last index of each run of equal scores, except the final run
    candidates = np.concatenate([[s[0] - 1.0], (s[distinct] + s[distinct + 1]) / 2.0, [s[-1] + 1.0]])
    # With threshold between run ends, pairs at or below are "different": correct = negatives at or below
    # plus positives above.
    neg_below = np.concatenate([[0], np.cumsum(~y)[distinct], [np.sum(~y)]])
    pos_below = np.concatenate([[0], np.cumsum(y)[distinct], [np.sum(y)]])
    correct = neg_below + (np.sum(y) - pos_below)
    return float(candidates[int(np.argmax(correct))])


def kfold_accuracy(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray | None = None, n_folds: int = 10
) -> dict[str, Any]:
    """k-fold verification accuracy: for each fold, the threshold is chosen on the other folds' pairs.

    Args:
        scores: `[P]` similarities.
        labels: `[P]` booleans (same identity).
        folds: `[P]` fold id per pair; when None, the pairs are cut into `n_folds` consecutive equal blocks in
            the given order (the LFW View-2 file order).
        n_folds: number of folds when `folds` is None.

    Returns:
        `{"accuracy": mean, "std": population std over folds, "fold_accuracies": [k], "thresholds": [k],
        "folds": fold ids}`.
    """
    scores, labels = _check_scores_labels(scores, labels)
    if folds is None:
        if scores.size % n_folds:
            raise ValueError(f"kfold_accuracy: {scores.size} pairs do not split into {n_folds} equal folds; "
                             "pass folds= explicitly")
        folds = np.repeat(np.arange(n_folds), scores.size // n_folds)
    folds = np.asarray(folds).reshape(-1)
    if folds.shape != scores.shape:
        raise ValueError(f"kfold_accuracy: folds has {folds.size} entries, scores has {scores.size}")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("kfold_accuracy: needs at least 2 folds")
    accuracies, thresholds = [], []
    for k in fold_ids:
        test = folds == k
        threshold = best_threshold(scores[~test], labels[~test])
        accuracies.append(float(np.mean((scores[test] > threshold) == labels[test])))
        thresholds.append(threshold)
    acc = np.asarray(accuracies)
    return {"accuracy": float(acc.mean()), "std": float(acc.std()), "fold_accuracies": accuracies,
            "thresholds": thresholds, "folds": fold_ids.tolist()}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability a random genuine pair outscores a random impostor; ties count 1/2)."""
    from scipy.stats import rankdata

    scores, labels = _check_scores_labels(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc: needs both genuine and impostor pairs")
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> tuple[float, float]:
    """True accept rate at a false accept rate, pooled over all pairs.

    The threshold admits at most `floor(far * n_impostors)` impostor pairs (`score > threshold` accepts).

    Returns:
        `(tar, threshold)`.
    """
    scores, labels = _check_scores_labels(scores, labels)
    impostors = np.sort(scores[~labels])[::-1]
    genuine = scores[labels]
    if impostors.size == 0 or genuine.size == 0:
        raise ValueError("tar_at_far: needs both genuine and impostor pairs")
    allowed = int(np.floor(far * impostors.size + 1e-9))
    threshold = -np.inf if allowed >= impostors.size else float(impostors[allowed])
    return float(np.mean(genuine > threshold)), threshold


@dataclass
class VerificationResult:
    """Verification figures of one set of pair scores (accuracies as fractions in 0..1)."""

    accuracy: float
    accuracy_std: float
    auc: float
    tar_at_far: dict[float, float]
    fold_accuracies: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy, "accuracy_std": self.accuracy_std, "auc": self.auc}
        out.update({f"tar@far={far:g}": tar for far, tar in self.tar_at_far.items()})
        return out


def evaluate_verification(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray | None = None, n_folds: int = 10,
    fars: Sequence[float] = (1e-2, 1e-3),
) -> VerificationResult:
    """k-fold accuracy, ROC AUC and TAR at each FAR of `(scores [P], labels [P])`."""
    kfold = kfold_accuracy(scores, labels, folds=folds, n_folds=n_folds)
    return VerificationResult(
        accuracy=kfold["accuracy"], accuracy_std=kfold["std"], auc=roc_auc(scores, labels),
        tar_at_far={float(far): tar_at_far(scores, labels, far)[0] for far in fars},
        fold_accuracies=kfold["fold_accuracies"],
    )


# --------------------------------------------------------------------------------------------------------------
# Identification


def gallery_probe_split(labels: Sequence[int] | np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Closed-set protocol: per identity with at least 2 images, one random image in the gallery and the others as
    probes; single-image identities go to the gallery only (distractors).

    Returns:
        `(gallery indices, probe indices)` into `labels`.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    gallery, probes = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        pick = int(rng.integers(idx.size))
        gallery.append(idx[pick])
        probes.extend(np.delete(idx, pick).tolist())
    return np.sort(np.asarray(gallery, dtype=np.int64)), np.sort(np.asarray(probes, dtype=np.int64))


def identification_accuracy(
    gallery: np.ndarray | torch.Tensor, gallery_labels: Sequence[int] | np.ndarray,
    probes: np.ndarray | torch.Tensor, probe_labels: Sequence[int] | np.ndarray, ranks: Sequence[int] = (1, 5),
) -> dict[int, float]:
    """Closed-set rank-k identification: share of probes whose identity is among the `k` gallery entries most
    similar (cosine) to them.

    Args:
        gallery: `[G, E]` embeddings; `gallery_labels`: `[G]`.
        probes: `[Q, E]` embeddings; `probe_labels`: `[Q]`, each present in the gallery.
        ranks: the `k` values.

    Returns:
        `{k: accuracy in 0..1}`.
    """
    g, q = l2_normalize(gallery), l2_normalize(probes)
    g_labels, q_labels = np.asarray(gallery_labels), np.asarray(probe_labels)
    if g.shape[0] != g_labels.size or q.shape[0] != q_labels.size:
        raise ValueError("identification_accuracy: embeddings and labels have different lengths")
    absent = ~np.isin(q_labels, g_labels)
    if absent.any():
        raise ValueError(f"identification_accuracy: {int(absent.sum())} probe(s) have no gallery entry "
                         f"(first label {q_labels[absent][0]!r}); closed-set identification needs one each")
    sims = q @ g.T  # [Q, G]
    # Rank of the best same-identity gallery entry = number of gallery entries scoring strictly higher.
    same = q_labels[:, None] == g_labels[None, :]
    best_same = np.where(same, sims, -np.inf).max(axis=1)
    rank = (sims > best_same[:, None]).sum(axis=1)  # 0-based
    return {int(k): float(np.mean(rank < k)) for k in ranks}


# --------------------------------------------------------------------------------------------------------------
# Embedding images (with the degradation of the pairs protocol)


def pixel_values_from_uint8(images: np.ndarray, config: Any) -> torch.Tensor:
    """`[N, S, S, 3]` uint8 RGB -> `[N, 3, S, S]` float32 normalised with `config.image_mean`, `image_std` in
    `config.color_order` (the same arithmetic as `FaceImageProcessor`, vectorised)."""
    x = images.astype(np.float32)
    if getattr(config, "color_order", "RGB") == "BGR":
        x = x[..., ::-1]
    x = (x - float(config.image_mean)) / float(config.image_std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@torch.inference_mode()
def embed_uint8(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256, device: str | None = None
                ) -> np.ndarray:
    """Embed `[N, S, S, 3]` uint8 RGB faces with a face encoder in eval mode -> `[N, E]` float32 (not normalised)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            pixel_values = pixel_values_from_uint8(images[start:start + batch_size], model.config)
            # channels_last input makes PyTorch pick NHWC convolution kernels: ~2x faster for these depthwise-heavy
            # networks on CPU (measured with MobileFaceNet), same result to ~1e-6.
            pixel_values = pixel_values.to(device).contiguous(memory_format=torch.channels_last)
            out.append(model(pixel_values).embedding.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.config.embedding_size), np.float32)


def evaluate_pairs_at_resolution(
    model: torch.nn.Module, images: np.ndarray, pair_index: np.ndarray, same: np.ndarray, resolution: int,
    setting: str = "lr-lr", folds: np.ndarray | None = None, batch_size: int = 256,
    fars: Sequence[float] = (1e-2, 1e-3),
) -> VerificationResult:
    """Verification of pairs with images degraded to `resolution` px (`degrade_exact`).

    Args:
        model: face encoder.
        images: `[M, S, S, 3]` uint8 RGB, the images the pairs use.
        pair_index: `[P, 2]` rows of `images` per pair.
        same: `[P]` booleans.
        resolution: `r` in pixels (`S` = no degradation).
        setting: "lr-lr" (both images degraded) or "hr-lr" (the first at full resolution, the second degraded).
        folds: `[P]` fold ids (default: 10 consecutive blocks).
    """
    from rankface.data.faces import degrade_exact

    if setting not in ("lr-lr", "hr-lr"):
        raise ValueError(f"evaluate_pairs_at_resolution: setting = {setting!r}, expected 'lr-lr' or 'hr-lr'")
    pair_index = np.asarray(pair_index)
    degrade = resolution < images.shape[1]

    def embed_rows(rows: np.ndarray, low: bool) -> dict[int, np.ndarray]:
        rows = np.unique(rows)
        batch = np.stack([degrade_exact(images[i], resolution) for i in rows]) if low else images[rows]
        return dict(zip(rows.tolist(), embed_uint8(model, batch, batch_size), strict=True))

    if not degrade:
        first_map = second_map = embed_rows(pair_index, low=False)
    elif setting == "lr-lr":
        first_map = second_map = embed_rows(pair_index, low=True)
    else:
        first_map, second_map = embed_rows(pair_index[:, 0], low=False), embed_rows(pair_index[:, 1], low=True)
    first = np.stack([first_map[i] for i in pair_index[:, 0].tolist()])
    second = np.stack([second_map[i] for i in pair_index[:, 1].tolist()])
    return evaluate_verification(cosine_pair_scores(first, second), same, folds=folds, fars=fars)


# --------------------------------------------------------------------------------------------------------------
# Plot


def plot_accuracy_vs_resolution(
    curves: Mapping[str, Mapping[int, float]], path: str | os.PathLike, title: str = "Verification accuracy",
    ylabel: str = "10-fold accuracy (%)",
) -> Path:
    """Line plot of accuracy against resolution, one line per system (or setting), written atomically as PNG.

    Args:
        curves: `{label: {resolution_px: accuracy_percent}}`.
        path: output `.png`.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe under multi-process runs
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_accuracy_vs_resolution: no curves")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        for label, points in curves.items():
            rs = sorted(points)
            ax.plot(rs, [points[r] for r in rs], marker="o", label=label)
        ax.set_xscale("log", base=2)
        all_rs = sorted({r for points in curves.values() for r in points})
        ax.set_xticks(all_rs, [str(r) for r in all_rs])
        ax.set_xlabel("resolution (px)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    except BaseException:
        plt.close(fig)
        raise
    return save_png(fig, path)
