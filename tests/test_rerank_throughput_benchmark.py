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


@pytest.fixture(scope="module")
def peak():
    yield from load_benchmark(BENCHMARKS / "_r2_peak.py", "r2_peak_benchmark")


def test_peak_is_the_best_over_shapes_and_includes_the_models_own(peak):
    shapes = peak.peak_shapes(hidden=384, intermediate=1536)
    assert (4096, 384, 1536) in shapes and (4096, 1536, 384) in shapes and (2048, 2048, 2048) in shapes
    best = peak.engine_peak("torch", "fp32", [(32, 16, 8), (64, 32, 16)], threads=1, repeats=2)
    assert best["gflops"] > 0 and best["shape"] in ([32, 16, 8], [64, 32, 16])


def test_int8_peak_times_a_quantized_layer(peak, tmp_path):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    (run,) = peak._torch_runs("int8", 8, 16, 4, tmp_path, 1)
    layers = [c.cell_contents for c in run.__closure__ if isinstance(c.cell_contents, torch.nn.Module)]
    assert [type(layer) for layer in layers] == [DynamicLinear]
    assert run().shape == (8, 4)


def test_float_peaks_time_matmul_and_linear_on_the_same_product(peak, tmp_path):
    # The model's layers run F.linear, which reaches other kernels than torch.matmul (emulated bf16: 10x apart).
    runs = peak._torch_runs("bf16", 8, 16, 4, tmp_path, 1)
    outputs = [run() for run in runs]
    assert len(runs) == 3 and all(o.shape == (8, 4) and o.dtype == torch.bfloat16 for o in outputs)


def test_onnx_linear_graph_computes_x_w_plus_b(peak, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    path = peak._onnx_linear(5, 7, 3, tmp_path)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    x = np.random.default_rng(0).standard_normal((5, 7), dtype=np.float32)
    (y,) = ReferenceEvaluator(str(path)).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ weights["W"] + weights["b"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_installed_engine_is_timed_on_the_same_product(peak, tmp_path, engine, precision):
    if not peak.installed(engine):
        pytest.skip(f"{engine} is not installed (the [openvino] extra): its peak is left out")
    (run,) = peak.RUNS[engine](precision, 16, 32, 8, tmp_path, 1)
    outputs = run()
    first = outputs[0] if isinstance(outputs, list) else next(iter(outputs.values()))
    assert first.shape == (16, 8)


def test_peaks_name_the_best_engine_of_each_precision(peak):
    peaks = peak.measure_peaks(["fp32"], [(32, 16, 8)], log=lambda *_: None)
    engines = peaks["fp32"]["engines"]
    assert "torch" in engines and peaks["fp32"]["engine"] in engines
    assert peaks["fp32"]["gflops"] == max(engines.values())


def test_rounds_deal_strided_chunks_that_cover_every_pair_once(bench):
    chunks = bench.deal(11, 3)
    assert chunks == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]


# ------------------------------------------------------------------------------ issue 20: anchors, fidelity, auto
@pytest.fixture(scope="module")
def fidelity():
    yield from load_benchmark(BENCHMARKS / "_r2_fidelity.py", "r2_fidelity_benchmark")


def test_overlap10_counts_shared_top_documents_per_query(bench):
    import numpy as np

    # q1: 12 candidates, reference ranks d0..d11 descending; the run swaps d9 (10th) with d10 (11th): 9 of 10 shared.
    # q2: 3 candidates, any order of all three: 3 of min(10, 3) shared.
    keys = [("q1", f"d{i:02d}") for i in range(12)] + [("q2", f"e{i}") for i in range(3)]
    reference = np.asarray([12 - i for i in range(12)] + [3, 2, 1], dtype=np.float32)
    run = reference.copy()
    run[9], run[10] = reference[10], reference[9]
    run[12:] = [1, 2, 3]
    assert bench.overlap10(keys, run, reference) == pytest.approx((0.9 + 1.0) / 2)
    run[0] = np.nan  # a pair one system did not score drops out of both rankings: d1..d10 is both top 10s then
    assert bench.overlap10(keys, run, reference) == pytest.approx(1.0)


def test_fidelity_compare_against_hand_counts(fidelity):
    reference = {"q": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}, "one": {"x": 1.0}}
    run = {"q": {"a": 4.0, "b": 2.0, "c": 3.0, "d": 1.0}, "one": {"x": 5.0}}
    result = fidelity.compare(reference, run)
    # 6 pairs, 1 discordant (b, c): tau = (5 - 1) / 6; all 4 in the top min(10, 4); "one" has nothing to compare
    assert result == {"q": {"overlap10": 1.0, "tau": pytest.approx(4 / 6)}}
    assert fidelity.split_path("onnx-int8@avx2") == ("onnx-int8", "auto", "avx2")
    assert fidelity.split_path("torch-bf16") == ("torch", "bf16", None)


def test_anchor_venvs_pin_the_cpu_torch_and_never_touch_rankface():
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    import _anchors

    assert _anchors.TORCH_PIN == "torch==2.13.0"  # the local CPU build; an unpinned torch resolves to CUDA here
    assert set(_anchors.ANCHORS.values()) == set(_anchors.ENVS)
    for requirements in _anchors.ENVS.values():
        assert all("==" in r for r in requirements) and not any(r.startswith("rankface") for r in requirements)
    worker = (BENCHMARKS / "_anchor_worker.py").read_text(encoding="utf-8")
    assert "import rankface" not in worker and "from rankface" not in worker


def test_auto_takes_only_paths_that_passed_the_fidelity_gate():
    """Every entry of `AUTO["text"]` must pass R2's fidelity check (committed JSON, all 325 queries) for `encode`,
    with the precision or quantisation config that class uses."""
    import json

    from rankface import hardware
    from rankface.inference import backends

    path = BENCHMARKS / "results" / "rerank_throughput" / "fidelity" / "fidelity_encode.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["complete"] and record["queries"] == 325 and record["ranker_beats_bm25"]
    flags = {"avx2": {"avx2"}, "avx512": {"avx2", "avx512f", "avx512_vnni"},
             "avx512-bf16": {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}}
    for name, chosen in backends.AUTO["text"].items():
        if name == "baseline":
            continue
        info = hardware.cpu_class(flags[name], environ={})
        if chosen == "torch":  # precision="auto": bf16 weights on the AVX-512 + bf16 class, fp32 elsewhere
            key = "torch-bf16" if name == "avx512-bf16" else "torch-fp32"
        else:
            key = f"onnx-int8@{backends.quant_isa(info)}" if chosen == "onnx-int8" else chosen
        assert record["paths"][key]["passes"], (name, key, record["paths"][key])


def test_full_mode_rounds_are_saved_and_a_rerun_times_only_the_rest(bench, tmp_path, monkeypatch):
    import argparse
    import json

    import numpy as np

    calls = []

    def predictors(folder, systems, args, workers=None):
        def score(name):
            def predict(batch):
                calls.append((name, len(batch)))
                return [float(len(q)) for q, _ in batch]
            return predict
        return {name: score(name) for name in systems}

    monkeypatch.setattr(bench, "make_predictors", predictors)
    pairs = [(f"q{i}", "d") for i in range(9)]
    args = argparse.Namespace(systems=["st-fp32", "rankface-fp32"], rounds=3, batch_size=2, stop_after=None)
    first = bench.time_systems(Path("unused"), pairs, args, None, saved=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000.json", "round-001.json", "round-002.json"]
    (tmp_path / "round-001.json").unlink()  # as if the session had ended in round 2
    calls.clear()
    again = bench.time_systems(Path("unused"), pairs, args, None, saved=tmp_path)
    timed = [n for n, size in calls if size == 3]  # (the warm-up scores batch_size pairs)
    assert sorted(timed) == ["rankface-fp32", "st-fp32"]  # round 2 only, once per system
    for name in args.systems:
        np.testing.assert_array_equal(again["scores"][name], first["scores"][name])
        assert again["rounds"][name]["index"] == first["rounds"][name]["index"]
        assert again["rounds"][name]["pairs"] == [3, 3, 3]
    # --stop-after bounds one session's share: one new round is timed and saved, then it stops, naming the folder
    for name in ("round-001.json", "round-002.json"):
        (tmp_path / name).unlink()
    calls.clear()
    args.stop_after = 1
    with pytest.raises(SystemExit, match="stopped after 1 new round"):
        bench.time_systems(Path("unused"), pairs, args, None, saved=tmp_path)
    assert sorted(n for n, size in calls if size == 3) == ["rankface-fp32", "st-fp32"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000.json", "round-001.json"]
    # the rounds saved so far are reported alone: pairs/s over them, per-round ratios to st-fp32, no scores
    report = bench.rounds_report(tmp_path, tmp_path / "report" / "rounds.json")
    records = [json.loads((tmp_path / f"round-00{r}.json").read_text()) for r in (0, 1)]
    for name in args.systems:
        got = report["systems"][name]
        assert got["pairs"] == [3, 3]
        assert got["rate"] == pytest.approx(6 / sum(r["systems"][name]["seconds"] for r in records))
    assert report["systems"]["st-fp32"]["speedup"]["median"] == pytest.approx(1.0)
    assert "scores" not in json.dumps(json.loads((tmp_path / "report" / "rounds.json").read_text()))
    with pytest.raises(SystemExit, match="no saved rounds"):
        bench.rounds_report(tmp_path / "empty", tmp_path / "x.json")


def test_saved_rounds_of_another_cpu_are_refused(bench, tmp_path, monkeypatch):
    import argparse
    import json

    monkeypatch.setattr(bench, "make_predictors",
                        lambda folder, systems, args, workers=None: {n: (lambda b: [0.0] * len(b)) for n in systems})
    args = argparse.Namespace(systems=["st-fp32"], rounds=1, batch_size=2, stop_after=None)
    (tmp_path / "round-000.json").write_text(json.dumps({"cpu_model": "another CPU", "systems": {"st-fp32": {}}}))
    with pytest.raises(SystemExit, match="another CPU"):
        bench.time_systems(Path("unused"), [("q", "d")], args, None, saved=tmp_path)


def test_stop_after_below_zero_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--stop-after", "-1"])
    assert bench.parse_args(["--stop-after", "0"]).stop_after == 0
