"""Ranking losses over groups: `scores [Q, D]` with the labelled positive in column 0, the rest negatives.

Every function returns the mean over queries. `weights` (optional, `[Q, D-1]`) scale each negative's term:
all ones is plain training; CET (`rankface.losses.cet`) supplies its coupled weights through the same
argument, so plain and CET training differ only in the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("pairwise", "listwise", "bce")


def pairwise_softmax_loss(scores: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Two-way softmax cross-entropy of the positive against each negative, averaged over negatives.

    `l = mean_k w_k · log(1 + exp(s_k − s_+))`  (Burges et al. RankNet; the form used by the CET authors).

    Args:
        scores: `[Q, 1 + K]`, column 0 the positive.
        weights: `[Q, K]` per-negative weights, or None for ones.
    """
    _check(scores, weights)
    terms = F.softplus(scores[:, 1:] - scores[:, :1])
    if weights is not None:
        terms = terms * weights
    return terms.mean()


def listwise_softmax_loss(scores: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Localized contrastive estimation (LCE, Gao et al. 2021): softmax cross-entropy with the positive as target.

    `l = −s_+ + log(exp(s_+) + Σ_k w_k exp(s_k))`; weights enter as log-offsets of the negatives' logits.

    Args:
        scores: `[Q, 1 + K]`, column 0 the positive.
        weights: `[Q, K]` per-negative weights (> 0), or None for ones.
    """
    _check(scores, weights)
    if weights is not None:
        scores = torch.cat([scores[:, :1], scores[:, 1:] + weights.log()], dim=1)
    return torch.logsumexp(scores, dim=1).sub(scores[:, 0]).mean()


def pointwise_bce_loss(scores: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on each score (positive → 1, negatives → 0), averaged over all `Q·(1+K)` entries.

    Args:
        scores: `[Q, 1 + K]` logits, column 0 the positive.
        weights: `[Q, K]` per-negative weights, or None for ones.
    """
    _check(scores, weights)
    targets = torch.zeros_like(scores)
    targets[:, 0] = 1.0
    per_entry = F.binary_cross_entropy_with_logits(scores, targets, reduction="none")
    if weights is not None:
        per_entry = torch.cat([per_entry[:, :1], per_entry[:, 1:] * weights], dim=1)
    return per_entry.mean()


def graded_listwise_loss(scores: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy against graded targets (ListNet's top-one form with exponential gains).

    `l = −Σ_i p_i log softmax(s)_i` with `p_i = (2^g_i − 1) / Σ_j (2^g_j − 1)`: a grade-3 document should take more
    of the probability mass than a grade-1 one, and unjudged or grade-0 documents none. The gain is nDCG's, so the
    loss asks for the order that nDCG rewards. Every query needs at least one document of grade >= 1.

    Args:
        scores: `[Q, D]` scores of any `D` candidates per query (no column is special).
        grades: `[Q, D]` relevance grades (0 = not relevant or unjudged).
    """
    if scores.shape != grades.shape or scores.dim() != 2:
        raise ValueError(f"scores and grades must both be [Q, D], got {tuple(scores.shape)} and {tuple(grades.shape)}")
    gains = torch.pow(2.0, grades.to(scores.dtype)) - 1.0
    totals = gains.sum(dim=1, keepdim=True)
    if bool((totals <= 0).any()):
        raise ValueError("every query needs at least one candidate of grade >= 1 for the graded listwise loss")
    # A column may score -inf (left out of the softmax, e.g. a corpus document already in the group): its gain is 0,
    # and 0 * -inf would be nan, so such terms are zeroed rather than multiplied.
    terms = torch.where(gains > 0, gains / totals * F.log_softmax(scores, dim=1), torch.zeros_like(scores))
    return -terms.sum(dim=1).mean()


def ranking_loss(name: str, scores: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch by name: one of `LOSSES`."""
    functions = {"pairwise": pairwise_softmax_loss, "listwise": listwise_softmax_loss, "bce": pointwise_bce_loss}
    if name not in functions:
        raise ValueError(f"unknown ranking loss {name!r}; expected one of {LOSSES}")
    return functions[name](scores, weights)


def _check(scores: torch.Tensor, weights: torch.Tensor | None) -> None:
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be [Q, 1 + K] with K >= 1 negatives, got shape {tuple(scores.shape)}")
    if weights is not None and weights.shape != (scores.shape[0], scores.shape[1] - 1):
        raise ValueError(f"weights must be [Q, K] = {(scores.shape[0], scores.shape[1] - 1)}, got {tuple(weights.shape)}")
