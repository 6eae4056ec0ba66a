"""The CET objective: coupled weights and the weighted ranking loss of the relevance and selection models.

Cai, Guo, Fan, Ai, Zhang, Cheng. "Hard Negatives or False Negatives: Correcting Pooling Bias in Training Neural
Ranking Models". CIKM 2022, arXiv:2209.05072 (authors' code: caiyinqiong/Coupled_Estimation_Technique).

CET trains two models on the same batches: a relevance model `f` (the reranker kept for inference) and a
selection model `g` (how likely an unlabelled document was pooled and judged). Each model's loss is weighted by
the *other* model's belief about the negative:

    w_f = 1 / (1 - sigmoid(g(q, d-) / T))        w_g = 1 / (1 - sigmoid(f(q, d-) / T))

and, with one negative per query (the authors' setting),

    L = mean over triples of  w * log(1 + exp(h(q, d-) - h(q, d+))).

These are pure tensor functions: the caller runs the models, picks which logits feed which weight (see
`rankface.training.cet_step`) and owns the optimizers. A loss never holds a model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FORMS = ("pairwise", "listwise")
WEIGHT_ON = ("negative", "positive", "both")


def coupled_weights(
    other_logits: torch.Tensor, temperature: float = 1.0, max_weight: float | None = None
) -> torch.Tensor:
    """CET's coupled weights `w = 1 / (1 - sigmoid(x / T))` from the other model's logits, without gradient.

    Computed as the identity `1 / (1 - sigmoid(z)) = 1 + exp(z)`, which never divides by a rounded-off zero (the
    literal form returns `inf` from z = 17 in fp32). Weights are >= 1 and unnormalised, as in the authors' code.

    Args:
        other_logits: the other model's logits, any shape, e.g. `[Q, K]` on the negatives. Any float dtype; the
            weights are computed in fp32.
        temperature: `T` (the authors' `debias_ratio`; their released run uses 10, their code default 2). Larger
            T pulls every weight towards 2.
        max_weight: optional upper clip; `exp` overflows to `inf` for `x / T > 88` in fp32.

    Returns:
        `float32` tensor of the same shape as `other_logits`, detached from the graph.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_weight is not None and max_weight < 1:
        raise ValueError(f"max_weight must be >= 1 (every coupled weight is >= 1), got {max_weight}")
    z = other_logits.detach().float() / temperature
    weights = 1.0 + torch.exp(z)
    if max_weight is not None:
        weights = weights.clamp(max=max_weight)
    return weights


def fixed_propensity_logits(pooled: torch.Tensor, propensity: float, temperature: float) -> torch.Tensor:
    """Selection logits of CET's oracle propensity: `g` with `sigmoid(g / T) = p` for pooled documents and `1 - p`
    for the others, so that `w_f = 1 / (1 - sigmoid(g / T))` is `1 / (1 - p)` or `1 / p` (R1's
    `cet-oracle-propensity`: the bound of CET's weighting form when the propensity is right).

    Args:
        pooled: bool tensor, any shape (e.g. `[Q, 1 + K]`): was the document in the judged pool?
        propensity: `p` in (0, 1).
        temperature: CET's `T` (the logits are scaled by it, so that the weights do not depend on it).

    Returns:
        `float32` logits of `pooled`'s shape.
    """
    if not 0 < propensity < 1:
        raise ValueError(f"propensity must be in (0, 1), got {propensity}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logit = temperature * math.log(propensity / (1 - propensity))
    return torch.where(pooled.bool(), torch.tensor(logit), torch.tensor(-logit)).float()


def cet_loss(
    scores: torch.Tensor,
    weights: torch.Tensor | None,
    form: str = "pairwise",
    weight_on: str = "negative",
    normalize_weights: bool = False,
) -> torch.Tensor:
    """Weighted ranking loss of one CET model over groups of one labelled positive and K negatives.

    With `s+ = scores[:, 0]`, `s_k = scores[:, k]` (k = 1..K), `w_k` the negative weights and `w+` the positive
    weight (both 1 when not used by `weight_on`):

    - `pairwise` (the authors' form; K = 1 reproduces their code exactly):
      `L = mean over (q, k) of  w+ * w_k * log(1 + exp(s_k - s+))`
    - `listwise` (softmax cross-entropy over the group, each negative counted `w_k` times in the partition
      function, i.e. `log w_k` added to its logit):
      `L = mean over q of  w+ * (log(exp(s+) + sum_k w_k exp(s_k)) - s+)`.
      With all weights 1 this is the plain listwise (LCE) loss; with K = 1 it is `log(1 + w exp(s- - s+))`, which
      is *not* the authors' pairwise term (use `pairwise` to reproduce them).

    Weights never carry gradient (they are detached here). With `normalize_weights=True` each weight tensor
    actually used (the negative columns; the positive column) is divided by its batch mean, so that the loss keeps
    the scale of plain training. This is not a learning-rate correction: AdamW is invariant to a constant loss
    scale, so unnormalised weights do not raise the effective learning rate. What normalising can change is the
    batch-to-batch variation of the weights' mean and whether gradient clipping triggers (a larger loss reaches the
    clipping norm sooner); how unequal the weights are within a batch, the correction itself, is the same.

    Args:
        scores: `[Q, 1 + K]` logits of the model being trained; column 0 is the labelled positive.
        weights: `[Q, K]` negative weights for `weight_on="negative"`; `[Q, 1 + K]` (column 0 the positive's
            weight) for `"both"`; `[Q, 1 + K]` or `[Q, 1]` for `"positive"`. `None` means all ones (plain training).
        form: `"pairwise"` or `"listwise"`.
        weight_on: which documents' weights are applied: `"negative"` (the authors), `"positive"`, `"both"`.
        normalize_weights: divide the used weights by their batch mean.

    Returns:
        Scalar loss in the scores' dtype (fp32 for bf16/fp16 scores, which are upcast first).
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if weight_on not in WEIGHT_ON:
        raise ValueError(f"weight_on must be one of {WEIGHT_ON}, got {weight_on!r}")
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be [Q, 1 + K] with K >= 1 (column 0 the positive), got {tuple(scores.shape)}")
    num_queries, group = scores.shape
    num_neg = group - 1
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # log/exp of a group in half precision loses the small score differences
    w_pos, w_neg = _split_weights(weights, weight_on, num_queries, num_neg, scores.dtype, scores.device)
    if normalize_weights:
        w_pos = w_pos / w_pos.mean() if w_pos is not None else None
        w_neg = w_neg / w_neg.mean() if w_neg is not None else None

    positive = scores[:, :1]
    negatives = scores[:, 1:]
    if form == "pairwise":
        terms = F.softplus(negatives - positive)  # [Q, K]; softplus(x) = log(1 + exp(x)), stable for large x
        if w_neg is not None:
            terms = terms * w_neg
        if w_pos is not None:
            terms = terms * w_pos
        return terms.mean()
    neg_logits = negatives if w_neg is None else negatives + torch.log(w_neg)
    per_query = torch.logsumexp(torch.cat([positive, neg_logits], dim=1), dim=1) - positive.squeeze(1)  # [Q]
    if w_pos is not None:
        per_query = per_query * w_pos.squeeze(1)
    return per_query.mean()


def _split_weights(
    weights: torch.Tensor | None,
    weight_on: str,
    num_queries: int,
    num_neg: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`(w_pos [Q, 1] | None, w_neg [Q, K] | None)`, detached, in the scores' dtype, shape-checked."""
    if weights is None:
        return None, None
    weights = weights.detach().to(device=device, dtype=dtype)
    if weights.dim() != 2 or weights.shape[0] != num_queries:
        raise ValueError(f"weights must be 2-D with {num_queries} rows (one per query), got {tuple(weights.shape)}")
    if not torch.isfinite(weights).all() or (weights <= 0).any():
        raise ValueError("weights must be finite and > 0 (coupled weights are >= 1; clip with max_weight)")
    cols = weights.shape[1]
    if weight_on == "negative":
        if cols != num_neg:
            raise ValueError(
                f"weight_on='negative' needs weights [Q, K] = [{num_queries}, {num_neg}], got {cols} columns"
            )
        return None, weights
    if weight_on == "positive":
        if cols not in (1, num_neg + 1):
            raise ValueError(f"weight_on='positive' needs weights [Q, 1] or [Q, 1 + K], got {cols} columns")
        return weights[:, :1], None
    if cols != num_neg + 1:
        raise ValueError(
            f"weight_on='both' needs weights [Q, 1 + K] = [{num_queries}, {num_neg + 1}], got {cols} columns"
        )
    return weights[:, :1], weights[:, 1:]
