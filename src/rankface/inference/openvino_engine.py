"""OpenVINO behind `backend="openvino"` and `backend="openvino-int8"` (text and face models).

Both start from the fp32 ONNX graph rankface already exports (`graphs.graph_path(..., "plain")`), which OpenVINO
reads directly:

- `openvino`: that graph compiled by OpenVINO at its default inference precision for the CPU: bf16 where the CPU
  has native bf16 (AVX-512 BF16, AMX), f32 elsewhere; the same rule as rankface's `precision="auto"`, set
  explicitly (`inference_precision`) so that it follows the CPU class caps as well;
- `openvino-int8`: the graph statically quantised to int8 by NNCF (`nncf.quantize`, the engine behind optimum-intel's
  and sentence-transformers' `export_static_quantized_openvino_model`), with NNCF's transformer scheme for text
  models (no quantisation of the softmax and layer-norm inputs; their fp values stay). Static quantisation needs
  calibration inputs: those are the first call's own inputs (up to `CALIBRATION_SAMPLES`, spread over them), as a
  user of sentence-transformers passes a calibration dataset. The quantised graph is saved beside the ONNX graphs
  with the calibration's hash in a JSON sidecar, and later calls (and processes) reuse it for the same weights.

Compiled models are cached per torch model in memory, keyed on the weights' storage and version counters and the
thread count, like ONNX Runtime's sessions (`backends.session_for`).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from rankface.utils.io import write_json

CALIBRATION_SAMPLES = 300  # NNCF's default subset size, and what R2's sentence-transformers anchor calibrates on
OV_BACKENDS = ("openvino", "openvino-int8")

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def available(backend: str = "openvino") -> bool:
    """Whether the engine `backend` needs is installed (openvino; nncf too for `openvino-int8`)."""
    try:
        import openvino  # noqa: F401

        if backend == "openvino-int8":
            import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def calibration_sample(count: int, limit: int = CALIBRATION_SAMPLES) -> list[int]:
    """`min(count, limit)` indices spread evenly over `range(count)` (a call's inputs are often sorted by query or
    length: its first inputs alone would calibrate on one query's documents)."""
    if count <= limit:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, limit)})


def compiled_model(model: nn.Module, kind: str, backend: str, input_names: list[str] | None,
                   attention: tuple[int, int] | None, threads: int,
                   calibration: Callable[[], list[dict[str, np.ndarray]]] | None):
    """The OpenVINO compiled model of `model`'s `kind` graph for `backend`, built (and cached) if missing.

    `calibration()` gives the feeds (`{input name: array}`, one sample each) that `openvino-int8` calibrates on;
    it is called only when the int8 graph has to be built.
    """
    import openvino as ov

    key = (kind, backend, threads, tuple(input_names or ()),
           tuple((p.data_ptr(), p._version) for p in model.parameters()))
    held = _COMPILED.setdefault(model, {})
    if key not in held:
        path = _graph(model, kind, backend, input_names, attention, calibration)
        held.clear()  # older weights' graphs are stale
        held[key] = ov.Core().compile_model(str(path), "CPU", compile_config(threads))
    return held[key]


def compile_config(threads: int, precision: str | None = None) -> dict:
    """OpenVINO's CPU settings: one inference request on `threads` threads, as ONNX Runtime's sequential session and
    torch run, at `precision` (default: `inference_precision()`)."""
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": precision or inference_precision()}


def inference_precision() -> str:
    """The precision OpenVINO runs fp32 layers in: bf16 where rankface's class rule says the CPU has it natively
    (`hardware.native_bf16`), f32 elsewhere. OpenVINO's own default reads CPUID alone; under the caps that emulate
    a smaller class it would still pick bf16, and its oneDNN, capped by `ONEDNN_MAX_CPU_ISA`, then fails to compile
    the model (measured: `RuntimeError` from core.cpp under the AVX2 caps). Int8 graphs keep their int8 layers."""
    from rankface.hardware import native_bf16

    return "bf16" if native_bf16() else "f32"


def runner(compiled, output_dtype=np.float32) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """`run(feeds) -> ndarray`: one inference of `compiled` on a padded batch."""
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(request.infer(feeds)[output], dtype=output_dtype).copy()

    return run


def _graph(model: nn.Module, kind: str, backend: str, input_names: list[str] | None,
           attention: tuple[int, int] | None, calibration) -> Path:
    from rankface.inference.graphs import graph_path

    plain = graph_path(model, kind, "plain", input_names, attention)
    if backend == "openvino":
        return plain
    if backend != "openvino-int8":
        raise ValueError(f"{backend!r} is not an OpenVINO backend: expected one of {OV_BACKENDS}")
    import nncf
    import openvino as ov

    # OpenVINO's version string carries its build path ("2026.4.1-22982-...-releases/2026/4"): keep the release.
    release = ov.__version__.split("-")[0]
    # Without VNNI, x86 multiplies u8 activations by s8 weights in pairs summed into int16 (pmaddubsw), which
    # saturates at 8-bit weights: on an AVX2-only EPYC a tiny cross-encoder's every score fell by 0.8 (of 4.0).
    # NNCF's overflow fix quantises weights to 7 bits so the pair sums fit; CPUs with VNNI keep 8-bit weights.
    from rankface.inference.backends import quant_isa

    overflow_fix = "first_layer_only" if quant_isa() == "avx512_vnni" else "enable"
    xml = plain.with_name(f"openvino-{release}-nncf-{nncf.__version__}-overflow-{overflow_fix}-int8.xml")
    if xml.is_file():
        return xml
    if calibration is None:
        raise ValueError("backend='openvino-int8' needs calibration inputs to build its graph")
    feeds = calibration()
    if not feeds:
        raise ValueError("backend='openvino-int8': no calibration inputs (the first call scored nothing)")
    options = {"model_type": nncf.ModelType.TRANSFORMER} if kind != "face" else {}
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow_fix))
    quantized = nncf.quantize(ov.Core().read_model(str(plain)), nncf.Dataset(feeds), subset_size=len(feeds),
                              advanced_parameters=advanced, **options)
    # The .bin first, the .xml last: the .xml is what is looked for, so a crash never leaves a graph without weights.
    pid = os.getpid()
    tmp_xml = xml.with_name(f".{xml.stem}.{pid}.xml")
    ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
    try:
        os.replace(tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp_xml, xml)
    finally:
        tmp_xml.unlink(missing_ok=True)
        tmp_xml.with_suffix(".bin").unlink(missing_ok=True)
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    write_json(xml.with_suffix(".json"), {"calibration_samples": len(feeds), "calibration_sha256": digest.hexdigest(),
                                          "scheme": "nncf.quantize, " + ("transformer" if options else "default"),
                                          "overflow_fix": overflow_fix})
    return xml

