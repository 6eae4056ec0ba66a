"""Error-versus-discard curves against a loop reference; oracle, random, ties, plot and table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankface.evaluation.quality import (
    ERCCurve,
    erc_table,
    error_oracle_quality,
    error_versus_discard,
    evaluate_quality,
    oracle_erc,
    pair_quality,
    partial_auc,
    plot_erc,
    random_erc,
    threshold_at_fmr,
)


def _pairs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    genuine = np.arange(n) % 2 == 0
    noise = rng.random(n)  # low "image quality" makes genuine scores low
    scores = np.where(genuine, 0.2 + 0.6 * noise + 0.1 * rng.standard_normal(n), 0.1 * rng.standard_normal(n))
    return scores, genuine, noise


def _ref_curve(scores, genuine, quality, fmr, grid):
    """Loops: threshold from sorted impostors, discard the round(d P) lowest-quality pairs (distinct qualities)."""
    imp = sorted((s for s, g in zip(scores, genuine) if not g), reverse=True)
    t = imp[math.floor(fmr * len(imp))]
    order = sorted(range(len(scores)), key=lambda i: quality[i])
    out = []
    for d in grid:
        kept = order[round(float(d) * len(scores)) :]
        gen = [i for i in kept if genuine[i]]
        out.append(sum(scores[i] <= t for i in gen) / len(gen))
    return t, np.array(out)


def test_curve_matches_loop_reference():
    scores, genuine, quality = _pairs()
    curve = error_versus_discard(scores, genuine, quality, fmr=1e-2)
    t, ref = _ref_curve(scores, genuine, quality, 1e-2, curve.discard)
    assert curve.threshold == t
    np.testing.assert_allclose(curve.fnmr, ref)
    assert curve.discard[0] == 0 and curve.discard[-1] == 0.5 and len(curve.discard) == 51
    # an informative quality lowers FNMR as pairs are discarded
    assert curve.fnmr[-1] < curve.fnmr[0]


def test_threshold_at_fmr():
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    genuine = np.array([True, False, False, False, False, False])
    t, achieved = threshold_at_fmr(scores, genuine, fmr=0.2)  # floor(0.2 * 5) = 1 impostor may pass
    assert t == 0.4 and achieved == pytest.approx(0.2)
    t, achieved = threshold_at_fmr(scores, genuine, fmr=0.1)  # none may pass
    assert t == 0.5 and achieved == 0.0


def test_pair_quality_and_tensors():
    assert pair_quality([1.0, 5.0, 3.0], torch.tensor([2.0, 4.0, 3.0])).tolist() == [1.0, 4.0, 3.0]
    scores, genuine, quality = _pairs(seed=1)
    a = error_versus_discard(torch.tensor(scores), torch.tensor(genuine), torch.tensor(quality))
    b = error_versus_discard(scores, genuine, quality)
    np.testing.assert_allclose(a.fnmr, b.fnmr)


def test_partial_auc():
    d = np.linspace(0, 0.5, 51)
    assert partial_auc(d, np.full(51, 0.2), 0.3) == pytest.approx(0.06)
    assert partial_auc(d, d, 0.3) == pytest.approx(0.045)  # integral of x from 0 to 0.3
    f = np.random.default_rng(0).random(51)
    assert partial_auc(d, f, 0.3) == pytest.approx(np.trapezoid(f[:31], d[:31]))
    assert partial_auc(d, d, 0.305) == pytest.approx(0.305**2 / 2)  # interpolated end point
    with pytest.raises(ValueError, match="beyond"):
        partial_auc(d, f, 0.6)


def test_oracle_is_a_lower_bound_and_random_is_flat():
    scores, genuine, quality = _pairs(n=2000, seed=2)
    curves = evaluate_quality(scores, genuine, {"noise": quality, "anti": -quality})
    oracle, rnd = curves["oracle"], curves["random"]
    misses = np.sum(genuine & (scores <= oracle.threshold))
    assert misses > 0
    # the oracle discards exactly the false non-matches first: FNMR reaches 0 at d = misses / P
    d0 = misses / scores.size
    assert all(f == 0 for d, f in zip(oracle.discard, oracle.fnmr) if d >= d0 - 1e-12)
    first = oracle.fnmr[0]
    for name in ("noise", "anti", "random"):
        assert np.all(oracle.fnmr <= curves[name].fnmr + 1e-12), name
    assert oracle.pauc() < curves["noise"].pauc() < rnd.pauc() < curves["anti"].pauc()
    assert np.max(np.abs(rnd.fnmr - first)) < 0.03  # no information: flat on average
    q = error_oracle_quality(scores, genuine, oracle.threshold)
    assert (
        q[genuine & (scores <= oracle.threshold)].max()
        < q[~genuine].min()
        < q[genuine & (scores > oracle.threshold)].min()
    )


def test_ties_are_not_broken_by_pair_index():
    scores, genuine, _ = _pairs(n=1000, seed=3)
    t, _ = threshold_at_fmr(scores, genuine)
    miss = genuine & (scores <= t)
    order = np.argsort(~miss, kind="stable")  # every false non-match first in the list
    s, g = scores[order], genuine[order]
    flat = error_versus_discard(s, g, np.zeros(s.size))
    assert np.nanmax(np.abs(flat.fnmr - flat.fnmr[0])) < 0.06  # a constant quality carries no information
    with_ties = error_versus_discard(s, g, np.zeros(s.size), tie_seed=1)
    assert not np.array_equal(flat.fnmr, with_ties.fnmr)


def test_resolution_oracle_style_quality_with_ties():
    rng = np.random.default_rng(4)
    n = 3000
    genuine = rng.random(n) < 0.5
    res = np.minimum(rng.choice([8, 12, 16, 24, 112], n), rng.choice([8, 12, 16, 24, 112], n))
    scores = np.where(genuine, 0.8 - 2.0 / res + 0.2 * rng.standard_normal(n), 0.1 * rng.standard_normal(n))
    res_curve = error_versus_discard(scores, genuine, res, name="resolution")
    assert res_curve.pauc() < random_erc(scores, genuine).pauc()


def test_table_and_plot(tmp_path):
    scores, genuine, quality = _pairs()
    curves = evaluate_quality(scores, genuine, {"ri": quality})
    table = erc_table(curves)
    lines = table.splitlines()
    assert lines[2].startswith("| quality | FNMR d=0 |") and "pAUC(0.3)" in lines[2]
    assert [ln.split("|")[1].strip() for ln in lines[4:]] == ["ri", "random", "oracle"]
    assert f"{curves['ri'].pauc():.5f}" in lines[4]
    path = plot_erc(curves, tmp_path / "plots" / "erc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["erc.png"]  # no temporary file left behind
    assert isinstance(curves["ri"], ERCCurve) and curves["ri"].fnmr_at(0.0) == curves["ri"].fnmr[0]


def test_bad_inputs():
    scores, genuine, quality = _pairs()
    with pytest.raises(ValueError, match="`quality` has 3 values"):
        error_versus_discard(scores, genuine, quality[:3])
    with pytest.raises(ValueError, match="both genuine and impostor"):
        error_versus_discard(scores, np.ones_like(genuine), quality)
    with pytest.raises(ValueError, match="NaN"):
        error_versus_discard(scores, genuine, np.full_like(quality, np.nan))
    with pytest.raises(ValueError, match="discard"):
        error_versus_discard(scores, genuine, quality, discard=[0.1, 0.2])
    with pytest.raises(ValueError, match="fmr"):
        oracle_erc(scores, genuine, fmr=0.0)
