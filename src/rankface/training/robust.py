"""Robust fine-tuning: keep what the starting model knows about text the training collection does not hold.

A model fine-tuned on one collection (NFCorpus) can rank other collections worse than its zero-shot start
(issue 18). Two remedies from the literature, both anchored at the starting weights θ₀:

- **WiSE-FT** (Wortsman et al., 2022): interpolate in weight space, θ = (1 − α)·θ₀ + α·θ. α = 1 is the fine-tuned
  model, α = 0 the start. Free after training: one run gives every α (`interpolate_folders`, `rankface
  interpolate`); the training setting `wise_ft_alpha` applies it to the final model as it is saved.
- **L2-SP** (Li et al., 2018): a penalty λ·‖θ − θ₀‖² on the trainable weights (setting `l2sp_weight`).
- **A query-domain gate** (query-side bi-encoders; `models/bi_encoder/domain_gate.py`): the saved model uses its
  trained query tower on queries like its training queries and its starting tower on the others (setting
  `domain_gate_threshold`; `gate_folder`, `rankface gate` for a model already trained).

Only the encoder (the transformer's base model, without BERT's pooler) is interpolated: a cross-encoder's scoring
head (classifier and pooler) starts random, and mixing a trained head with a random one is noise, so the head is the
fine-tuned one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch


# ---------------------------------------------------------------------------------------------- WiSE-FT
def interpolate_weights(start: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """`(1 − alpha)·start + alpha·finetuned` for every floating-point tensor; other tensors (integer buffers such
    as position ids) must be equal and are taken from `finetuned`.

    `torch.lerp` computes `start + α·(finetuned − start)` for α < 0.5 and `finetuned − (1 − α)·(finetuned − start)`
    otherwise, so α = 0 gives `start` and α = 1 gives `finetuned` bit for bit.

    Raises:
        ValueError: alpha outside [0, 1], or the two state dicts do not hold the same tensors (names, shapes).
    """
    check_alpha(alpha)
    if set(start) != set(finetuned):
        only_start, only_tuned = sorted(set(start) - set(finetuned)), sorted(set(finetuned) - set(start))
        raise ValueError(f"cannot interpolate models with different weights: only in the start {only_start[:3]}, "
                         f"only in the fine-tuned model {only_tuned[:3]}")
    mixed = {}
    for name, tuned in finetuned.items():
        begin = start[name]
        if begin.shape != tuned.shape:
            raise ValueError(f"cannot interpolate weight {name!r}: shape {tuple(begin.shape)} in the start, "
                             f"{tuple(tuned.shape)} in the fine-tuned model")
        if tuned.is_floating_point():
            begin = begin.to(tuned.device, tuned.dtype)
            # Where the two agree (a frozen tower, untouched rows) keep the weight's bits: start + α·0 turns a -0.0
            # into +0.0, which changes the tower's fingerprint and so re-encodes a cached corpus for nothing.
            mixed[name] = torch.where(begin == tuned, tuned, torch.lerp(begin, tuned, alpha))
        elif torch.equal(begin.to(tuned.device), tuned):
            mixed[name] = tuned.clone()
        else:
            raise ValueError(f"cannot interpolate the non-float buffer {name!r}: it differs between the models")
    return mixed


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"the WiSE-FT alpha must be in [0, 1] (0: the starting model, 1: the fine-tuned one), "
                         f"got {alpha}")


HEAD_PREFIXES = ("pooler.",)


def encoder_towers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The transformer encoders of a rankface text model, without heads: `{"query", "document"}` for a bi-encoder
    (the same module twice when one tower serves both), `{"encoder"}` for a cross-encoder."""
    if hasattr(model, "document_model"):  # BiEncoder
        return {"query": _base(model.model), "document": _base(model.document_model)}
    return {"encoder": _base(model.model)}


def _base(hf_model: torch.nn.Module) -> torch.nn.Module:
    return getattr(hf_model, getattr(hf_model, "base_model_prefix", ""), hf_model)


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold LoRA adapters into the weights (a no-op without them), so the names match the starting model's."""
    if hasattr(getattr(model, "model", None), "merge_and_unload"):
        model.model = model.model.merge_and_unload()
    return model


@torch.no_grad()
def interpolate_model_(finetuned: torch.nn.Module, start: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """Set `finetuned`'s encoder weights to `(1 − alpha)·start + alpha·finetuned`, in place; returns `finetuned`.

    A two-tower bi-encoder (query-side training) is interpolated tower by tower against the start's tower(s); its
    frozen document tower equals the start's, so it stays as it is (and its cached corpus embeddings stay valid).
    """
    merge_lora(finetuned)
    tuned_towers, start_towers = encoder_towers(finetuned), encoder_towers(start)
    if set(tuned_towers) != set(start_towers):
        raise ValueError(f"cannot interpolate a {type(finetuned).__name__} with a {type(start).__name__}")
    done: set[int] = set()
    for name, tower in tuned_towers.items():
        if id(tower) in done:  # one tower shared by queries and documents: interpolated once
            continue
        done.add(id(tower))
        tuned = tower.state_dict()
        # BERT's pooler feeds a cross-encoder's classifier and is trained with it as part of the head (it is
        # re-initialised with the new head): it is the fine-tuned one, like the classifier.
        body = {k: v for k, v in tuned.items() if not k.startswith(HEAD_PREFIXES)}
        start_body = {k: v for k, v in start_towers[name].state_dict().items() if not k.startswith(HEAD_PREFIXES)}
        tower.load_state_dict(tuned | interpolate_weights(start_body, body, alpha))
    return finetuned


def load_start_model(model_name_or_path: str, encoder: str, num_layers: int | None = None) -> torch.nn.Module:
    """The starting model of a fine-tuning run (`minilm` = the bundled MiniLM), as the `encoder` kind, on the CPU
    (`num_layers`: the run's truncation of the encoder)."""
    from rankface.models.loader import load_text_scorer
    from rankface.paths import minilm_path

    path = minilm_path() if model_name_or_path == "minilm" else model_name_or_path
    extra = {"num_layers": num_layers} if num_layers else {}
    return load_text_scorer(path, encoder=encoder, allow_untrained_head=True, device="cpu", **extra)


def interpolate_folders(start: str | Path, finetuned: str | Path, alpha: float, output: str | Path) -> Path:
    """Write the WiSE-FT model `(1 − alpha)·start + alpha·finetuned` to `output` (atomically: whole or absent).

    `start` is the starting checkpoint (`minilm` for the bundled MiniLM), `finetuned` a model trained from it; the
    output has the fine-tuned model's layout (two towers for query-side training) and head.
    """
    from rankface.models.loader import load_text_scorer
    from rankface.utils.io import save_folder_atomically

    check_alpha(alpha)
    tuned = load_text_scorer(finetuned, device="cpu")
    kind = "bi" if hasattr(tuned, "document_model") else "cross"
    interpolate_model_(tuned, load_start_model(str(start), kind), alpha)
    return save_folder_atomically(tuned, output)


def apply_wise_ft(model: torch.nn.Module, args) -> torch.nn.Module:
    """The training setting `wise_ft_alpha`: interpolate the final (unwrapped) relevance model with the run's
    starting model `args.model_name_or_path`, in place, before it is saved. No-op when the setting is unset."""
    alpha = getattr(args, "wise_ft_alpha", None)
    if alpha is None:
        return model
    return interpolate_model_(model, load_start_model(args.model_name_or_path, args.encoder, args.num_layers), alpha)


# ---------------------------------------------------------------------------------------------- L2-SP
class L2SP:
    """The penalty `weight · Σ ‖θ − θ₀‖²` over the trainable parameters, θ₀ their values when it was made.

    Make it from the freshly built model, before a checkpoint is loaded: a resumed run then pulls towards the same
    starting weights as the uninterrupted one. Its gradient `2·weight·(θ − θ₀)` is added to the parameters'
    gradients (`add_gradient`) rather than through a second backward pass, which DDP would refuse; the weights are
    the same on every process, so adding it after the gradients are reduced keeps the processes in sync.
    With LoRA the trainable parameters are the adapters, so θ₀ is their initial value (B = 0): the penalty pulls
    the low-rank update towards zero.
    """

    def __init__(self, model: torch.nn.Module, weight: float):
        if weight < 0:
            raise ValueError(f"l2sp_weight must be >= 0, got {weight}")
        self.weight = weight
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def value(self) -> float:
        """`weight · Σ ‖θ − θ₀‖²` now."""
        total = sum(float(((p.float() - a.float()) ** 2).sum()) for p, a in zip(self.params, self.anchors))
        return self.weight * total

    @torch.no_grad()
    def add_gradient(self, scale: float = 1.0) -> None:
        """Add `scale · 2·weight·(θ − θ₀)` to every trainable parameter's gradient (`scale`: a loss scaler's)."""
        for i, (p, anchor) in enumerate(zip(self.params, self.anchors)):
            if anchor.device != p.device:  # the model was moved (accelerate's prepare): move the anchor once
                anchor = self.anchors[i] = anchor.to(p.device)
            grad = (2.0 * self.weight * scale) * (p.detach() - anchor)
            if p.grad is None:
                p.grad = grad.to(p.dtype)
            else:
                p.grad.add_(grad.to(p.grad.dtype))


def make_l2sp(model: torch.nn.Module, args) -> L2SP | None:
    """The setting `l2sp_weight` for `model` (None when unset or 0)."""
    weight = getattr(args, "l2sp_weight", None)
    return L2SP(model, weight) if weight else None


def with_l2sp(step: Callable, penalty: L2SP | None, accelerator) -> Callable:
    """Wrap a micro-step so that, on the micro-batch that completes an optimizer step, the L2-SP gradient is added
    once (after the loss's backward, before clipping and the optimizer) and its value logged as `l2sp`."""
    if penalty is None:
        return step

    def step_with_penalty(learners, features):
        values = step(learners, features)
        if accelerator.sync_gradients:
            scaler = accelerator.scaler
            penalty.add_gradient(scale=float(scaler.get_scale()) if scaler is not None else 1.0)
            values = {**values, "l2sp": penalty.value()}
        return values

    return step_with_penalty


def apply_domain_gate(model: torch.nn.Module, args, training_queries: dict[str, str]) -> torch.nn.Module:
    """The training setting `domain_gate_threshold`: attach a query-domain gate over the run's training queries to
    the final (unwrapped) bi-encoder before it is saved (`models/bi_encoder/domain_gate.py`). No-op when unset."""
    if getattr(args, "domain_gate_threshold", None) is None:
        return model
    model.attach_domain_gate(list(training_queries.values()), args.domain_gate_threshold,
                             args.domain_gate_temperature, args.domain_gate_k, batch_size=args.eval_batch_size)
    return model


def gate_folder(model_folder: str | Path, training_queries: Sequence[str], threshold: float, temperature: float,
                k: int, output: str | Path) -> Path:
    """Write `model_folder` (a query-side bi-encoder) with a query-domain gate over `training_queries` to `output`
    (atomically: whole or absent); a gate it already had is replaced."""
    from rankface.models.bi_encoder import BiEncoder
    from rankface.utils.io import save_folder_atomically

    model = BiEncoder.from_pretrained(model_folder, device="cpu")
    model.attach_domain_gate(list(training_queries), threshold, temperature, k)
    return save_folder_atomically(model, output)


def check_settings(args) -> None:
    """Validate the robust fine-tuning settings of a `RerankerTrainingArguments`."""
    from rankface.models.bi_encoder.domain_gate import check_gate_settings

    if getattr(args, "wise_ft_alpha", None) is not None:
        check_alpha(args.wise_ft_alpha)
    if (getattr(args, "l2sp_weight", 0.0) or 0.0) < 0:
        raise ValueError(f"l2sp_weight must be >= 0, got {args.l2sp_weight}")
    threshold = getattr(args, "domain_gate_threshold", None)
    if threshold is not None:
        check_gate_settings(threshold, args.domain_gate_temperature, args.domain_gate_k)
        if args.encoder != "bi" or args.training_mode != "query_side":
            raise ValueError("domain_gate_threshold needs encoder 'bi' with training_mode 'query_side' (the gate falls back "
                             f"to the frozen document tower); got encoder {args.encoder!r}, training_mode {args.training_mode!r}")


# ---------------------------------------------------------------------------------------------- command
def add_interpolate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", required=True, help="the starting checkpoint ('minilm': the bundled MiniLM)")
    p.add_argument("--finetuned", required=True, help="a model folder fine-tuned from --start")
    p.add_argument("--alpha", type=float, required=True,
                   help="weight of the fine-tuned model: 0 writes the start, 1 the fine-tuned model")
    p.add_argument("--output", required=True, help="model folder to write (replaced atomically)")
    p.set_defaults(handler=interpolate_command)


def add_gate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a query-side fine-tuned bi-encoder folder")
    p.add_argument("--collection", required=True, help="the collection it was trained on (folder or ir_datasets id)")
    p.add_argument("--split", default="train", help="the split it was trained on (default: train)")
    p.add_argument("--exclude-queries-in", nargs="*", default=[],
                   help="as the training setting exclude_queries_in: leave out queries whose text is in these splits "
                        "(the demo's runs: test dev)")
    p.add_argument("--threshold", type=float, required=True,
                   help="mean cosine to the k nearest training queries at which the trained tower gets weight 0.5")
    p.add_argument("--temperature", type=float, default=0.05, help="the sigmoid's width (default 0.05)")
    p.add_argument("--k", type=int, default=5, help="nearest training queries compared with (default 5)")
    p.add_argument("--output", required=True, help="model folder to write (replaced atomically)")
    p.set_defaults(handler=gate_command)


def gate_command(args: argparse.Namespace, _rest=None) -> int:
    from rankface.data.ir import load_collection
    from rankface.paths import resolve_collection
    from rankface.training.data import training_queries

    queries = training_queries(load_collection(resolve_collection(args.collection)), args.split,
                               args.exclude_queries_in)
    out = gate_folder(args.model, queries.values(), args.threshold, args.temperature, args.k, args.output)
    print(f"wrote {out}: {args.model} gated over {len(queries)} {args.split} queries (threshold {args.threshold:g}, "
          f"temperature {args.temperature:g}, k {args.k})")
    return 0


def interpolate_command(args: argparse.Namespace, _rest=None) -> int:
    out = interpolate_folders(args.start, args.finetuned, args.alpha, args.output)
    print(f"wrote {out}: (1 - {args.alpha:g}) * {args.start} + {args.alpha:g} * {args.finetuned}")
    return 0


__all__ = ["L2SP", "add_gate_arguments", "add_interpolate_arguments", "apply_domain_gate", "apply_wise_ft", "check_settings", "encoder_towers",
           "gate_command", "gate_folder", "interpolate_folders", "interpolate_model_", "interpolate_weights", "make_l2sp", "with_l2sp"]
