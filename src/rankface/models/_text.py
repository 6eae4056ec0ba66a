"""Pieces shared by the text models: precision choice, layer truncation, length-sorted batching."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence

import torch
from transformers import PreTrainedModel

from rankface import hardware

PRECISIONS = ("auto", "bf16", "fp32", "int8")
# What `auto` picks on a CPU without native bf16. fp32 until R2 shows int8's nDCG@10 within 0.005 of fp32 (see
# benchmarks/rerank_throughput.py); "int8" here makes `auto` pick dynamic int8 quantization there.
AUTO_CPU_WITHOUT_BF16 = "fp32"
# Measured by R2 --quick (MiniLM-L6 cross-encoder, 2 threads) on an AVX2-only AMD EPYC (issue 9).
SLOW_BF16_MESSAGE = (
    "precision='bf16' on a CPU without native bf16 ({cpu}): torch emulates bf16 here, and R2 measured it at "
    "2.95 pairs/s, 4.7x slower than sentence-transformers in fp32, on an AVX2-only EPYC (MiniLM-L6 cross-encoder, "
    "2 threads). Use precision='auto' (it picks {auto} on this CPU) or 'int8'."
)
_warned_slow_bf16 = False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run: `auto` means bf16 where the hardware runs it natively (CUDA with bf16, CPUs with
    AVX-512 bf16 or AMX), else `AUTO_CPU_WITHOUT_BF16` on CPU and fp32 elsewhere.

    Forcing `bf16` on a CPU without native bf16 warns once per process (it is several times slower than fp32
    there); `int8` (dynamic quantization of the linear layers) runs on CPU only.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision='int8' (dynamic quantization) runs on CPU only, the model is on {device}")
    if precision == "bf16" and device.type == "cpu" and not _cpu_has_bf16():
        _warn_slow_bf16()
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        # oneDNN takes the fast bf16 path only with native bf16 instructions; elsewhere bf16 is emulated and slower.
        return "bf16" if torch.backends.mkldnn.is_available() and _cpu_has_bf16() else AUTO_CPU_WITHOUT_BF16
    return "fp32"


def _cpu_has_bf16() -> bool:
    """Native bf16 on this CPU, following any instruction-set caps in force (`rankface.hardware`)."""
    return hardware.native_bf16()


def _warn_slow_bf16() -> None:
    global _warned_slow_bf16
    if _warned_slow_bf16:  # once per process, whatever the warning filters: a loop of predict calls says it once
        return
    _warned_slow_bf16 = True
    cpu = hardware.describe_class().split(";")[0]
    warnings.warn(SLOW_BF16_MESSAGE.format(cpu=cpu, auto=AUTO_CPU_WITHOUT_BF16), RuntimeWarning, stacklevel=3)


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


class QuantizedCopy:
    """A dynamically int8-quantized copy of a model for CPU inference, rebuilt only when the weights change.

    Every linear layer but the last (the scoring head, kept in fp32 as in `LowPrecisionCopy`) gets int8 weights,
    one scale per output channel, and quantizes its input per batch at run time (`quantize_dynamic`); the int8
    matmuls run in FBGEMM, which is fast on AVX2 as well as on AVX-512. Embeddings, layer norms, softmax and
    attention's own matmuls stay in fp32. Keyed and held like `LowPrecisionCopy`.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: torch.nn.Module | None = None

    def get(self, model: torch.nn.Module) -> torch.nn.Module:
        key = tuple((p.data_ptr(), p._version) for p in model.parameters())
        if key != self._key:
            self._model, self._key = quantize_linear_layers(model), key
        return self._model


def quantize_linear_layers(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy of `model` whose linear layers, except the last, are dynamically int8-quantized."""
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as err:  # torch.ao.quantization moves to torchao; it is still in torch 2.13
        raise RuntimeError(f"precision='int8' needs torch.ao.quantization.quantize_dynamic ({err})") from err
    copied = copy.deepcopy(model).cpu().float().eval()
    linears = [name for name, m in copied.named_modules() if isinstance(m, torch.nn.Linear)]
    with warnings.catch_warnings():
        # torch 2.13 announces torch.ao.quantization's move to torchao on every call; the API works as documented.
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        return quantize_dynamic(copied, {name: per_channel_dynamic_qconfig for name in linears[:-1]},
                                dtype=torch.qint8)


def read_settings(name_or_path, filename: str) -> dict:
    """rankface's small settings file (e.g. `max_length`) from a local folder or a Hub repo; `{}` when absent."""
    import json

    from transformers.utils import cached_file

    path = cached_file(
        str(name_or_path), filename, _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return json.loads(open(path, encoding="utf-8").read()) if path else {}
