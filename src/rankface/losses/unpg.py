"""UNPG: unified negative pair generation (Jung et al., BMVC 2022, arXiv 2203.11593).

The class logits of a margin head (CLPG) are extended with the mini-batch negative pair similarities
(MLPG) that survive a box-and-whisker filter; the same kept values are appended to every row:

    L = -1/B sum_i log( e^{s psi(theta_i,y_i)} / ( e^{s psi(theta_i,y_i)} + sum_{j != y_i} e^{s cos theta_ij}
                                                     + sum_{n in N'} e^{s n} ) )

Appending the same M columns to every row adds the same `sum_n e^{s n} = e^{logsumexp(s N')}` to every
row's partition function, so the loss is computed as the cross-entropy of `[logits, logsumexp(s N')]`
(one extra column): identical in value and gradient to the `[B, C + M]` concatenation of the paper,
without building it, and with PyTorch's fused cross-entropy.

Multi-process: features and labels are all-gathered with a differentiable gather, so N' comes from the
global batch exactly as in a single process. Each rank returns `W / N * sum_{i in its rows} CE_i`
(W processes, N rows in all; with equal shards this is the local mean; MagFace's regulariser, a mean
over the rank's rows, is reweighted the same way). The gather's backward sums the
gradients of every rank's loss into each rank's own rows, so rank k's gradient is
`d(sum_r L_r)/d(its parameters' contribution)`, and DDP's mean over ranks gives
`1/W * d(sum_r L_r) = 1/W * d(W * L_global) = d L_global`: the single-process gradient on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rankface.losses.margins import MarginHead, _check_cos_labels


def _dist_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 (shards may differ in length); backward sums every rank's gradient of the
    gathered tensor (all-reduce) and returns this rank's slice. Works on gloo and NCCL."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int], rank: int, group) -> Tensor:
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(buffers, padded.contiguous(), group=group)
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        return torch.cat([buf[:n] for buf, n in zip(buffers, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def gather_rows(x: Tensor, group=None) -> tuple[Tensor, list[int]]:
    """Differentiable all-gather of `x [n_r, ...]` over the process group -> (`[N, ...]`, shard sizes).

    Without an initialised process group (or with one process) returns `x` itself.
    """
    if _dist_world() == 1:
        return x, [x.shape[0]]
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size, group=group)
    sizes = [int(s.item()) for s in sizes_t]
    if x.requires_grad:
        return _GatherRows.apply(x, sizes, rank, group), sizes
    with torch.no_grad():
        return _GatherRows.apply(x, sizes, rank, group), sizes


def box_whisker_bounds(values: Tensor, wisk: float = 1.5) -> tuple[float, float] | None:
    """`(Q1 - wisk IQR, Q3 + wisk IQR)` with order-statistic quartiles `Q1 = sorted[floor(0.25 L)]`,
    `Q3 = sorted[floor(0.75 L)]` (no interpolation); None with fewer than 4 values (nothing is filtered)."""
    n = values.numel()
    if n < 4:
        return None
    with torch.no_grad():
        ordered = torch.sort(values.detach()).values
        q1, q3 = ordered[(n * 25) // 100], ordered[(n * 75) // 100]  # floor(0.25 L), floor(0.75 L) exactly
        iqr = q3 - q1
        return float(q1 - wisk * iqr), float(q3 + wisk * iqr)


def box_whisker_filter(values: Tensor, wisk: float = 1.5) -> Tensor:
    """Keep values inside `[Q1 - wisk IQR, Q3 + wisk IQR]` (inclusive), order-statistic quartiles.

    `Q1 = sorted[floor(0.25 L)]`, `Q3 = sorted[floor(0.75 L)]` (no interpolation); with fewer than 4
    values nothing is filtered. The bounds are computed without gradient; kept values keep theirs.

    Args:
        values: `[L]`.
        wisk: whisker length k.

    Returns:
        `[M]` kept values, in their original order.
    """
    n = values.numel()
    if n < 4:
        return values
    with torch.no_grad():
        ordered = torch.sort(values.detach()).values
        q1, q3 = ordered[(n * 25) // 100], ordered[(n * 75) // 100]  # floor(0.25 L), floor(0.75 L) exactly
        iqr = q3 - q1
        keep = (values.detach() >= q1 - wisk * iqr) & (values.detach() <= q3 + wisk * iqr)
    return values[keep]


@torch.no_grad()
def unpg_mechanism_stats(logits: Tensor, cos: Tensor, labels: Tensor, candidates: Tensor, kept: Tensor,
                         scale: float, bounds: tuple[float, float] | None) -> dict[str, float]:
    """What UNPG adds on one batch, for the training log (issue 21: is its premise there?).

    Args:
        logits: `[B, C]` the margin head's logits (non-target entries are `s cos`).
        cos: `[B, C]` the classifier cosines.
        labels: `[B]`.
        candidates: `[L]` every in-batch negative pair similarity; kept: `[M]` those the filter kept.
        scale: the head's scale `s` (multiplies the appended similarities too).
        bounds: the filter's `(lower, upper)`, None when nothing was filtered.

    Returns:
        `unpg_pairs` (L), `negatives` (M), `unpg_lower` / `unpg_upper` (only with a filter), `unpg_kept_max`,
        `unpg_share` (mean over rows of the appended pairs' share of the non-target softmax mass
        `sum_n e^{s n} / (sum_{j != y} e^{logit_j} + sum_n e^{s n})`), and the hardest class-negative cosine per row
        `max_{j != y} cos_j` as `unpg_hardest_class_mean` / `_median` / `_max`.
    """
    logits, cos = logits.detach().float(), cos.detach().float()
    target = F.one_hot(labels.long(), cos.shape[1]).bool()
    class_lse = torch.logsumexp(logits.masked_fill(target, float("-inf")), dim=1)  # [B]
    hardest = cos.masked_fill(target, float("-inf")).max(dim=1).values
    out = {"unpg_pairs": int(candidates.numel()), "negatives": int(kept.numel())}
    if bounds is not None:
        out["unpg_lower"], out["unpg_upper"] = float(bounds[0]), float(bounds[1])
    if kept.numel():
        appended = torch.logsumexp(kept.detach().float() * scale, dim=0)
        share = torch.sigmoid(appended - class_lse)  # e^a / (e^c + e^a)
        out["unpg_share"] = float(share.mean())
        out["unpg_kept_max"] = float(kept.max())
    else:
        out["unpg_share"] = 0.0
    if cos.shape[1] > 1:
        out.update(unpg_hardest_class_mean=float(hardest.mean()), unpg_hardest_class_median=float(hardest.median()),
                   unpg_hardest_class_max=float(hardest.max()))
    return out


def negative_pair_similarities(features: Tensor, labels: Tensor) -> Tensor:
    """`G_ab = <x_a, x_b>` for a < b with y_a != y_b, row-major upper-triangle order: `[N, E], [N] -> [L]`."""
    gram = features @ features.T
    n = features.shape[0]
    mask = torch.ones(n, n, dtype=torch.bool, device=features.device).triu_(1) & (labels[:, None] != labels[None, :])
    return gram[mask]


class UNPGLoss(nn.Module):
    """UNPG over any margin head: `UNPGLoss(head, wisk)(embeddings, labels, cos) -> []`.

    Args:
        head: a `MarginHead` (ArcFace, CosFace, AdaFace, MagFace); its scale multiplies the appended
            negatives too, its regulariser (MagFace) is added.
        wisk: whisker length of the box-and-whisker filter (1.5; the authors' K-FACE run used 1.0); None keeps
            every negative pair (no filter).
        gather: all-gather features and labels across processes when `torch.distributed` runs more than
            one process (negatives from the global batch). Turn off to use local negatives only.
        group: process group for the gather (default: the world).
    """

    def __init__(self, head: MarginHead, wisk: float | None = 1.5, gather: bool = True, group=None) -> None:
        super().__init__()
        if wisk is not None and wisk < 0:
            raise ValueError(f"UNPGLoss: `wisk` must be >= 0 (or None: no filter), got {wisk}")
        self.head, self.gather, self.group = head, bool(gather), group
        self.wisk = None if wisk is None else float(wisk)
        self.last_num_negatives = 0  # M of the last call, for logging
        self.last_stats: dict[str, float] = {}  # `unpg_mechanism_stats` of the last call, for logging

    def negatives(self, features: Tensor, labels: Tensor) -> Tensor:
        """Filtered negative similarities `[M]` from normalised features `[N, E]` and labels `[N]`."""
        candidates = negative_pair_similarities(features, labels)
        return candidates if self.wisk is None else box_whisker_filter(candidates, self.wisk)

    def forward(self, embeddings: Tensor, labels: Tensor, cos: Tensor, norms: Tensor | None = None) -> Tensor:
        """UNPG loss of this process's rows.

        Args:
            embeddings: `[B, E]` embeddings, normalised or not (normalised here for G; their norms feed
                AdaFace/MagFace when `norms` is not given, so pass un-normalised ones with those heads).
            labels: `[B]` class indices.
            cos: `[B, C]` cosines from the normalised classifier.
            norms: `[B]` embedding norms (default `embeddings.norm(dim=1)`).

        Returns:
            Scalar fp32 loss; under multi-process training, `W / N * sum of this rank's CE rows` (see module).
        """
        _check_cos_labels(cos, labels, "UNPGLoss")
        if embeddings.dim() != 2 or embeddings.shape[0] != cos.shape[0]:
            raise ValueError(
                f"UNPGLoss: `embeddings` must be [B, E] with B = {cos.shape[0]}, got {tuple(embeddings.shape)}"
            )
        labels = labels.long()
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            if norms is None and self.head.needs_norms:
                norms = embeddings.float().norm(dim=1)
            logits = self.head(cos, labels, norms=norms)
            features = F.normalize(embeddings.float(), dim=1)
            world = _dist_world() if self.gather else 1
            if world > 1:
                features, sizes = gather_rows(features, self.group)
                all_labels, _ = gather_rows(labels, self.group)
            else:
                sizes, all_labels = [labels.shape[0]], labels
            candidates = negative_pair_similarities(features, all_labels)
            kept = candidates if self.wisk is None else box_whisker_filter(candidates, self.wisk)
            self.last_num_negatives = kept.numel()
            self.last_stats = unpg_mechanism_stats(
                logits, cos, labels, candidates, kept, self.head.scale,
                None if self.wisk is None else box_whisker_bounds(candidates, self.wisk))
            equal = all(n == sizes[0] for n in sizes)
            if kept.numel() == 0:
                # exactly the base head's cross-entropy
                ce = F.cross_entropy(logits, labels, reduction="mean" if equal else "sum")
            else:
                # one extra column holding logsumexp(s N') stands for all M appended columns (see module doc)
                lse_neg = torch.logsumexp(kept * self.head.scale, dim=0)
                full = torch.cat([logits, lse_neg.reshape(1, 1).expand(logits.shape[0], 1)], dim=1)
                ce = F.cross_entropy(full, labels, reduction="mean" if equal else "sum")
            loss = ce if equal else ce * world / sum(sizes)
            reg = self.head.regularizer(norms)  # a mean over this rank's rows: reweighted like the CE rows
            if reg is not None and not equal:
                reg = reg * (labels.shape[0] * world / sum(sizes))
            return loss if reg is None else loss + reg

    def extra_repr(self) -> str:
        return f"wisk={self.wisk}, gather={self.gather}"
