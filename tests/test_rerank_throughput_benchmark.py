"""Benchmark R2 (benchmarks/rerank_throughput.py): the peak it divides by, the share check, and its rounds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from benchmark_modules import load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark(BENCHMARKS / "rerank_throughput.py", "rerank_throughput_benchmark")


def test_share_above_one_is_reported(bench):
    assert bench.share_bugs({"rankface-fp32": 0.8, "rankface-bf16": 1.07, "st-fp32": None}) == ["rankface-bf16"]
    assert bench.share_bugs({"rankface-fp32": 1.0}) == []


def test_peak_is_the_best_over_shapes_and_includes_the_models_own(bench):
    shapes = bench.peak_shapes(hidden=384, intermediate=1536)
    assert (4096, 384, 1536) in shapes and (4096, 1536, 384) in shapes and (2048, 2048, 2048) in shapes
    peak = bench.matmul_peak("fp32", [(32, 16, 8), (64, 32, 16)], repeats=2)
    assert peak["gflops"] > 0 and peak["shape"] in ([32, 16, 8], [64, 32, 16])


def test_int8_peak_times_a_quantized_layer(bench):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    (run,) = bench._matmuls("int8", 8, 16, 4)
    layers = [c.cell_contents for c in run.__closure__ if isinstance(c.cell_contents, torch.nn.Module)]
    assert [type(layer) for layer in layers] == [DynamicLinear]
    assert run().shape == (8, 4)


def test_float_peaks_time_matmul_and_linear_on_the_same_product(bench):
    # The model's layers run F.linear, which reaches other kernels than torch.matmul (emulated bf16: 10x apart).
    runs = bench._matmuls("bf16", 8, 16, 4)
    outputs = [run() for run in runs]
    assert len(runs) == 3 and all(o.shape == (8, 4) and o.dtype == torch.bfloat16 for o in outputs)


def test_rounds_deal_strided_chunks_that_cover_every_pair_once(bench):
    chunks = bench.deal(11, 3)
    assert chunks == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
