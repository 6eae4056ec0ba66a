"""R2's matmul peak: the best GFLOP/s this CPU reaches for one product, per precision, over every engine R2 times.

A system's share of the peak is its model FLOPs per second over the best single matmul of its precision. Measured
with torch alone, that "peak" was no peak: ONNX Runtime's MLAS fp32 kernels ran the whole model faster than torch's
best matmul (a share of 134 %). So each precision's peak is the best over the engines that run it here:

- fp32: torch (`matmul`, `F.linear`), ONNX Runtime (an ONNX `MatMul` + `Add`, as the exported linear layers are),
  OpenVINO with `INFERENCE_PRECISION_HINT=f32`;
- bf16: torch in bf16, OpenVINO with `INFERENCE_PRECISION_HINT=bf16` (only where the CPU has native bf16: under the
  caps that emulate a smaller class, OpenVINO's oneDNN cannot compile bf16);
- int8: a dynamically quantized torch linear layer (FBGEMM), ONNX Runtime's dynamic int8 of the same ONNX product
  (rankface's own `quantise`, with this CPU class's config), OpenVINO's static int8 of it (`nncf.quantize`).

Each engine is timed over the same shapes (square sizes and the model's own linear shapes), with a warm-up, the
same threads, a few repeats, and a time budget per shape. An engine that is not installed is left out and named.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ENGINES = ("torch", "onnxruntime", "openvino")


def peak_shapes(hidden: int, intermediate: int, tokens: int = 4096) -> list[tuple[int, int, int]]:
    """`(m, k, n)` matmul shapes the peak is the best of: square sizes, and the model's own linear layers."""
    square = [(n, n, n) for n in (512, 1024, 2048)]
    return square + [(tokens, hidden, intermediate), (tokens, intermediate, hidden), (tokens, hidden, hidden)]


def _torch_runs(precision: str, m: int, k: int, n: int, folder: Path, threads: int) -> list[Callable]:
    """`torch.matmul` and `F.linear` are both timed: they reach different kernels (with emulated bf16 on an AVX2 CPU,
    measured 2.3 against 25 GFLOP/s for the same product), and the model's linear layers run `F.linear`."""
    a = torch.randn(m, k)
    if precision == "int8":  # the int8 system's kernel: a dynamically quantized linear layer (FBGEMM)
        from rankface.models._text import quantize_linear_layers

        # (quantize_linear_layers keeps the last linear layer in fp32, as the scoring head: add one, time the first)
        layer = quantize_linear_layers(torch.nn.Sequential(torch.nn.Linear(k, n), torch.nn.Linear(n, 1)))[0]
        return [lambda: layer(a)]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, weight, bias = a.to(dtype), torch.randn(n, k).to(dtype), torch.randn(n).to(dtype)
    b = weight.T.contiguous()
    return [lambda: torch.matmul(a, b), lambda: torch.nn.functional.linear(a, weight, bias),
            lambda: torch.nn.functional.linear(a, weight)]


def _onnx_linear(m: int, k: int, n: int, folder: Path) -> Path:
    """An ONNX graph `x[m, k] @ W[k, n] + b`, the form of the exported model's linear layers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(n, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / f"linear-{m}-{k}-{n}.onnx"
    onnx.save(model, str(path))
    return path


def _onnxruntime_runs(precision: str, m: int, k: int, n: int, folder: Path, threads: int) -> list[Callable]:
    if precision == "bf16":
        return []  # ONNX Runtime's CPU provider has no bf16 MatMul kernel
    from rankface.inference.backends import cpu_session, quant_isa
    from rankface.inference.graphs import quantise

    path = _onnx_linear(m, k, n, folder)
    if precision == "int8":
        path = quantise(path, path.with_name(path.stem + "-int8.onnx"), quant_isa(), op_types=("MatMul",))
    session = cpu_session(path, threads)  # as the model's sessions are made
    feed = {"x": np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)}
    return [lambda: session.run(None, feed)]


def _openvino_runs(precision: str, m: int, k: int, n: int, folder: Path, threads: int) -> list[Callable]:
    import openvino as ov

    from rankface.hardware import native_bf16
    from rankface.inference.openvino_engine import compile_config

    if precision == "bf16" and not native_bf16():
        return []  # OpenVINO runs bf16 only where the CPU has it natively
    core = ov.Core()
    model = core.read_model(str(_onnx_linear(m, k, n, folder)))
    feed = {"x": np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)}
    if precision == "int8":
        import nncf

        rng = np.random.default_rng(2)
        samples = [{"x": rng.standard_normal((m, k), dtype=np.float32)} for _ in range(2)]
        model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    # int8: what stays in floating point runs at rankface's class precision, as the openvino-int8 backend's does
    hint = {"bf16": "bf16", "fp32": "f32"}.get(precision)
    request = core.compile_model(model, "CPU", compile_config(threads, hint)).create_infer_request()
    return [lambda: request.infer(feed)]


RUNS = {"torch": _torch_runs, "onnxruntime": _onnxruntime_runs, "openvino": _openvino_runs}


def installed(engine: str) -> bool:
    from rankface.inference import openvino_engine
    from rankface.inference.backends import onnxruntime_available

    if engine == "onnxruntime":
        return onnxruntime_available()
    if engine == "openvino":
        return openvino_engine.available("openvino-int8")
    return True


@torch.inference_mode()
def engine_peak(engine: str, precision: str, shapes: list[tuple[int, int, int]], threads: int, repeats: int = 5,
                budget_s: float = 2.0) -> dict:
    """Best GFLOP/s of one engine in `precision` over `shapes` x `repeats` timed runs (after a warm-up each).

    A shape stops repeating after `budget_s` seconds, and larger shapes are skipped once one run takes over
    `budget_s` (emulated bf16 runs at a few GFLOP/s: 2048^3 would take minutes).
    """
    best, at = 0.0, None
    with tempfile.TemporaryDirectory(prefix="r2-peak-") as tmp:
        for m, k, n in sorted(shapes, key=lambda s: s[0] * s[1] * s[2]):
            too_slow = False
            for run in RUNS[engine](precision, m, k, n, Path(tmp), threads):
                start = time.perf_counter()
                run()  # warm-up: allocation, kernel choice, primitive caches
                if time.perf_counter() - start > budget_s:
                    too_slow = True
                    continue
                spent = 0.0
                for _ in range(repeats):
                    start = time.perf_counter()
                    run()
                    seconds = time.perf_counter() - start
                    spent += seconds
                    if 2 * m * k * n / seconds / 1e9 > best:
                        best, at = 2 * m * k * n / seconds / 1e9, [m, k, n]
                    if spent > budget_s:
                        break
            if too_slow:
                break
    return {"gflops": best, "shape": at}


def measure_peaks(precisions: list[str], shapes: list[tuple[int, int, int]], log=print) -> dict:
    """`{precision: {"gflops", "shape", "engine", "engines": {engine: gflops}}}`: the best engine's figure."""
    threads = torch.get_num_threads()
    engines = [e for e in ENGINES if installed(e)]
    missing = [e for e in ENGINES if e not in engines]
    if missing:
        log(f"matmul peak: {', '.join(missing)} not installed, left out of the peak")
    peaks = {}
    for precision in precisions:
        per_engine = {engine: engine_peak(engine, precision, shapes, threads) for engine in engines}
        per_engine = {e: p for e, p in per_engine.items() if p["gflops"] > 0}
        best = max(per_engine, key=lambda e: per_engine[e]["gflops"])
        peaks[precision] = {**per_engine[best], "engine": best,
                            "engines": {e: p["gflops"] for e, p in per_engine.items()}}
    return peaks
