"""Pieces shared by the text models: precision choice, layer truncation, length-sorted batching."""

from __future__ import annotations

import contextlib
import copy
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


class LowPrecisionCopy:
    """A bf16 copy of a model for inference, rebuilt only when the weights change.

    bf16 *weights* run faster than bf16 autocast on CPUs (no per-call casts of every weight). The last linear
    layer (the scoring head) stays in fp32 and reads an fp32 input: bf16 logits would be quantised so coarsely
    (steps of ~0.03 near 5) that many candidates of one query would tie. The copy is keyed on each parameter's
    storage and version counter, so an optimizer step or a `.to(device)` invalidates it. It is held outside the
    module tree on purpose: it must not appear in `state_dict` or be saved.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: torch.nn.Module | None = None

    def get(self, model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
        key = (dtype, tuple((p.data_ptr(), p._version) for p in model.parameters()))
        if key != self._key:
            copied = copy.deepcopy(model).to(dtype).eval()
            head = [m for m in copied.modules() if isinstance(m, torch.nn.Linear)][-1]
            head.float()
            head.register_forward_pre_hook(lambda _module, inputs: tuple(x.float() for x in inputs))
            self._model, self._key = copied, key
        return self._model


def read_settings(name_or_path, filename: str) -> dict:
    """rankface's small settings file (e.g. `max_length`) from a local folder or a Hub repo; `{}` when absent."""
    import json

    from transformers.utils import cached_file

    path = cached_file(
        str(name_or_path), filename, _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return json.loads(open(path, encoding="utf-8").read()) if path else {}
