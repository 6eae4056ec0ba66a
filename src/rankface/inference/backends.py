"""Inference backends: which engine runs `CrossEncoder.predict`, `BiEncoder.encode` and the face embedding.

- `torch`: rankface's PyTorch path (with its `precision`: fp32, bf16 weights, FBGEMM int8);
- `onnx`: the exported fp32 graph in ONNX Runtime (its session-time graph optimisations);
- `onnx-opt`: the graph fused by ONNX Runtime's transformer optimizer (attention, skip layer norm, bias GELU);
- `onnx-int8`: the fused graph with dynamic int8 matmuls, quantised with the config of the CPU's ISA
  (`avx512_vnni`, `avx512` or `avx2`; see `quant_isa`);
- `openvino`: the fp32 graph compiled by OpenVINO at its default precision (bf16 on CPUs with native bf16);
- `openvino-int8`: the graph statically quantised by NNCF, calibrated on the first call's inputs
  (`rankface.inference.openvino_engine`);
- `auto`: per CPU class and model family, from `AUTO` (`auto_backend`).

ONNX Runtime picks its kernels from the CPU itself and ignores the ATen/oneDNN/MKL/FBGEMM caps that emulate a
smaller CPU class (`rankface.hardware`). What the caps do change is the class `quant_isa` reads, so under the AVX2
caps the int8 graph is quantised with the `avx2` config (u8 weights), as on an AVX2 machine; its kernels are still
the host's.

Graphs are cached on disk (`rankface.inference.graphs`); sessions are cached per model in memory, keyed on the
weights' storage and version counters (an optimizer step or a `.to()` makes a new one) and the thread count,
which is torch's (`torch.get_num_threads()`) unless given: the same threads as the PyTorch path.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from rankface import hardware

BACKENDS = ("auto", "torch", "onnx", "onnx-opt", "onnx-int8", "openvino", "openvino-int8")
FAMILIES = ("text", "face")
# What `auto` runs, per model family and CPU class (`hardware.CLASSES`). A path other than `torch` appears here only
# after R2's fidelity check on NFCorpus test (325 queries, BM25 top-100) kept overlap@10 >= 0.95 and
# |delta nDCG@10| <= 0.005 against rankface fp32: benchmarks/results/rerank_throughput/fidelity/*.json.
# The fastest path that passed, per class, from R2 with sentence-transformers' backends beside it: on AVX-512 + bf16,
# `openvino` (OpenVINO in bf16: 4.5x sentence-transformers' PyTorch default, 1.4x rankface's own torch bf16);
# `onnx-opt` on the AVX2 class (2.2x; OpenVINO f32 1.8x there). No int8 path is taken: `openvino-int8` passes the
# gate with the bi-encoder (overlap@10 0.964) but not on the cross-encoder pairs R2 times (0.934), and `auto` serves
# both. The `avx512` class without bf16 was not measured on its own; it keeps ONNX Runtime's fp32 graph.
AUTO = {
    "text": {"baseline": "torch", "avx2": "onnx-opt", "avx512": "onnx-opt", "avx512-bf16": "openvino"},
    "face": {"baseline": "torch", "avx2": "torch", "avx512": "torch", "avx512-bf16": "torch"},
}


def auto_backend(family: str, cpu_class: str) -> str:
    """The backend `auto` runs for a model `family` (`text` or `face`) on a CPU of class `cpu_class`."""
    if family not in AUTO:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if cpu_class not in AUTO[family]:
        raise ValueError(f"cpu_class must be one of {hardware.CLASSES}, got {cpu_class!r}")
    return AUTO[family][cpu_class]


def quant_isa(info: dict | None = None) -> str:
    """The int8 quantisation config for the CPU class in `info` (default: this CPU, caps included).

    AVX-512 classes take `avx512_vnni` where the CPU has VNNI (int8 dot products), else `avx512`; smaller classes
    `avx2`. A capped (emulated) AVX2 class takes `avx2`, as a real AVX2 machine would. `$RANKFACE_QUANT_ISA`
    overrides this CPU's choice (R2 judges both configs on one machine).
    """
    if info is None and os.environ.get("RANKFACE_QUANT_ISA"):
        isa = os.environ["RANKFACE_QUANT_ISA"]
        if isa not in ("avx2", "avx512", "avx512_vnni"):
            raise ValueError(f"RANKFACE_QUANT_ISA={isa!r}: expected avx2, avx512 or avx512_vnni")
        return isa
    info = hardware.cpu_class() if info is None else info
    if info["class"] in ("avx512", "avx512-bf16"):
        return "avx512_vnni" if info["flags"].get("avx512_vnni") else "avx512"
    return "avx2"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def engine_available(backend: str) -> bool:
    """Whether the optional engine a concrete backend runs on is installed."""
    if backend.startswith("openvino"):
        from rankface.inference.openvino_engine import available

        return available(backend)
    return backend == "torch" or onnxruntime_available()


def resolve_backend(backend: str, device: torch.device | str = "cpu", family: str = "text",
                    info: dict | None = None) -> str:
    """The concrete backend to run (`auto` resolved for this CPU class; `torch` off CPU).

    Raises:
        ValueError: an unknown backend, or an ONNX backend for a model that is not on the CPU.
        ImportError: an ONNX or OpenVINO backend was asked for by name and its engine is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        info = hardware.cpu_class() if info is None else info
        chosen = auto_backend(family, info["class"])
        # auto never fails for want of an optional engine (onnxruntime, openvino and nncf are extras).
        return chosen if engine_available(chosen) else "torch"
    if backend != "torch":
        if device.type != "cpu":
            raise ValueError(f"backend={backend!r} runs on CPU, the model is on {device}; "
                             "move it with .to('cpu') or use backend='torch'")
        if not engine_available(backend):
            needs = "openvino and nncf: pip install 'rankface[openvino]'" if backend.startswith("openvino") \
                else "onnxruntime: pip install 'rankface[face]' (or onnxruntime)"
            raise ImportError(f"backend={backend!r} needs {needs}")
    return backend


def variant_of(backend: str, info: dict | None = None) -> str:
    """The graph (`graphs.graph_path` variant) an ONNX backend runs."""
    if backend == "onnx":
        return "plain"
    if backend == "onnx-opt":
        return "opt"
    if backend == "onnx-int8":
        return f"int8-{quant_isa(info)}"
    raise ValueError(f"{backend!r} is not an ONNX backend")


# Sessions per torch model, dropped with the model.
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(model: nn.Module, kind: str, variant: str, input_names: list[str] | None = None,
                threads: int | None = None):
    """An ONNX Runtime session of `model`'s graph `variant`, cached per model, weights version and threads."""
    from rankface.inference.graphs import graph_path

    threads = threads or torch.get_num_threads()
    key = (kind, variant, threads, tuple(input_names or ()),
           tuple((p.data_ptr(), p._version) for p in model.parameters()))
    held = _SESSIONS.setdefault(model, {})
    if key not in held:
        config = getattr(model, "config", None)
        attention = (config.num_attention_heads, config.hidden_size) if kind != "face" else None
        path = graph_path(model, kind, variant, input_names, attention)
        held.clear()  # older weights' sessions are stale
        held[key] = cpu_session(path, threads)
    return held[key]


def cpu_session(path, threads: int):
    """An ONNX Runtime CPU session of the graph at `path` on `threads` threads, run sequentially (one operator at a
    time, as torch runs), with all of ONNX Runtime's session-time graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def text_input_names(model: nn.Module, tokenizer) -> list[str]:
    """The tokenizer's model inputs that the model's forward takes (e.g. BERT: ids, token types, mask)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return [name for name in tokenizer.model_input_names if name in accepted]


def samples_of(encoded: Mapping[str, list]) -> list[dict[str, list[int]]]:
    """Up to `CALIBRATION_SAMPLES` tokenized samples spread over a call's `encoded` texts (unpadded): what
    `openvino-int8` calibrates on."""
    from rankface.inference.openvino_engine import calibration_sample

    count = len(encoded["input_ids"])
    return [{name: values[i] for name, values in encoded.items()} for i in calibration_sample(count)]


def text_runner(model: nn.Module, tokenizer, kind: str, backend: str, threads: int | None = None,
                calibration: Callable[[], list[Mapping[str, list[int]]]] | None = None,
                ) -> Callable[[Mapping[str, torch.Tensor]], np.ndarray]:
    """`run(batch) -> float32 ndarray`: a tokenized, padded batch through `model`'s ONNX or OpenVINO graph.

    Args:
        model: a Hugging Face text model (`*ForSequenceClassification` for `scores`, a bare encoder for
            `embedding`).
        tokenizer: its tokenizer (its model inputs name the graph's inputs).
        kind: `scores` (`[N]` logits) or `embedding` (`[N, H]`, unit length, mean-pooled).
        backend: a concrete ONNX or OpenVINO backend (`onnx`, `onnx-opt`, `onnx-int8`, `openvino`, `openvino-int8`).
        calibration: for `openvino-int8`, `calibration()` gives tokenized samples (`{input name: ids}`, unpadded)
            to calibrate on if its graph has to be built.
    """
    names = text_input_names(model, tokenizer)
    if backend.startswith("openvino"):
        from rankface.inference import openvino_engine

        def feeds() -> list[dict[str, np.ndarray]]:
            return [{name: np.asarray([sample[name]], dtype=np.int64) for name in names} for sample in calibration()]

        config = model.config
        compiled = openvino_engine.compiled_model(
            model, kind, backend, names, (config.num_attention_heads, config.hidden_size),
            threads or torch.get_num_threads(), feeds if calibration is not None else None)
        wanted_ov = [port.any_name for port in compiled.inputs]
        infer = openvino_engine.runner(compiled)
        return lambda batch: infer({name: np.asarray(batch[name], dtype=np.int64) for name in wanted_ov})
    session = session_for(model, kind, variant_of(backend), names, threads)
    wanted = [i.name for i in session.get_inputs()]  # the fusions may drop an input the graph does not use

    def run(batch: Mapping[str, torch.Tensor]) -> np.ndarray:
        feeds = {name: np.asarray(batch[name].cpu().numpy() if torch.is_tensor(batch[name]) else batch[name],
                                  dtype=np.int64) for name in wanted}
        return session.run(None, feeds)[0].astype(np.float32, copy=False)

    return run


def face_runner(model: nn.Module, backend: str, threads: int | None = None,
                calibration: Callable[[], np.ndarray] | None = None) -> Callable[[torch.Tensor], np.ndarray]:
    """`run(pixel_values [N, 3, S, S]) -> embedding float32 [N, E]` (not normalised) by the face graph.

    `calibration()`: for `openvino-int8`, images `[M, 3, S, S]` to calibrate on if its graph has to be built.
    """
    if backend.startswith("openvino"):
        from rankface.inference import openvino_engine

        def feeds() -> list[dict[str, np.ndarray]]:
            return [{"pixel_values": np.ascontiguousarray(image[None], dtype=np.float32)} for image in calibration()]

        compiled = openvino_engine.compiled_model(model, "face", backend, None, None,
                                                  threads or torch.get_num_threads(),
                                                  feeds if calibration is not None else None)
        infer, input_name = openvino_engine.runner(compiled), compiled.inputs[0].any_name
        return lambda pixels: infer({input_name: _pixels_array(pixels)})
    session = session_for(model, "face", variant_of(backend), None, threads)
    name = session.get_inputs()[0].name

    def run(pixel_values: torch.Tensor | np.ndarray) -> np.ndarray:
        return session.run(None, {name: _pixels_array(pixel_values)})[0].astype(np.float32, copy=False)

    return run


def _pixels_array(pixel_values: torch.Tensor | np.ndarray) -> np.ndarray:
    if torch.is_tensor(pixel_values):
        return pixel_values.detach().cpu().float().contiguous().numpy()
    return np.ascontiguousarray(pixel_values, dtype=np.float32)


def embed_faces(model: nn.Module, pixel_values: torch.Tensor | np.ndarray, batch_size: int = 256,
                backend: str = "auto") -> np.ndarray:
    """Face embeddings `float32 [N, E]` (not normalised) of normalised `pixel_values [N, 3, S, S]`, by `backend`."""
    device = next(model.parameters()).device
    backend = resolve_backend(backend, device, "face")
    if backend == "torch":
        run = _torch_face_runner(model)
    else:
        from rankface.inference.openvino_engine import calibration_sample

        run = face_runner(model, backend, calibration=lambda: np.asarray(
            pixel_values[calibration_sample(len(pixel_values))], dtype=np.float32))
    out = [run(pixel_values[i:i + batch_size]) for i in range(0, len(pixel_values), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.config.embedding_size), np.float32)


def _torch_face_runner(model: nn.Module) -> Callable:
    device = next(model.parameters()).device

    @torch.inference_mode()
    def run(pixel_values):
        was_training = model.training
        model.eval()
        try:
            pixels = torch.as_tensor(pixel_values).to(device).contiguous(memory_format=torch.channels_last)
            out = model(pixels)
            matching = getattr(out, "matching_embedding", None)
            return (out.embedding if matching is None else matching).float().cpu().numpy()
        finally:
            model.train(was_training)

    return run


def resolve_engine(backend: str, precision: str, device: torch.device | str, family: str = "text") -> str:
    """The concrete backend for a `predict` / `encode` call given both of its knobs.

    A precision other than `auto` names a PyTorch path (bf16 weights, FBGEMM int8, fp32), so with `backend="auto"`
    it runs on `torch`; an ONNX backend asked for by name with such a precision is a contradiction.
    """
    if backend == "auto" and precision != "auto":
        return "torch"
    backend = resolve_backend(backend, device, family)
    if backend != "torch" and precision not in ("auto", "fp32"):
        raise ValueError(f"backend={backend!r} sets its own precision (onnx, onnx-opt: fp32; onnx-int8 and "
                         "openvino-int8: int8; openvino: OpenVINO's default); "
                         f"precision={precision!r} is for backend='torch'")
    return backend
