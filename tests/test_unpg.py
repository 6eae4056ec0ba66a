"""UNPGLoss against a loop/numpy reference (explicit appended columns), and the 2-process global batch check."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rankface.losses.margins import AdaFace, ArcFace, CosFace, MagFace, NormalizedClassifier
from rankface.losses.unpg import UNPGLoss, box_whisker_filter, negative_pair_similarities


def _ref_negatives(x: np.ndarray, y: np.ndarray, wisk: float) -> list[float]:
    """Loops: unordered pairs a < b with different labels, then the order-statistic whisker filter."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    vals = [float(xn[a] @ xn[b]) for a in range(len(x)) for b in range(a + 1, len(x)) if y[a] != y[b]]
    if len(vals) < 4:
        return vals
    s = sorted(vals)
    q1, q3 = s[math.floor(0.25 * len(s))], s[math.floor(0.75 * len(s))]
    lo, hi = q1 - wisk * (q3 - q1), q3 + wisk * (q3 - q1)
    return [v for v in vals if lo <= v <= hi]


def _ref_unpg(x, y, cos, target_fn, s, wisk):
    """Appends the kept negatives as extra columns of every row and averages the cross-entropy (float64)."""
    neg = _ref_negatives(x, y, wisk)
    total = 0.0
    for i in range(len(y)):
        row = [s * (target_fn(i, cos[i, j]) if j == y[i] else cos[i, j]) for j in range(cos.shape[1])]
        row += [s * n for n in neg]
        mx = max(row)
        total += mx + math.log(sum(math.exp(v - mx) for v in row)) - row[y[i]]
    return total / len(y), len(neg)


def _batch(b=10, e=8, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, e, generator=g) * 3
    labels = torch.randint(0, c, (b,), generator=g)
    clf = NormalizedClassifier(e, c)
    torch.nn.init.normal_(clf.weight, generator=g)
    return emb, labels, clf


def _arc(c, m=0.5):
    return math.cos(math.acos(min(max(c, -1 + 1e-7), 1 - 1e-7)) + m)


@pytest.mark.numerics
@pytest.mark.parametrize("wisk", [1.5, 1.0, 0.1])
def test_unpg_matches_loop_reference(wisk):
    emb, labels, clf = _batch()
    cos = clf(emb)
    loss_fn = UNPGLoss(ArcFace(), wisk=wisk)
    loss = loss_fn(emb, labels, cos)
    ref, m = _ref_unpg(
        emb.numpy().astype(np.float64),
        labels.numpy(),
        cos.detach().numpy().astype(np.float64),
        lambda i, c: _arc(c),
        64.0,
        wisk,
    )
    assert loss_fn.last_num_negatives == m and m > 0
    assert loss.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.numerics
def test_cosface_unpg_matches_reference_and_explicit_concat_gradients():
    emb, labels, clf = _batch(seed=1)
    emb.requires_grad_()
    head = CosFace(s=32, m=0.35)
    loss = UNPGLoss(head)(emb, labels, clf(emb))
    ref, _ = _ref_unpg(
        emb.detach().numpy().astype(np.float64),
        labels.numpy(),
        clf(emb).detach().numpy().astype(np.float64),
        lambda i, c: c - 0.35,
        32.0,
        1.5,
    )
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    g_emb, g_w = torch.autograd.grad(loss, [emb, clf.weight])
    # second formulation: the literal [B, C + M] concatenation of the paper, through autograd
    x = F.normalize(emb, dim=1)
    kept = box_whisker_filter(negative_pair_similarities(x, labels), 1.5)
    logits = head(clf(emb), labels)
    full = torch.cat([logits, head.scale * kept.expand(len(labels), -1)], dim=1)
    r_emb, r_w = torch.autograd.grad(F.cross_entropy(full, labels), [emb, clf.weight])
    torch.testing.assert_close(g_emb, r_emb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_w, r_w, rtol=1e-4, atol=1e-5)
    assert r_emb.abs().sum() > 0


def test_filter_quartiles_and_inclusive_bounds():
    core = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    # L = 10: Q1 = sorted[2] = 1, Q3 = sorted[7] = 6, IQR = 5, bounds [-6.5, 13.5] with wisk 1.5
    at_bounds = torch.tensor([13.5, *core, -6.5])
    assert torch.equal(box_whisker_filter(at_bounds, 1.5), at_bounds)
    outside = torch.tensor([13.75, *core, -6.75])
    assert torch.equal(box_whisker_filter(outside, 1.5), torch.tensor(core))
    # an interpolating quantile (numpy's default) would give other bounds; the filter must use order statistics
    # order statistics: Q1 = v[2] = 2, Q3 = v[6] = 13, upper bound 29.5 keeps 20; numpy's linear quantiles
    # (1.75, 7) would give an upper bound of 14.875 and drop it
    v = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 13.0, 20.0])
    assert np.quantile(v.numpy(), 0.75) + 1.5 * (np.quantile(v.numpy(), 0.75) - np.quantile(v.numpy(), 0.25)) < 20
    assert torch.equal(box_whisker_filter(v, 1.5), v)
    three = torch.tensor([100.0, 0.0, -100.0])
    assert torch.equal(box_whisker_filter(three, 0.0), three)  # L < 4: no filter


@pytest.mark.numerics
def test_negative_pairs_upper_triangle_different_labels():
    x = F.normalize(torch.randn(5, 3), dim=1)
    y = torch.tensor([0, 0, 1, 2, 1])
    got = negative_pair_similarities(x, y)
    ref = [float(x[a] @ x[b]) for a in range(5) for b in range(a + 1, 5) if y[a] != y[b]]
    assert got.tolist() == pytest.approx(ref, abs=1e-6) and len(ref) == 8


def test_equals_base_head_exactly_without_negatives():
    emb, _, clf = _batch(b=6)
    labels = torch.full((6,), 2)  # one class: no negative pairs at all
    cos = clf(emb)
    for head in (ArcFace(), CosFace(), MagFace()):
        loss_fn = UNPGLoss(head)
        got = loss_fn(emb, labels, cos)
        base = F.cross_entropy(head(cos, labels, norms=emb.norm(dim=1)), labels)
        reg = head.regularizer(emb.norm(dim=1))
        assert torch.equal(got, base if reg is None else base + reg)  # the same calls on the same tensors: exact
        assert loss_fn.last_num_negatives == 0


@pytest.mark.numerics
def test_fewer_than_four_negatives_are_all_kept():
    emb, _, clf = _batch(b=3)
    labels = torch.tensor([0, 1, 1])  # 2 negative pairs
    loss_fn = UNPGLoss(ArcFace(), wisk=0.0)
    loss = loss_fn(emb, labels, clf(emb))
    ref, m = _ref_unpg(
        emb.numpy().astype(np.float64),
        labels.numpy(),
        clf(emb).detach().numpy().astype(np.float64),
        lambda i, c: _arc(c),
        64.0,
        0.0,
    )
    assert m == 2 and loss_fn.last_num_negatives == 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.numerics
def test_magface_and_adaface_wired_up():
    emb, labels, clf = _batch(seed=3)
    emb = emb * 10
    cos = clf(emb)
    mag = MagFace()
    norms = emb.norm(dim=1)
    a = norms.clamp(10, 110).numpy().astype(np.float64)
    m = (0.35 / 100) * (a - 10) + 0.45
    ref, _ = _ref_unpg(
        emb.numpy().astype(np.float64),
        labels.numpy(),
        cos.detach().numpy().astype(np.float64),
        lambda i, c: _arc(c, m[i]),
        64.0,
        1.5,
    )
    ref += 35.0 * np.mean(a / 110**2 + 1 / a)
    assert UNPGLoss(mag)(emb, labels, cos).item() == pytest.approx(ref, rel=1e-5)
    ada = AdaFace().eval()
    assert torch.isfinite(UNPGLoss(ada)(emb, labels, cos))


@pytest.mark.parametrize("name", ["arcface", "adaface", "magface"])
def test_bf16_autocast_extreme_inputs_finite(name):
    heads = {"arcface": ArcFace(), "adaface": AdaFace(), "magface": MagFace()}
    emb = torch.randn(6, 8)
    emb[0] *= 1e6
    emb[1] = emb[2]  # identical pair: G = 1
    emb[3] = -emb[4]  # opposite pair: G = -1
    emb.requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    clf = NormalizedClassifier(8, 5)
    with torch.no_grad():
        clf.weight[1] = emb[1].detach()  # cos = 1 exactly with its own class
        clf.weight[2] = -emb[2].detach()  # cos = -1 with the target class
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = UNPGLoss(heads[name])(emb.to(torch.bfloat16), labels, clf(emb.to(torch.bfloat16)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(clf.weight.grad).all()


def test_bad_inputs():
    emb, labels, clf = _batch()
    with pytest.raises(ValueError, match="UNPGLoss: `embeddings` must be"):
        UNPGLoss(ArcFace())(emb[:3], labels, clf(emb))
    with pytest.raises(ValueError, match="wisk"):
        UNPGLoss(ArcFace(), wisk=-1)


@pytest.mark.slow
def test_two_processes_equal_single_process_global_batch(tmp_path):
    """2 gloo processes with DDP: loss and DDP-averaged gradients equal the single-process global batch."""
    script = Path(__file__).with_name("unpg_ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp_path / "ddp_results.pt")
    reference = torch.load(tmp_path / "reference.pt")
    for head in ("arcface", "magface"):
        for split in (6, 5):  # equal shards and unequal shards (5 + 7)
            got, ref = results[(head, split)], reference[head]
            assert got["world"] == 2
            assert got["m"] == ref["m"] > 0  # the same global negatives on every rank
            torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-5, atol=1e-5)
            for name, grad in ref["grads"].items():
                torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-3)
    # local negatives only give a different loss: the gather is what makes them equal
    assert abs(results[("arcface-local", 6)]["loss"].item() - reference["arcface"]["loss"].item()) > 1e-2


@pytest.mark.parametrize("wisk", [1.0, None])
def test_logged_mechanism_stats_match_a_hand_computation(wisk):
    """Pairs kept, bounds, the appended pairs' share of the non-target softmax mass and the hardest class-negative
    cosine, recomputed here with loops over the batch (ArcFace: non-target logits are s cos)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 5))
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    cos = torch.tensor(rng.uniform(-0.6, 0.9, size=(10, 6)), dtype=torch.float32)
    head = ArcFace(s=16.0, m=0.5)
    loss = UNPGLoss(head, wisk=wisk)
    loss(torch.tensor(x, dtype=torch.float32), torch.tensor(y), cos)
    stats = loss.last_stats
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [float(xn[a] @ xn[b]) for a in range(10) for b in range(a + 1, 10) if y[a] != y[b]]
    kept = pairs if wisk is None else _ref_negatives(x, y, wisk)
    assert stats["unpg_pairs"] == len(pairs) == 40 and stats["negatives"] == len(kept)
    if wisk is None:
        assert "unpg_lower" not in stats
    else:
        s = sorted(pairs)
        q1, q3 = s[10], s[30]
        assert stats["unpg_lower"] == pytest.approx(q1 - wisk * (q3 - q1), abs=1e-5)
        assert stats["unpg_upper"] == pytest.approx(q3 + wisk * (q3 - q1), abs=1e-5)
    c = cos.double().numpy()
    shares, hardest = [], []
    for i in range(10):
        others = [j for j in range(6) if j != y[i]]
        appended = sum(math.exp(16.0 * n) for n in kept)
        shares.append(appended / (appended + sum(math.exp(16.0 * c[i, j]) for j in others)))
        hardest.append(max(c[i, j] for j in others))
    assert stats["unpg_share"] == pytest.approx(np.mean(shares), rel=1e-4)
    assert stats["unpg_kept_max"] == pytest.approx(max(kept), abs=1e-5)
    assert stats["unpg_hardest_class_mean"] == pytest.approx(np.mean(hardest), abs=1e-5)
    assert stats["unpg_hardest_class_max"] == pytest.approx(max(hardest), abs=1e-5)
    assert stats["unpg_hardest_class_median"] == pytest.approx(sorted(hardest)[4], abs=1e-5)  # torch: lower median


def test_no_filter_keeps_every_negative_pair():
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.normal(size=(8, 4)), dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    cos = torch.tensor(rng.uniform(-0.5, 0.5, size=(8, 4)), dtype=torch.float32)
    loss = UNPGLoss(ArcFace(), wisk=None)
    loss(x, y, cos)
    assert loss.last_num_negatives == negative_pair_similarities(F.normalize(x, dim=1), y).numel() == 24
