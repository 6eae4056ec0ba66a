"""Benchmark F2 (benchmarks/quality_erc.py): its own logic beyond `rankface.evaluation.quality` (tested in
test_quality.py): the seeded resolution draw, embedding each (image, resolution) view once, pair assembly, the
resolution oracle, the saved/reused per-system results and the RESULT line with `nan` for what is missing."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rankface.data.faces import degrade_exact
from rankface.models.face_processor import FaceImageProcessor
from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_erc.py"
SIZE = 32
TINY_MFN = {"input_size": SIZE, "stem_channels": 8, "block_settings": [[2, 8, 1, 2], [2, 16, 2, 2]],
            "last_channels": 32, "embedding_size": 16}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("quality_erc_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_resolution_draw_is_seeded_and_prefix_stable(bench):
    full = bench.draw_resolutions(6000, seed=0)
    assert full.shape == (6000, 2) and set(np.unique(full)) == {8, 12, 16, 24, 112}
    assert np.array_equal(full, bench.draw_resolutions(6000, seed=0))
    assert not np.array_equal(full, bench.draw_resolutions(6000, seed=1))
    counts = np.bincount(np.searchsorted([8, 12, 16, 24, 112], full.reshape(-1)))
    assert counts.min() > 2200 and counts.max() < 2600  # ~uniform: 2,400 expected per resolution


def test_unique_views_and_pair_values(bench):
    rows = np.array([[3, 1], [1, 3], [3, 7], [1, 1]])
    res = np.array([[8, 16], [16, 8], [8, 8], [16, 112]])
    views, inverse = bench.unique_views(rows, res)
    # every slot maps back to its own (row, resolution), and no view appears twice
    for p in range(4):
        for j in range(2):
            assert tuple(views[inverse[p, j]]) == (rows[p, j], res[p, j])
    assert len({tuple(v) for v in views.tolist()}) == len(views) == 4
    values = np.arange(len(views)) * 10.0
    assert np.array_equal(bench.pair_values(values, inverse), values[inverse])
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        bench.unique_views(rows[:, :1], res[:, :1])


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)  # smooth-ish images, so degrading changes them
    return np.stack([np.kron(b, np.ones((SIZE // 4, SIZE // 4, 1), np.uint8)) for b in base])


@pytest.mark.parametrize("family", ["mobilefacenet", "ri"])
def test_score_system_matches_direct_per_pair_computation(bench, family):
    torch.manual_seed(0)
    if family == "ri":
        model = RecognizabilityModel(RecognizabilityConfig(backbone=MobileFaceNetConfig(**TINY_MFN),
                                                           attention_reduction=4, match_with="v+att")).eval()
    else:
        model = MobileFaceNetModel(MobileFaceNetConfig(**TINY_MFN)).eval()
    images = _images(6)
    rows = np.array([[0, 1], [1, 2], [0, 0], [3, 4], [5, 1], [2, 2]])
    res = np.array([[8, 16], [16, 32], [8, 32], [32, 8], [16, 16], [8, 8]])
    loaded: list[list[int]] = []

    def load(wanted):
        loaded.append(wanted.tolist())
        return images[wanted]

    got = bench.score_system(model, load, rows, res, batch_size=3, progress=False)
    assert got["num_views"] == 8  # 12 slots, 8 distinct (row, resolution) views, each embedded once
    assert sum(len(w) for w in loaded) == 6  # views sorted by row: each batch of 3 decodes its rows once

    # Reference: each slot embedded on its own, straight from the model.
    processor = FaceImageProcessor.from_model_config(model.config)
    with torch.no_grad():
        slot = {}
        for p in range(len(rows)):
            for j in range(2):
                img = degrade_exact(images[rows[p, j]], int(res[p, j]))
                out = model(processor([img])["pixel_values"])
                emb = out.matching_embedding if family == "ri" else out.embedding
                slot[p, j] = (emb[0].numpy(), float(out.embedding[0].norm()),
                              float(out.quality[0]) if family == "ri" else None)
    for p in range(len(rows)):
        a, b = slot[p, 0][0], slot[p, 1][0]
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert got["scores"][p] == pytest.approx(cos, abs=1e-5)
        for j in range(2):
            assert got["quality"]["norm"][p, j] == pytest.approx(slot[p, j][1], rel=1e-5)
            if family == "ri":
                assert got["quality"]["ri"][p, j] == pytest.approx(slot[p, j][2], abs=1e-5)
    assert ("ri" in got["quality"]) == (family == "ri")


def test_system_curves_use_min_quality_and_resolution_oracle(bench):
    rng = np.random.default_rng(0)
    n = 400
    same = np.arange(n) % 2 == 0
    res = bench.draw_resolutions(n, seed=3)
    low = res.min(axis=1)
    # genuine scores grow with the pair's lowest resolution: the resolution oracle must beat random
    scores = np.where(same, 0.1 + 0.004 * low, 0.0) + rng.normal(0, 0.05, n)
    slot_quality = {"norm": res.astype(float) + rng.normal(0, 0.1, (n, 2))}
    curves = bench.system_curves(scores, same, slot_quality, res, seed=0)
    assert set(curves) == {"norm", "random", "resolution oracle", "error oracle"}
    assert curves["resolution oracle"].pauc() < curves["random"].pauc()
    assert curves["error oracle"].pauc() <= curves["resolution oracle"].pauc()
    # pair quality is the min of the slots: a quality that only sees the first slot orders the pairs differently
    first_only = bench.system_curves(scores, same, {"norm": np.stack([slot_quality["norm"][:, 0]] * 2, 1)}, res)
    assert not np.array_equal(first_only["norm"].fnmr, curves["norm"].fnmr)


def test_headline_and_result_line(bench):
    rng = np.random.default_rng(1)
    n = 300
    same = np.arange(n) % 2 == 0
    res = bench.draw_resolutions(n, seed=0)
    scores = np.where(same, 0.5, 0.0) + rng.normal(0, 0.3, n)
    plain = bench.system_curves(scores, same, {"norm": rng.random((n, 2))}, res)
    values = bench.headline(None, plain, "quick")
    line = bench.result_line(values)
    assert line.startswith("RESULT ri_pauc=nan norm_pauc=") and line.endswith("ratio_ri_to_norm=nan mode=quick")
    assert float(values["norm_pauc"]) == pytest.approx(plain["norm"].pauc(0.3), abs=1e-5)
    assert float(values["oracle_pauc"]) == pytest.approx(plain["resolution oracle"].pauc(0.3), abs=1e-5)

    ri = bench.system_curves(scores, same, {"ri": rng.random((n, 2)), "norm": rng.random((n, 2))}, res)
    values = bench.headline(ri, plain, "full")
    # with an RI model every reference comes from the RI model's own scores and norm
    assert float(values["norm_pauc"]) == pytest.approx(ri["norm"].pauc(0.3), abs=1e-5)
    ratio = ri["ri"].pauc(0.3) / ri["norm"].pauc(0.3)
    assert float(values["ratio_ri_to_norm"]) == pytest.approx(ratio, abs=1e-4)
    assert [kv.split("=")[0] for kv in bench.result_line(values).split()[1:]] == list(bench.RESULT_KEYS)
    with pytest.raises(ValueError, match="missing key"):
        bench.result_line({"mode": "quick"})
    assert all(not math.isnan(float(v)) for k, v in values.items() if k != "mode")


def test_run_system_saves_and_reuses(bench, tmp_path):
    torch.manual_seed(0)
    model = MobileFaceNetModel(MobileFaceNetConfig(**TINY_MFN)).eval()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    n = 40
    rows = np.stack([np.arange(n) % 8, (np.arange(n) * 3 + 1) % 8], 1)
    # the tiny images are 32 px, so 32 stands in for the protocol's full resolution
    res = np.where(bench.draw_resolutions(n, 0) == 112, 32, np.minimum(bench.draw_resolutions(n, 0), 24))
    images = _images(8)
    calls = []

    def load(wanted):
        calls.append(len(wanted))
        return images[wanted]

    context = {"pair_indices": np.arange(n), "rows": rows, "resolutions": res, "same": np.arange(n) % 2 == 0,
               "load_images": load}
    args = argparse.Namespace(folds=[0], seed=0, batch_size=16)
    first = bench.run_system("plain", ckpt, args, context, tmp_path / "out")
    assert calls and (tmp_path / "out" / "plain.json").is_file()
    saved = json.loads((tmp_path / "out" / "plain.json").read_text())
    assert saved["curves"]["norm"]["pauc"] == pytest.approx(first["_curves"]["norm"].pauc(0.3))
    calls.clear()
    again = bench.run_system("plain", ckpt, args, context, tmp_path / "out")
    assert calls == [] and again["scores"] == first["scores"]  # reused, nothing embedded
    args.seed = 1
    bench.run_system("plain", ckpt, args, context, tmp_path / "out")
    assert calls  # other settings: scored again


def test_rates_by_resolution(bench):
    scores = np.array([0.9, 0.2, 0.95, 0.1, 0.6, 0.7, 0.3, 0.8])
    same = np.array([True, True, False, False, True, False, True, False])
    res = np.array([[8, 112], [8, 8], [8, 16], [112, 8], [112, 112], [112, 24], [112, 112], [24, 112]])
    rates = bench.rates_by_resolution(scores, same, res, threshold=0.65)
    # lower resolution 8: genuine 0.9 (in), 0.2 (out); impostors 0.95 (in), 0.1 (out)
    assert rates[8] == {"tar": 0.5, "fmr": 0.5, "genuine": 2, "impostor": 2}
    assert math.isnan(rates[24]["tar"]) and rates[24]["fmr"] == 1.0 and rates[24]["impostor"] == 2  # 0.7, 0.8 in
    assert rates[112]["tar"] == 0.0 and math.isnan(rates[112]["fmr"]) and rates[112]["genuine"] == 2


def test_attainable_share_and_goal_line(bench):
    rng = np.random.default_rng(2)
    n = 400
    same = np.arange(n) % 2 == 0
    res = bench.draw_resolutions(n, seed=1)
    scores = np.where(same, 0.3, 0.0) + rng.normal(0, 0.3, n)
    errors = same & (scores < np.quantile(scores[~same], 0.99))  # the false non-matches at FMR 1e-2, roughly
    slot = {"ri": np.stack([np.where(errors, 0.0, 1.0)] * 2, 1) + rng.normal(0, 1e-3, (n, 2)),  # knows the errors
            "norm": rng.random((n, 2))}  # knows nothing
    curves = bench.system_curves(scores, same, slot, res, seed=0)
    shares = bench.attainable_share(curves)
    assert set(shares) == {"ri", "norm", "resolution oracle"}
    assert shares["ri"] > 0.9 and abs(shares["norm"]) < 0.3
    rand, floor = curves["random"].pauc(0.3), curves["error oracle"].pauc(0.3)
    assert shares["norm"] == pytest.approx((rand - curves["norm"].pauc(0.3)) / (rand - floor))
    line = bench.goal_line(curves)
    target = 0.8 * curves["norm"].pauc(0.3)
    assert f"= {target:.5f}" in line
    assert ("below the error oracle" in line) == (target < floor)
