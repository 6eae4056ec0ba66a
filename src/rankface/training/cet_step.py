"""One CET training micro-batch: relevance and selection model, each weighted by the other (methods.md §1).

`weights_from="eval_forward"` is the authors' algorithm: the weights come from an extra no-grad forward of
each model in eval mode (dropout off): 4 forwards + 2 backwards. `"train_logits"` reuses the detached
logits of the training forwards (dropout on): 2 forwards + 2 backwards.
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator

from rankface.losses.cet import cet_loss, coupled_weights, fixed_propensity_logits


def make_cet_step(args, accelerator: Accelerator):
    """A step function for `rankface.training.loop`: `(learners, features) -> {name: value}`."""

    def eval_forward(model, features) -> torch.Tensor:
        module = accelerator.unwrap_model(model)
        module.eval()
        with torch.no_grad(), accelerator.autocast():
            scores = module(features).float()
        module.train()
        return scores

    # 'oracle_pool': no selection model, its propensity is given (`fixed_view`).
    fixed = getattr(args, "cet_selection", "same") == "oracle_pool"

    def fixed_view(sel_features) -> torch.Tensor:
        # Rank features `[Q, D, 2]` of the pooling run, column 0 = log1p(rank): pooled = rank <= the pool depth.
        pooled = sel_features["features"][..., 0] <= math.log1p(args.cet_oracle_pool_depth) + 1e-6
        return fixed_propensity_logits(pooled, args.cet_oracle_propensity, args.cet_temperature)

    def cet_step(learners, features) -> dict[str, float]:
        relevance = learners[0].model
        selection = None if fixed else learners[1].model
        # Text features for both models, or separate ones when the selection model reads first-stage ranks.
        rel_features = features.get("relevance", features)
        sel_features = features.get("selection", features)
        if args.cet_weights_from == "eval_forward":
            rel_view = eval_forward(relevance, rel_features)
            sel_view = fixed_view(sel_features) if fixed else eval_forward(selection, sel_features)
        rel_scores = relevance(rel_features).float()
        sel_scores = fixed_view(sel_features).to(rel_scores.device) if fixed else selection(sel_features).float()
        if args.cet_weights_from == "train_logits":
            rel_view, sel_view = rel_scores.detach(), sel_scores.detach()
        sel_view = sel_view.to(rel_view.device)
        # Weights on the negatives only ([Q, K]) or on every document of the group ([Q, 1 + K]).
        columns = slice(1, None) if args.cet_weight_on == "negative" else slice(None)
        rel_weights = coupled_weights(sel_view[:, columns], args.cet_temperature)  # the selection model's belief
        sel_weights = coupled_weights(rel_view[:, columns], args.cet_temperature)  # the relevance model's belief
        options = {"form": args.loss, "weight_on": args.cet_weight_on, "normalize_weights": args.cet_normalize_weights}
        rel_loss = cet_loss(rel_scores, rel_weights, **options)
        sel_loss = cet_loss(sel_scores, sel_weights, **options)
        # The two models share no parameters, so one backward of the sum gives each its own gradient (a fixed
        # propensity has none: its loss is only logged).
        accelerator.backward(rel_loss if fixed else rel_loss + sel_loss)
        values = {
            "loss": rel_loss.item(),
            "selection_loss": sel_loss.item(),
            "weight_mean": rel_weights.mean().item(),
        }
        # How far the selection model's view is from the relevance model's, over this batch's weighted documents:
        # with g ~ f CET only weights each negative by the model's own relevance (corr(w_f, f) near 1).
        rel_cols = rel_view[:, columns]
        for name, a, b in (("corr_g_f", sel_view[:, columns], rel_cols), ("corr_wf_f", rel_weights, rel_cols)):
            value = pearson(a, b)
            if value is not None:  # undefined (a constant side) is left out rather than logged as NaN
                values[name] = value
        return values

    if args.loss not in ("pairwise", "listwise"):
        raise ValueError(f"CET supports loss 'pairwise' or 'listwise', got {args.loss!r}")
    return cet_step


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two same-shape tensors over all their entries; None when either is constant."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = (a.norm() * b.norm()).item()
    if not denominator > 0:
        return None
    return float((a @ b).item() / denominator)
