"""Cheap training modes: what is frozen, what is cached, and which precision a step runs in.

- `full`: every weight trains (the reference).
- `query_side` (dual encoder): the document tower is a frozen copy of the starting weights and the corpus is
  encoded once (cached on disk, keyed by tower and corpus), so a step encodes only the short queries.
- `partial`: the embeddings and the bottom `frozen_layers` transformer layers are frozen; backward stops there.
- mixed precision `auto`: bf16 autocast where the hardware runs bf16 natively, fp32 elsewhere (as at inference).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from rankface.models._text import resolve_precision


def resolve_mixed_precision(setting: str | None) -> str | None:
    """Accelerate's `mixed_precision` for a setting: `auto` becomes `bf16` where native, else `no`."""
    if setting != "auto":
        return setting
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return "bf16" if resolve_precision("auto", device) == "bf16" else "no"


def apply_training_mode(model: torch.nn.Module, args, corpus: Mapping[str, str] | None = None) -> torch.nn.Module:
    """Freeze (and for `query_side`, cache) as `args.training_mode` says; returns `model`, changed in place.

    Must run before LoRA is applied: the frozen document tower is a copy of the plain weights.
    """
    if args.training_mode == "query_side":
        from rankface.models.bi_encoder.document_cache import cached_document_embeddings

        model.freeze_document_tower()
        if corpus is not None:
            cache_dir = args.document_cache or args.cache_dir
            model.use_document_cache(cached_document_embeddings(
                model, corpus, cache_dir, batch_size=args.eval_batch_size, show_progress_bar=not args.quiet))
    elif args.training_mode == "partial":
        freeze_bottom_layers(model.model, args.frozen_layers)
    if args.freeze_embeddings:
        hf_model = model.model
        getattr(hf_model, hf_model.base_model_prefix, hf_model).embeddings.requires_grad_(False)
    return model


def freeze_bottom_layers(hf_model, num_layers: int) -> None:
    """Freeze the embeddings and the first `num_layers` encoder layers of a transformers model."""
    base = getattr(hf_model, hf_model.base_model_prefix, hf_model)
    layers = base.encoder.layer
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"frozen_layers must be in 1..{len(layers)} for this {len(layers)}-layer model, got {num_layers}")
    base.embeddings.requires_grad_(False)
    for layer in layers[:num_layers]:
        layer.requires_grad_(False)


__all__ = ["apply_training_mode", "freeze_bottom_layers", "resolve_mixed_precision"]
