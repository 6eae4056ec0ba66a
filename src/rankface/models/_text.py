"""Pieces shared by the text models: precision choice, layer truncation, length-sorted batching."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from transformers import PreTrainedModel

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` means bf16 where the hardware runs it natively (CUDA with bf16, CPUs with AVX-512 bf16), else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        # oneDNN takes the fast bf16 path only with native bf16 instructions; elsewhere bf16 is emulated and slower.
        return "bf16" if torch.backends.mkldnn.is_available() and _cpu_has_bf16() else "fp32"
    return "fp32"


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def truncate_layers(model: PreTrainedModel, num_layers: int | None) -> None:
    """Keep only the first `num_layers` transformer layers (fast tests and quick benchmarks on real weights)."""
    if num_layers is None:
        return
    base = getattr(model, model.base_model_prefix, model)
    layers = base.encoder.layer
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be in 1..{len(layers)}, got {num_layers}")
    base.encoder.layer = layers[:num_layers]
    model.config.num_hidden_layers = num_layers


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length, longest first, so dynamic padding wastes little."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@contextlib.contextmanager
def expected_weight_changes() -> Iterator[None]:
    """Silence transformers' load report where rankface changes the architecture on purpose.

    (A new scoring head on a plain encoder, or an encoder without its unused pooler: the report's
    MISSING/UNEXPECTED keys are then the intended result, not a warning for the user.)
    """
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
