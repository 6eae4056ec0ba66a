"""Benchmark F2 (benchmarks/quality_erc.py): its own logic beyond `rankface.evaluation.quality` (tested in
test_quality.py): the seeded resolution draw, embedding each (image, resolution) view once, pair assembly, the
resolution oracle, the saved/reused per-system results and the RESULT line with `nan` for what is missing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_modules import load_benchmark

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
    yield from load_benchmark(BENCHMARK, "quality_erc_benchmark")


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
    curves = bench.system_curves(scores, same, {"ri": rng.random((n, 2)), "norm": rng.random((n, 2))}, res)
    values = bench.headline(curves, 0.321, "realistic", "quick", ri_auc_24v8=0.9876)
    line = bench.result_line(values)
    assert [kv.split("=")[0] for kv in line.split()[1:]] == list(bench.RESULT_KEYS)
    protocol = ["ri_pauc", "norm_pauc", "random_pauc", "oracle_pauc", "ratio_ri_to_norm", "ri_share", "norm_share",
                "magface_share", "resolution_share", "ui_share", "ri_auc_24v8", "fnmr_d0", "mix", "mode"]  # benchmarks.md
    assert list(bench.RESULT_KEYS[:len(protocol)]) == protocol
    assert "ri_auc_24v8=0.988 fnmr_d0=0.321 mix=realistic mode=quick" in line
    assert values["ui_share"] == "nan"  # no UI centre scored here
    assert float(values["norm_pauc"]) == pytest.approx(curves["norm"].pauc(0.3), abs=1e-5)
    assert float(values["oracle_pauc"]) == pytest.approx(curves["resolution oracle"].pauc(0.3), abs=1e-5)
    assert float(values["ratio_ri_to_norm"]) == pytest.approx(curves["ri"].pauc(0.3) / curves["norm"].pauc(0.3),
                                                              abs=1e-4)
    shares = bench.attainable_share(curves)
    assert float(values["ri_share"]) == pytest.approx(shares["ri"], abs=1e-3)
    assert float(values["resolution_share"]) == pytest.approx(shares["resolution oracle"], abs=1e-3)
    assert values["magface_share"] == "nan"  # no MagFace model scored
    with pytest.raises(ValueError, match="missing key"):
        bench.result_line({"mode": "quick"})


def test_view_store_embeds_each_view_once_and_reuses_its_cache(bench, tmp_path):
    torch.manual_seed(0)
    model = MobileFaceNetModel(MobileFaceNetConfig(**TINY_MFN)).eval()
    images = _images(6)
    loaded = []

    def load(wanted):
        loaded.append(len(wanted))
        return images[wanted]

    cache = tmp_path / "cache" / "m.npz"
    store = bench.ViewStore(model, load, cache, batch_size=4)
    first = np.array([[0, 8], [1, 16], [2, 32]])
    got = store.get(first)
    reference = bench.embed_views(model, lambda w: images[w], first, batch_size=4, progress=False)
    for key in ("embedding", "norm"):
        np.testing.assert_array_equal(got[key], reference[key])  # the same function on the same batch
    # a second request embeds only what is new, in the order asked for
    loaded.clear()
    second = np.array([[2, 32], [3, 8], [0, 8]])
    got = store.get(second)
    assert sum(loaded) == 1 and len(store) == 4
    np.testing.assert_array_equal(got["norm"][[0, 2]], reference["norm"][[2, 0]])
    # a new store on the same cache file embeds nothing
    loaded.clear()
    again = bench.ViewStore(model, load, cache, batch_size=4)
    np.testing.assert_array_equal(again.get(second)["embedding"], got["embedding"])
    assert loaded == [] and again.embedded_now == 0


def test_score_pairs_scores_each_pair_with_its_halfs_model(bench, tmp_path):
    torch.manual_seed(0)
    models = {h: MobileFaceNetModel(MobileFaceNetConfig(**TINY_MFN)).eval() for h in ("A", "B")}
    images = _images(6)
    stores = {h: bench.ViewStore(m, lambda w: images[w], tmp_path / f"{h}.npz") for h, m in models.items()}
    rows = np.array([[0, 1], [2, 3], [4, 5], [1, 2]])
    res = np.array([[8, 16], [32, 8], [16, 16], [8, 32]])
    half = np.array(["A", "B", "B", "A"])
    got = bench.score_pairs(stores, half, rows, res)
    for p in range(len(rows)):
        alone = bench.score_system(models[half[p]], lambda w: images[w], rows[p:p + 1], res[p:p + 1], progress=False)
        assert got["scores"][p] == pytest.approx(alone["scores"][0], abs=1e-5)
        np.testing.assert_allclose(got["quality"]["norm"][p], alone["quality"]["norm"][0], rtol=1e-5)


def test_draw_mix_follows_its_weights_and_moves_slots_monotonically(bench):
    weights = bench.mix_weights(1.0)
    np.testing.assert_allclose(weights, np.array(bench.REALISTIC) / sum(bench.REALISTIC))
    np.testing.assert_allclose(bench.mix_weights(0.0), np.full(7, 1 / 7))
    res = bench.draw_mix(20000, seed=0, weights=weights)
    share = np.array([(res == r).mean() for r in bench.REALISTIC])
    np.testing.assert_allclose(share, weights, atol=0.01)  # 40,000 slots: binomial std <= 0.0025
    # more weight on high resolutions never lowers a slot's resolution (one uniform number per slot)
    higher = bench.draw_mix(20000, seed=0, weights=bench.mix_weights(2.0))
    assert np.all(higher >= res) and np.any(higher > res)
    assert np.array_equal(bench.draw_mix(100, 0, weights), res[:100])  # a subset is a prefix of the full draw
    with pytest.raises(ValueError, match="summing to 1"):
        bench.draw_mix(10, 0, [0.5, 0.5])


def _synthetic_fnmr(bench, n: int = 4000, resolution_free: bool = False):
    """FNMR at d = 0 of synthetic pairs as a function of the mix weights: genuine scores rise with the pair's lower
    resolution (noise fixed per pair), impostor scores do not depend on it."""
    rng = np.random.default_rng(7)
    same = np.arange(n) % 2 == 0
    noise = rng.normal(0, 0.12, n)

    def fnmr_of(weights):
        low = bench.draw_mix(n, 3, weights).min(axis=1)
        mean = 0.05 if resolution_free else 0.75 * (1 - np.exp(-(low - 6) / 25.0))
        scores = np.where(same, mean + noise, noise)
        return bench.fnmr_at_zero_discard(scores, same)

    return fnmr_of


def test_search_mix_lands_in_its_fnmr_band_on_synthetic_scores(bench):
    fnmr_of = _synthetic_fnmr(bench)
    assert fnmr_of(bench.mix_weights(0.0)) > 0.40  # uniform: too hard; the search has to move the weights
    found = bench.search_mix(fnmr_of)
    assert found["in_band"] and 0.10 <= found["fnmr"] <= 0.40
    assert abs(found["fnmr"] - bench.FNMR_TARGET) <= 0.05
    assert fnmr_of(np.array(found["weights"])) == pytest.approx(found["fnmr"])  # reproducible from the weights
    assert sum(found["weights"]) == pytest.approx(1.0) and found["lambda"] > 0
    # scores that do not depend on resolution cannot be steered: the search says so instead of pretending
    stuck = bench.search_mix(_synthetic_fnmr(bench, resolution_free=True))
    assert not stuck["in_band"]


def test_fnmr_at_zero_discard_counts_genuine_pairs_at_or_below_the_fmr_threshold(bench):
    scores = np.array([0.9, 0.5, 0.3, 0.1] + list(np.linspace(0.0, 0.6, 100)))
    same = np.array([True] * 4 + [False] * 100)
    # FMR 1e-2 of 100 impostors admits 1: the threshold is the second highest impostor, 0.6 * 98 / 99
    threshold = 0.6 * 98 / 99
    assert bench.fnmr_at_zero_discard(scores, same) == pytest.approx(np.mean(scores[:4] <= threshold))


def test_separation_reports_what_a_quality_knows_beyond_resolution(bench):
    rng = np.random.default_rng(0)
    n = 2000
    res = np.where(rng.random((n, 2)) < 0.5, 8, 24)
    same = np.arange(n) % 2 == 0
    scores = rng.normal(0, 1, n)
    accepted = scores > 0.0
    # "knows": high for 24 px and, within a resolution, for accepted genuine pairs; "res": the resolution only
    knows = res / 24.0 + np.where(accepted, 0.5, 0.0)[:, None] + rng.normal(0, 0.01, (n, 2))
    only_res = res / 24.0 + rng.normal(0, 0.01, (n, 2))
    sep = bench.separation({"knows": knows, "res": only_res}, res, scores, same, threshold=0.0)
    assert sep["between"]["knows"] > 0.7 and sep["between"]["res"] > 0.99
    assert all(v > 0.95 for v in sep["within"]["knows"].values())
    assert all(abs(v - 0.5) < 0.1 for v in sep["within"]["res"].values())


def test_rates_by_resolution(bench):
    scores = np.array([0.9, 0.2, 0.95, 0.1, 0.6, 0.7, 0.3, 0.8])
    same = np.array([True, True, False, False, True, False, True, False])
    res = np.array([[8, 112], [8, 8], [8, 16], [112, 8], [112, 112], [112, 24], [112, 112], [24, 112]])
    rates = bench.rates_by_resolution(scores, same, res, threshold=0.65)
    # lower resolution 8: genuine 0.9 (in), 0.2 (out); impostors 0.95 (in), 0.1 (out)
    assert rates[8] == {"tar": 0.5, "fmr": 0.5, "genuine": 2, "impostor": 2}
    assert math.isnan(rates[24]["tar"]) and rates[24]["fmr"] == 1.0 and rates[24]["impostor"] == 2  # 0.7, 0.8 in
    assert rates[112]["tar"] == 0.0 and math.isnan(rates[112]["fmr"]) and rates[112]["genuine"] == 2


def pairs_with_known_errors(bench, n: int, seed: int, resolution_seed: int):
    """Synthetic pairs (alternately genuine and impostor, scores 0.3 apart in N(0, 0.3) noise), their resolutions and
    their false non-matches at FMR 1e-2 (roughly): what a perfect quality would discard first."""
    rng = np.random.default_rng(seed)
    same = np.arange(n) % 2 == 0
    res = bench.draw_resolutions(n, seed=resolution_seed)
    scores = np.where(same, 0.3, 0.0) + rng.normal(0, 0.3, n)
    errors = same & (scores < np.quantile(scores[~same], 0.99))
    return rng, same, res, scores, errors


def test_attainable_share_and_goal_line(bench):
    n = 400
    rng, same, res, scores, errors = pairs_with_known_errors(bench, n, seed=2, resolution_seed=1)
    slot = {"ri": np.stack([np.where(errors, 0.0, 1.0)] * 2, 1) + rng.normal(0, 1e-3, (n, 2)),  # knows the errors
            "norm": rng.random((n, 2))}  # knows nothing
    curves = bench.system_curves(scores, same, slot, res, seed=0)
    shares = bench.attainable_share(curves)
    assert set(shares) == {"ri", "norm", "resolution oracle"}
    assert shares["ri"] > 0.9 and abs(shares["norm"]) < 0.3
    rand, floor = curves["random"].pauc(0.3), curves["error oracle"].pauc(0.3)
    assert shares["norm"] == pytest.approx((rand - curves["norm"].pauc(0.3)) / (rand - floor))
    assert bench.goal_line(shares).endswith("-> met.")
    assert bench.goal_line({**shares, "ri": 0.4}).endswith("-> NOT met.")  # below 0.5
    assert bench.goal_line({**shares, "ri": 0.6, "magface norm": 0.7}).endswith("-> NOT met.")  # a rival above it


def test_share_differences_pair_the_resamples_and_find_a_real_gap(bench):
    n = 600
    rng, same, res, scores, errors = pairs_with_known_errors(bench, n, seed=4, resolution_seed=2)
    knows = np.stack([np.where(errors, 0.0, 1.0)] * 2, 1) + rng.normal(0, 1e-3, (n, 2))
    slot = {"ri": knows, "copy": knows.copy(), "noise": rng.random((n, 2))}
    got = bench.share_differences(scores, same, slot, res, resamples=200, seed=0)
    assert set(got) == {"copy", "noise", "resolution oracle"}
    # the same quality under another name: every paired resample gives a difference of exactly 0
    assert got["copy"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}
    # a quality that knows the errors against one that knows nothing: the difference is the shares' and it is real
    shares = bench.attainable_share(bench.system_curves(scores, same, slot, res, 0))
    assert got["noise"]["difference"] == pytest.approx(shares["ri"] - shares["noise"])
    assert got["noise"]["low"] > 0.5 and got["noise"]["p"] < 0.01
    assert got["noise"]["low"] <= got["noise"]["difference"] <= got["noise"]["high"]


def test_identity_resample_weights_each_pair_by_its_identities_copies(bench):
    """A genuine pair appears once per copy of its identity, an impostor pair once per copy of each identity (the
    product), checked against the identity draw that the same generator makes."""
    identities = np.array([[7, 7], [7, 3], [3, 9], [9, 9], [5, 3]])
    draw = np.random.default_rng(11).integers(0, 4, 4)  # what identity_resample draws first: 4 of the sorted [3 5 7 9]
    copies = dict(zip([3, 5, 7, 9], np.bincount(draw, minlength=4), strict=True))
    expected = [copies[7], copies[7] * copies[3], copies[3] * copies[9], copies[9], copies[5] * copies[3]]
    index = bench.identity_resample(identities, np.random.default_rng(11))
    assert np.bincount(index, minlength=5).tolist() == expected
    # expected draws: 1 for a genuine pair; 1 - 1/I for an impostor pair (the I multinomial copies covary by -1/I)
    rng = np.random.default_rng(0)
    many = np.stack([np.bincount(bench.identity_resample(identities, rng), minlength=5) for _ in range(20000)])
    assert many.mean(axis=0) == pytest.approx([1, 0.75, 0.75, 1, 0.75], abs=0.03)


def test_share_differences_over_identities_are_wider_when_pairs_share_identities(bench):
    """200 pairs, each repeated 5 times under its own identities: resampling the 1,000 pairs takes the copies for
    independent evidence, resampling identities does not, so its interval is the wider; the difference on all pairs
    is the same either way."""
    rng, same, res, scores, errors = pairs_with_known_errors(bench, 200, seed=4, resolution_seed=2)
    knows = np.stack([np.where(errors, 0.0, 1.0)] * 2, 1) + rng.normal(0, 1e-3, (200, 2))
    base = {"scores": scores, "same": same, "res": res, "ri": knows, "noise": rng.random((200, 2))}
    copies = {k: np.repeat(v, 5, axis=0) for k, v in base.items()}
    own = np.arange(200)
    identities = np.repeat(np.stack([own, np.where(same, own, own + 200)], 1), 5, axis=0)
    args = (copies["scores"], copies["same"], {"ri": copies["ri"], "noise": copies["noise"]}, copies["res"])
    by_pairs = bench.share_differences(*args, resamples=200, seed=0)
    by_ids = bench.share_differences(*args, resamples=200, seed=0, identities=identities)
    assert by_ids["noise"]["difference"] == by_pairs["noise"]["difference"]
    width = {k: d["noise"]["high"] - d["noise"]["low"] for k, d in (("pairs", by_pairs), ("ids", by_ids))}
    assert width["ids"] > 1.5 * width["pairs"]  # about sqrt(5) in theory


@pytest.mark.parametrize("match_with", ["v", "v+att"])
def test_ers_quality_is_one_minus_cos_to_the_saved_ui_centre_and_old_caches_gain_it(bench, tmp_path, match_with):
    """Issue 21: the ERS-style score 1 - cos(v, UI centre) of the RI model's backbone embedding, and its product
    with the norm, recomputed here slot by slot; a view cache saved before the ERS existed gains it (match_with v:
    from the stored embedding, which is v) or is embedded again (v+att)."""
    torch.manual_seed(1)
    model = RecognizabilityModel(RecognizabilityConfig(backbone=MobileFaceNetConfig(**TINY_MFN),
                                                       attention_reduction=4, match_with=match_with)).eval()
    model.ui_centre.update_centre(torch.randn(5, model.config.embedding_size))
    images = _images(4)
    rows = np.array([[0, 1], [2, 3], [1, 2]])
    res = np.array([[8, 16], [32, 8], [16, 16]])
    got = bench.score_system(model, lambda w: images[w], rows, res, progress=False)
    processor = FaceImageProcessor.from_model_config(model.config)
    u = model.ui_centre.centre.numpy() / np.linalg.norm(model.ui_centre.centre.numpy())
    with torch.no_grad():
        for p in range(len(rows)):
            for j in range(2):
                v = model(processor([degrade_exact(images[rows[p, j]], int(res[p, j]))])["pixel_values"]).embedding
                v = v[0].numpy().astype(np.float64)
                ers = 1.0 - float(v @ u) / np.linalg.norm(v)
                assert got["quality"]["ers"][p, j] == pytest.approx(ers, abs=1e-5)
                assert got["quality"]["ers_norm"][p, j] == pytest.approx(ers * np.linalg.norm(v), rel=1e-4)
    # an old cache: no "ers" key
    cache = tmp_path / "old.npz"
    views = np.array([[0, 8], [1, 16]])
    old = bench.embed_views(model, lambda w: images[w], views, progress=False)
    np.savez(cache, views=views, **{k: v for k, v in old.items() if k != "ers"})
    store = bench.ViewStore(model, lambda w: images[w], cache)
    assert len(store) == (2 if match_with == "v" else 0)
    np.testing.assert_allclose(store.get(views)["ers"], old["ers"], atol=1e-5)


def test_bootstrap_needs_a_resample(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.parse_args(["--ri-model", str(tmp_path), "--bootstrap", "0"])
    assert bench.parse_args(["--ri-model", str(tmp_path)]).bootstrap == 1000


@pytest.fixture(scope="module")
def seeds_bench():
    yield from load_benchmark(BENCHMARK.parent / "quality_erc_seeds.py", "quality_erc_seeds_benchmark")


def _write_seed(folder: Path, ri: float, norm: float, magface: float, folds=(0, 1)) -> None:
    import json

    folder.mkdir(parents=True)
    for mix in ("hard", "realistic"):
        record = {"mix": mix, "how": {"choices": [8, 112], "lambda": ri if mix == "realistic" else None},
                  "folds": list(folds), "seed": 0, "fnmr_d0": 0.3,
                  "slots_per_resolution": {}, "shares": {"ri": ri, "norm": norm, "magface norm": magface},
                  "share_differences": {"reference": "ri", "of": {"norm": {"p": 0.5}, "magface norm": {"p": 0.4}}}}
        (folder / f"{mix}.json").write_text(json.dumps(record))


def test_f2_over_seeds_gives_t_intervals_and_refuses_seeds_that_scored_other_pairs(seeds_bench, tmp_path):
    from scipy import stats

    ri, norm = [0.21, 0.25, 0.19], [0.20, 0.22, 0.21]
    for k in range(3):
        _write_seed(tmp_path / f"s{k}", ri[k], norm[k], magface=math.nan if k == 1 else 0.2)
    assert seeds_bench.main(["s0", "s1", "s2", "--name", "all", "--results-dir", str(tmp_path)]) == 0
    import json

    summary = json.loads((tmp_path / "all" / "seeds.json").read_text())["realistic"]
    lead = summary["lead"]["norm"]
    diffs = np.subtract(ri, norm)
    expected = stats.ttest_1samp(diffs, 0.0)
    assert lead["mean"] == pytest.approx(diffs.mean()) and lead["p"] == pytest.approx(expected.pvalue)
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert (lead["low"], lead["high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert lead["bootstrap_p"] == [0.5, 0.5, 0.5]
    assert summary["left_out"] == ["magface norm"] and "magface norm" not in summary["shares"]  # nan on seed 1
    assert summary["lambda"] == ri  # calibrated per model: may differ, and is listed
    _write_seed(tmp_path / "other", 0.2, 0.2, 0.2, folds=(0, 1, 2))
    with pytest.raises(ValueError, match=r"other/hard\.json: \['folds'\] differ"):
        seeds_bench.main(["s0", "other", "--name", "x", "--results-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="missing/hard.json"):
        seeds_bench.main(["s0", "missing", "--name", "x", "--results-dir", str(tmp_path)])
    assert summary["bootstrap_unit"] == "pairs"  # records saved before the identity bootstrap
    _write_seed(tmp_path / "by-ids", 0.2, 0.2, 0.2)
    for mix in ("hard", "realistic"):  # a seed rerun since: its bootstrap p's resampled identities
        record = json.loads((tmp_path / "by-ids" / f"{mix}.json").read_text())
        record["share_differences"]["unit"] = "identities"
        (tmp_path / "by-ids" / f"{mix}.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"by-ids/hard\.json: \['bootstrap unit'\] differ"):
        seeds_bench.main(["s0", "by-ids", "--name", "x", "--results-dir", str(tmp_path)])
    assert seeds_bench.slug("ers 1-cos(v,UI)") == "ers_1_cos_v_ui"
