"""ONNX graphs of rankface models for ONNX Runtime: export, fusion, int8 quantisation, cached by fingerprint.

Three graphs per model, each built from the previous one and kept on disk:

- `plain`: `torch.onnx.export` of the model (TorchScript exporter, dynamic batch and length);
- `opt`: `plain` with ONNX Runtime's own transformer fusions (`onnxruntime.transformers.optimizer`: attention,
  skip layer norm, bias + GELU, embedding layer norm). The exact GELU stays exact: optimum's O3 level also
  approximates it, which moves scores for a speed-up that ONNX Runtime's fused kernels mostly give anyway;
- `int8-<isa>`: `opt` with dynamic int8 quantisation of its matrix multiplications
  (`onnxruntime.quantization.quantize_dynamic`), with the settings optimum's `AutoQuantizationConfig.<isa>`
  uses (per-channel weights, `QUInt8` on AVX2, whose u8 x s8 kernel can saturate, `QInt8` on AVX-512; u8
  activations, full range). Its MatMul and fused Attention nodes are quantised; the pooler and the scoring head
  are Gemm nodes and stay fp32 (int8 logits would tie near-equal candidates).

The cache folder is `$RANKFACE_CACHE/onnx/<kind>-<fingerprint>/`, default `~/.cache/rankface`. The fingerprint
covers the weights, the config, the graph kind and the versions of torch, onnx and onnxruntime, so a retrained
model or an upgraded exporter never reuses a stale graph. Files are written atomically (a crash leaves no half
graph behind), and a graph that ONNX Runtime cannot load is deleted, not cached.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rankface.utils.io import atomic_write

# Bump when a change here changes the graphs, so caches made by an older rankface are not reused.
GRAPH_VERSION = 1
OPSET = 17
# optimum's `AutoQuantizationConfig.<isa>(is_static=False)` settings, as sentence-transformers'
# `export_dynamic_quantized_onnx_model(model, "<isa>")` applies them (read from optimum-onnx 0.1.0).
QUANT_CONFIGS = {
    "avx2": {"weight_type": "QUInt8", "per_channel": True, "reduce_range": False},
    "avx512": {"weight_type": "QInt8", "per_channel": True, "reduce_range": False},
    "avx512_vnni": {"weight_type": "QInt8", "per_channel": True, "reduce_range": False},
}
TEXT_KINDS = ("scores", "embedding")  # a cross-encoder's logit per pair; a bi-encoder's unit mean-pooled vector


def cache_root() -> Path:
    env = os.environ.get("RANKFACE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rankface"


def fingerprint(model: nn.Module, kind: str) -> str:
    """sha256 (first 16 hex) of the weights, the config, the graph kind and the exporter's versions."""
    import onnx
    import onnxruntime

    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    head = [GRAPH_VERSION, kind, torch.__version__, onnx.__version__, onnxruntime.__version__,
            config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config)]
    digest.update(repr(head).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class _TextGraph(nn.Module):
    """What the exported text graph computes: the logit per pair (`scores`) or the unit mean-pooled embedding."""

    def __init__(self, model: nn.Module, kind: str, input_names: list[str]) -> None:
        super().__init__()
        self.model, self.kind, self.input_names = model, kind, input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features = dict(zip(self.input_names, inputs, strict=True))
        if self.kind == "scores":
            return self.model(**features).logits[:, 0]
        hidden = self.model(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def export_text(model: nn.Module, kind: str, input_names: list[str], path: Path) -> Path:
    """Export a Hugging Face text model as a `kind` graph with inputs `input_names` (int64 `[batch, length]`).

    The copy exported uses eager attention: the classic softmax(QK^T)V pattern is what ONNX Runtime's attention
    fusion recognises (an SDPA export is not fused).
    """
    if kind not in TEXT_KINDS:
        raise ValueError(f"kind must be one of {TEXT_KINDS}, got {kind!r}")
    copied = copy.deepcopy(model).cpu().float().eval()
    if hasattr(copied, "set_attn_implementation"):
        copied.set_attn_implementation("eager")
    else:  # pragma: no cover - older transformers
        copied.config._attn_implementation = "eager"
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) for _ in input_names)
    output = "scores" if kind == "scores" else "embedding"
    axes = {name: {0: "batch", 1: "length"} for name in input_names}
    with atomic_write(path, "wb") as handle, warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter (dynamo=False): self-contained file, plain dynamic axes, no onnxscript needed.
        warnings.simplefilter("ignore")
        torch.onnx.export(_TextGraph(copied, kind, input_names), dummy, handle, input_names=input_names,
                          output_names=[output], dynamic_axes={**axes, output: {0: "batch"}}, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    _check(path)
    return path


def export_face(model: nn.Module, path: Path) -> Path:
    """The face encoder's existing export (`models.face_export.export_onnx`): `pixel_values` -> `embedding`."""
    from rankface.models.face_export import export_onnx

    export_onnx(model, path, opset=OPSET)
    return path


def optimise(plain: Path, path: Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's transformer fusions over `plain` (BERT-family graphs), GELU kept exact."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_gelu_approximation = False
    # opt_level 0: only the fusions, written as portable ONNX; the session applies ONNX Runtime's own graph
    # optimisations for the machine it runs on at load time.
    model = optimizer.optimize_model(str(plain), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                     optimization_options=options, opt_level=0)
    # The fused operators live in ONNX Runtime's domain; declare it, or shape inference (quantisation) rejects them.
    if not any(op.domain == "com.microsoft" for op in model.model.opset_import):
        from onnx import helper

        model.model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with atomic_write(path, "wb") as handle:
        handle.write(model.model.SerializeToString())
    _check(path)
    return path


def quantise(source: Path, path: Path, isa: str, op_types: tuple[str, ...] = ("MatMul", "Attention")) -> Path:
    """Dynamic int8 quantisation of `source`'s `op_types` nodes with the settings of `QUANT_CONFIGS[isa]`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if isa not in QUANT_CONFIGS:
        raise ValueError(f"isa must be one of {sorted(QUANT_CONFIGS)}, got {isa!r}")
    settings = QUANT_CONFIGS[isa]
    tmp = path.with_name(path.name + ".partial")
    try:
        quantize_dynamic(source, tmp, op_types_to_quantize=list(op_types), per_channel=settings["per_channel"],
                         reduce_range=settings["reduce_range"], weight_type=getattr(QuantType, settings["weight_type"]),
                         # shape inference stops at ONNX Runtime's fused operators; every tensor here is fp32
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        _check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check(path: Path) -> None:
    """Delete and raise unless ONNX Runtime loads the graph (the fused and quantised graphs hold ONNX Runtime's
    own `com.microsoft` operators, which `onnx.checker` does not know)."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        Path(path).unlink(missing_ok=True)
        raise


def graph_path(model: nn.Module, kind: str, variant: str, input_names: list[str] | None = None,
               attention: tuple[int, int] | None = None) -> Path:
    """The cached graph `variant` (`plain`, `opt`, `int8-<isa>`) of `model`, built (and its sources) if missing.

    Args:
        model: the torch model (a text model for `scores`/`embedding`, a face encoder for `face`).
        kind: `scores`, `embedding` or `face`.
        variant: which graph.
        input_names: the text graph's inputs (the tokenizer's model inputs).
        attention: `(num_heads, hidden_size)` of a text model, for the fusions.
    """
    folder = cache_root() / "onnx" / f"{kind}-{fingerprint(model, kind)}"
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "plain.onnx"
    if not plain.is_file():
        if kind == "face":
            export_face(model, plain)
        else:
            export_text(model, kind, list(input_names or []), plain)
    if variant == "plain":
        return plain
    # Face encoders are convolutional: ONNX Runtime's session-time optimisations (Conv + BatchNorm folding, ...)
    # are their fusions, so their `opt` graph is the plain one.
    opt = plain if kind == "face" else folder / "opt.onnx"
    if not opt.is_file():
        optimise(plain, opt, *attention)
    if variant == "opt":
        return opt
    if variant.startswith("int8-"):
        path = folder / f"{variant}.onnx"
        if not path.is_file():
            isa = variant.removeprefix("int8-")
            if kind == "face":  # a CNN: its convolutions are the work (ConvInteger)
                quantise(opt, path, isa, op_types=("Conv", "MatMul"))
            else:
                quantise(opt, path, isa)
        return path
    raise ValueError(f"unknown graph variant {variant!r}")
