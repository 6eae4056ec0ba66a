"""Face verification and identification from embeddings: k-fold pair accuracy, ROC AUC, TAR@FAR, gallery/probe
rank-k identification, embedding of (degraded) pair images, the accuracy-vs-resolution plot, and the low-FAR
evaluation over every pair of a set of images (TAR at FAR 1e-3 ... 1e-5, impostor percentiles, identity bootstrap).

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
# Low FAR: every pair among a set of images
#
# A half of LFW's pairs file holds 1,500 impostor pairs, so TAR at FAR 1e-3 rests on 1.5 impostors. Scoring every
# cross-identity pair among the images those pairs use gives ~7 million impostors per half (LR-LR; twice that
# HR-LR), enough for FAR 1e-5. The scores are made in row blocks of one matrix product each (memory-bounded) and
# only the highest `tail_share` of the impostor scores is kept, with the identities of both images: every figure
# below FAR `tail_share` (thresholds, percentiles, TAR) is an order statistic inside that tail, so it is exact, and
# so is every identity-bootstrap resample whose threshold stays inside the tail (checked; an error otherwise).

LOW_FARS = (1e-3, 1e-4, 1e-5)
IMPOSTOR_PERCENTILES = (99.9, 99.99)


@dataclass
class AllPairScores:
    """Genuine scores and the impostor tail of every pair among `N` images of `I` identities.

    Pairs: "lr-lr" scores each unordered pair `i < j` of one embedding set; "hr-lr" scores each ordered pair
    `i != j` with the first image taken from the first set (e.g. 112 px) and the second from the second (e.g. 8 px),
    so that both orders of two images count, as in the pairs protocol's HR-LR.

    Attributes:
        setting: "lr-lr" or "hr-lr".
        identities: `[I]` the sorted distinct labels; every index below points into it.
        images_per_identity: `[I]` images of each identity.
        num_impostors: every cross-identity pair (not only the kept tail).
        tail_scores: `[T]` the `T = ceil(tail_share * num_impostors)` highest impostor scores, descending.
        tail_first, tail_second: `[T]` identity indices of the tail pairs' two images.
        genuine_scores: `[G]` every same-identity pair's score; genuine_identity: `[G]` its identity index.
    """

    setting: str
    identities: np.ndarray
    images_per_identity: np.ndarray
    num_impostors: int
    tail_scores: np.ndarray
    tail_first: np.ndarray
    tail_second: np.ndarray
    genuine_scores: np.ndarray
    genuine_identity: np.ndarray

    @property
    def tail_is_complete(self) -> bool:
        return self.tail_scores.size == self.num_impostors


def _pair_counts(setting: str, per_identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(impostors [R], genuine-weight helper)`: weighted impostor totals for multiplicities `per_identity [R, I]`
    (already multiplied by the image counts)."""
    total = per_identity.sum(axis=-1)
    square = np.square(per_identity).sum(axis=-1)
    cross = total * total - square  # ordered cross-identity pairs
    return (cross / 2 if setting == "lr-lr" else cross), square


def all_pair_scores(
    first: np.ndarray | torch.Tensor, second: np.ndarray | torch.Tensor | None, labels: Sequence[int] | np.ndarray,
    setting: str = "lr-lr", tail_share: float = 1e-2, min_tail: int = 0, max_block_bytes: int = 64 << 20,
) -> AllPairScores:
    """Score every pair among `N` images in row blocks (cosine of L2-normalised embeddings).

    Args:
        first: `[N, E]` embeddings (the high-resolution side for "hr-lr").
        second: `[N, E]` embeddings of the same images (the low-resolution side); None for "lr-lr" on `first`.
        labels: `[N]` identity labels.
        setting: "lr-lr" (unordered pairs of `first` with itself; `second` must be None or equal `first`) or
            "hr-lr" (ordered pairs, `first[i]` against `second[j]`, `i != j`).
        tail_share: the share of the highest impostor scores kept; figures at FAR below it are exact.
        min_tail: keep at least this many (small sets: a bootstrap resample's threshold moves far in share).
        max_block_bytes: bound on one block's `[B, N]` float64 score matrix (about 3 such arrays live at once).
    """
    if setting not in ("lr-lr", "hr-lr"):
        raise ValueError(f"all_pair_scores: setting = {setting!r}, expected 'lr-lr' or 'hr-lr'")
    if not 0 < tail_share <= 1:
        raise ValueError(f"all_pair_scores: tail_share must be in (0, 1], got {tail_share}")
    a = l2_normalize(first)
    b = a if second is None else l2_normalize(second)
    labels = np.asarray(labels).reshape(-1)
    if a.shape != b.shape or a.shape[0] != labels.size:
        raise ValueError(f"all_pair_scores: embeddings {a.shape} / {b.shape} and {labels.size} labels disagree")
    identities, ident = np.unique(labels, return_inverse=True)
    counts = np.bincount(ident, minlength=identities.size)
    n = labels.size
    num_impostors = round(float(_pair_counts(setting, counts.astype(np.float64))[0]))
    keep = min(num_impostors, max(int(min_tail), int(np.ceil(tail_share * num_impostors - 1e-9))))
    block = max(1, int(max_block_bytes // (8 * max(n, 1))))
    tail_s = np.empty(0)
    tail_a = tail_b = np.empty(0, dtype=np.int64)
    genuine_s, genuine_id = [], []
    columns = np.arange(n)
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        scores = a[rows] @ b.T  # [B, N]
        if setting == "lr-lr":
            valid = columns[None, :] > rows[:, None]  # each unordered pair once
        else:
            valid = columns[None, :] != rows[:, None]  # both orders, never an image with itself
        same = ident[rows][:, None] == ident[None, :]
        gr, gc = np.nonzero(valid & same)
        genuine_s.append(scores[gr, gc])
        genuine_id.append(ident[rows[gr]])
        impostor = valid & ~same
        if keep and tail_s.size == keep:  # only scores that can enter the tail
            impostor &= scores >= tail_s[-1]
        ir, ic = np.nonzero(impostor)
        cand_s = np.concatenate([tail_s, scores[ir, ic]])
        cand_a = np.concatenate([tail_a, ident[rows[ir]]])
        cand_b = np.concatenate([tail_b, ident[ic]])
        if cand_s.size > keep:
            top = np.argpartition(-cand_s, keep - 1)[:keep] if keep else np.empty(0, dtype=np.int64)
            cand_s, cand_a, cand_b = cand_s[top], cand_a[top], cand_b[top]
        order = np.argsort(-cand_s, kind="stable")
        tail_s, tail_a, tail_b = cand_s[order], cand_a[order], cand_b[order]
    return AllPairScores(
        setting=setting, identities=identities, images_per_identity=counts, num_impostors=num_impostors,
        tail_scores=tail_s, tail_first=tail_a, tail_second=tail_b,
        genuine_scores=np.concatenate(genuine_s) if genuine_s else np.empty(0),
        genuine_identity=np.concatenate(genuine_id) if genuine_id else np.empty(0, dtype=np.int64))


def low_far_figures(
    pairs: AllPairScores, multiplicity: np.ndarray | None = None, fars: Sequence[float] = LOW_FARS,
    percentiles: Sequence[float] = IMPOSTOR_PERCENTILES,
) -> dict[str, np.ndarray]:
    """TAR at each FAR and the impostor-score percentiles, for identity multiplicities (a bootstrap resample).

    Identity `i` drawn `m_i` times counts as `m_i` distinct identities: a pair of images of identities `i != j`
    counts `m_i m_j` times as an impostor, a genuine pair of `i` counts `m_i` times, and two copies of the same
    identity make no pair. With `multiplicity` None (all ones) these are the plain figures over all pairs.

    The threshold at FAR `f` is `tar_at_far`'s: the `(floor(f n) + 1)`-th highest of the `n` (weighted) impostor
    scores, `score > threshold` accepts. The `q`-th percentile of the impostor scores is the same order statistic
    with `f = 1 - q / 100` (so the 99.99th percentile is the threshold of FAR 1e-4).

    Args:
        pairs: from `all_pair_scores`.
        multiplicity: `[I]` or `[R, I]` non-negative integer counts per identity.

    Returns:
        `{"tar@<far>": [R], "threshold@<far>": [R], "p<q>": [R]}` (`[R]` with `R = 1` for a `[I]` or None input).

    Raises:
        ValueError: when a threshold falls below the kept impostor tail (raise `tail_share`).
    """
    n_ident = pairs.identities.size
    m = np.ones((1, n_ident)) if multiplicity is None else np.asarray(multiplicity, dtype=np.float64)
    m = m.reshape(1, -1) if m.ndim == 1 else m
    if m.shape[1] != n_ident:
        raise ValueError(f"low_far_figures: multiplicity has {m.shape[1]} identities, the pairs {n_ident}")
    total_impostors = np.rint(_pair_counts(pairs.setting, m * pairs.images_per_identity)[0])
    levels = {f"threshold@{far:g}": far for far in fars}
    levels.update({f"p{q:g}": round(1.0 - q / 100.0, 12) for q in percentiles})  # 1 - 0.9999 is not 1e-4 in floats
    weights = m[:, pairs.tail_first] * m[:, pairs.tail_second]  # [R, T], tail sorted by descending score
    cumulative = np.cumsum(weights, axis=1)
    out: dict[str, np.ndarray] = {}
    for name, far in levels.items():
        allowed = np.floor(far * total_impostors + 1e-9)  # [R]
        beyond = cumulative > allowed[:, None]
        found = beyond.any(axis=1) if cumulative.shape[1] else np.zeros(m.shape[0], dtype=bool)
        if not found.all() and not pairs.tail_is_complete:
            raise ValueError(f"low_far_figures: the threshold at FAR {far:g} lies below the kept impostor tail "
                             f"({pairs.tail_scores.size} of {pairs.num_impostors}); raise tail_share")
        idx = np.argmax(beyond, axis=1) if cumulative.shape[1] else np.zeros(m.shape[0], dtype=np.int64)
        tail = pairs.tail_scores[idx] if pairs.tail_scores.size else np.full(m.shape[0], -np.inf)
        out[name] = np.where(found, tail, -np.inf)
    order = np.argsort(-pairs.genuine_scores, kind="stable")
    g_desc = pairs.genuine_scores[order]
    g_weight = np.cumsum(m[:, pairs.genuine_identity[order]], axis=1)  # [R, G]
    g_total = g_weight[:, -1] if g_weight.shape[1] else np.zeros(m.shape[0])
    for far in fars:
        thresholds = out[f"threshold@{far:g}"]
        above = np.searchsorted(-g_desc, -thresholds, side="left")  # genuine scores strictly above
        accepted = np.where(above > 0, g_weight[np.arange(m.shape[0]), np.maximum(above - 1, 0)], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"tar@{far:g}"] = np.where(g_total > 0, accepted / g_total, np.nan)
    return out


def identity_resamples(num_identities: int, resamples: int, seed: int = 0) -> np.ndarray:
    """`[R, I]` multiplicities of a bootstrap over identities (I draws with replacement per resample).

    Deterministic in `(num_identities, resamples, seed)`, so two models scored on the same images get the same
    resamples: their bootstrap vectors can be compared resample by resample (a paired bootstrap) later, from
    saved figures alone."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_identities, size=(resamples, num_identities))
    return np.stack([np.bincount(d, minlength=num_identities) for d in draws])


def low_far_evaluation(
    pairs: AllPairScores, resamples: int = 1000, seed: int = 0, fars: Sequence[float] = LOW_FARS,
    percentiles: Sequence[float] = IMPOSTOR_PERCENTILES, chunk: int = 25,
) -> dict[str, Any]:
    """Low-FAR figures with 95 % percentile intervals from a bootstrap over identities.

    Returns:
        `{"figures": {name: value}, "ci95": {name: [lo, hi]}, "boot": {name: [R] per resample},
        "impostors", "genuine", "identities", "resamples", "seed"}` with names `tar@<far>`, `threshold@<far>`, `p<q>`
        (TAR as fractions).
    """
    observed = {k: float(v[0]) for k, v in low_far_figures(pairs, None, fars, percentiles).items()}
    boot: dict[str, list[np.ndarray]] = {k: [] for k in observed}
    if resamples:
        draws = identity_resamples(pairs.identities.size, resamples, seed)
        for start in range(0, resamples, chunk):  # bounds the [chunk, T] weight matrix
            part = low_far_figures(pairs, draws[start:start + chunk], fars, percentiles)
            for k, v in part.items():
                boot[k].append(v)
    boot_arrays = {k: np.concatenate(v) for k, v in boot.items() if v}
    return {
        "figures": observed,
        "ci95": {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in boot_arrays.items()},
        "boot": boot_arrays, "impostors": pairs.num_impostors, "genuine": int(pairs.genuine_scores.size),
        "identities": int(pairs.identities.size), "resamples": int(resamples), "seed": int(seed),
    }


def bootstrap_difference(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """Paired bootstrap comparison from two `[R]` vectors of the same resamples: the mean difference, its 95 %
    percentile interval and the two-sided p-value `2 min(P(d <= 0), P(d >= 0))`, at least `1 / R`."""
    d = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"bootstrap_difference: expected two equal [R] vectors, got {np.shape(first)}, "
                         f"{np.shape(second)}")
    p = 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))
    return {"p": min(1.0, max(p, 1.0 / d.size)), "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
            "resamples": int(d.size)}


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
def embed_uint8(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256, device: str | None = None,
                backend: str = "torch") -> np.ndarray:
    """Embed `[N, S, S, 3]` uint8 RGB faces with a face encoder in eval mode -> `[N, E]` float32 (not normalised).

    `backend`: `"torch"`, an ONNX Runtime graph (`"onnx"`, `"onnx-int8"`), an OpenVINO one (`"openvino"`,
    `"openvino-int8"`: calibrated on up to 300 of these images) or `"auto"` (`rankface.inference`).
    """
    device = device or next(model.parameters()).device
    run = None
    if backend != "torch":
        from rankface.inference.backends import face_runner, resolve_backend

        backend = resolve_backend(backend, device, "face")
        from rankface.inference.openvino_engine import calibration_sample

        calibration = lambda: pixel_values_from_uint8(
            images[calibration_sample(len(images))], model.config).numpy()
        run = face_runner(model, backend, calibration=calibration) if backend != "torch" else None
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            pixel_values = pixel_values_from_uint8(images[start:start + batch_size], model.config)
            if run is not None:  # an ONNX Runtime or OpenVINO graph
                out.append(run(pixel_values))
                continue
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
