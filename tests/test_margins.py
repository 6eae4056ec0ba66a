"""Margin heads against independently written numpy formulas, and finiteness with extreme inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankface.losses.margins import (
    AdaFace,
    ArcFace,
    CosFace,
    MagFace,
    MarginLoss,
    NormalizedClassifier,
    build_head,
    margin_cross_entropy,
)

# Every test here checks a loss against an independently written formula: two code paths (tests/numerics.py).
pytestmark = pytest.mark.numerics


def _data(b=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(b, c, generator=g) * 2 - 1
    labels = torch.randint(0, c, (b,), generator=g)
    norms = torch.rand(b, generator=g) * 60 + 5
    return cos, labels, norms


def _ref_logits(cos, labels, target_fn, s):
    """Loop reference: s * cos everywhere, s * target_fn(i, cos_iy) on the target column."""
    c = cos.numpy().astype(np.float64)
    out = np.empty_like(c)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            out[i, j] = s * (target_fn(i, c[i, j]) if j == int(labels[i]) else c[i, j])
    return out


def _ref_ce(logits, labels):
    total = 0.0
    for i, row in enumerate(logits):
        mx = max(row)
        lse = mx + math.log(sum(math.exp(v - mx) for v in row))
        total += lse - row[int(labels[i])]
    return total / len(logits)


def test_arcface_matches_formula():
    cos, labels, _ = _data()
    head = ArcFace(s=64, m=0.5)
    ref = _ref_logits(cos, labels, lambda i, c: math.cos(math.acos(min(max(c, -1 + 1e-7), 1 - 1e-7)) + 0.5), 64)
    np.testing.assert_allclose(head(cos, labels).numpy(), ref, rtol=1e-5, atol=1e-4)
    assert head.scale == 64.0


def test_arcface_monotonic_fallback():
    cos = torch.tensor([[-0.99, 0.2]])
    labels = torch.tensor([0])
    plain = ArcFace(s=1, m=0.5)(cos, labels)[0, 0].item()
    fallback = ArcFace(s=1, m=0.5, monotonic=True)(cos, labels)[0, 0].item()
    assert plain == pytest.approx(math.cos(math.acos(-0.99) + 0.5), abs=1e-6)
    assert fallback == pytest.approx(-0.99 - 0.5 * math.sin(0.5), abs=1e-6)


def test_cosface_and_preset():
    cos, labels, _ = _data(seed=1)
    ref = _ref_logits(cos, labels, lambda i, c: c - 0.35, 64)
    np.testing.assert_allclose(CosFace()(cos, labels).numpy(), ref, rtol=1e-5, atol=1e-4)
    preset = CosFace.unpg_preset()
    assert (preset.m, preset.scale) == (0.5, 64.0)
    assert build_head("cosface-unpg").m == 0.5
    assert isinstance(build_head("ArcFace", m=0.3), ArcFace) and build_head("arcface", m=0.3).m == 0.3
    with pytest.raises(ValueError, match="unknown margin head"):
        build_head("sphereface")


def test_adaface_matches_authors_formula_and_ema():
    cos, labels, norms = _data(seed=2)
    head = AdaFace(s=64, m=0.4, h=0.333, t_alpha=0.01).train()
    out = head(cos, labels, norms=norms).numpy()
    n = np.clip(norms.numpy().astype(np.float64), 1e-3, 100)
    mean = 0.01 * n.mean() + 0.99 * 20.0
    std = 0.01 * n.std(ddof=1) + 0.99 * 100.0

    def target(i, c):
        z = min(max((n[i] - mean) / (std + 1e-3) * 0.333, -1.0), 1.0)
        theta = math.acos(min(max(c, -1 + 1e-7), 1 - 1e-7))
        theta_m = min(max(theta - 0.4 * z, 1e-3), math.pi - 1e-3)
        return math.cos(theta_m) - (0.4 + 0.4 * z)

    np.testing.assert_allclose(out, _ref_logits(cos, labels, target, 64), rtol=1e-5, atol=1e-4)
    assert head.batch_mean.item() == pytest.approx(mean, rel=1e-6)
    assert head.batch_std.item() == pytest.approx(std, rel=1e-6)
    # eval mode leaves the statistics alone; they are buffers, so they are saved
    head.eval()
    head(cos, labels, norms=norms)
    assert head.batch_mean.item() == pytest.approx(mean, rel=1e-6)
    assert set(head.state_dict()) == {"batch_mean", "batch_std"}
    with pytest.raises(ValueError, match="needs the embedding norms"):
        head(cos, labels)


def test_magface_matches_formula_and_regularizer():
    cos, labels, norms = _data(seed=3)
    norms = torch.tensor([3.0, 10.0, 50.0, 109.0, 200.0, 60.0])
    head = MagFace()

    def margin(a):
        a = min(max(a, 10.0), 110.0)
        return (0.8 - 0.45) / 100.0 * (a - 10.0) + 0.45

    ref = _ref_logits(
        cos,
        labels,
        lambda i, c: math.cos(math.acos(min(max(c, -1 + 1e-7), 1 - 1e-7)) + margin(float(norms[i]))),
        64,
    )
    np.testing.assert_allclose(head(cos, labels, norms=norms).numpy(), ref, rtol=1e-5, atol=1e-4)
    a = np.clip(norms.numpy().astype(np.float64), 10, 110)
    reg_ref = 35.0 * np.mean(a / 110.0**2 + 1.0 / a)
    assert head.regularizer(norms).item() == pytest.approx(reg_ref, rel=1e-6)
    loss = margin_cross_entropy(head, cos, labels, norms)
    assert loss.item() == pytest.approx(_ref_ce(ref, labels) + reg_ref, rel=1e-5)
    # the regulariser pulls norms inside (l_a, u_a) upward: d/da (a/u^2 + 1/a) < 0 for a < u_a
    norms_g = torch.tensor([20.0, 40.0], requires_grad=True)
    head.regularizer(norms_g).backward()
    assert (norms_g.grad < 0).all()


def test_normalized_classifier_and_margin_loss():
    torch.manual_seed(0)
    clf = NormalizedClassifier(8, 5)
    emb = torch.randn(4, 8) * 7
    labels = torch.tensor([0, 3, 4, 3])
    cos = clf(emb)
    w = clf.weight.detach().numpy().astype(np.float64)
    e = emb.numpy().astype(np.float64)
    ref = np.array([[e[i] @ w[j] / np.linalg.norm(e[i]) / np.linalg.norm(w[j]) for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(cos.detach().numpy(), ref, atol=1e-6)
    head = CosFace(s=30, m=0.2)
    loss = MarginLoss(head)(emb, labels, cos)
    ref_logits = _ref_logits(cos.detach(), labels, lambda i, c: c - 0.2, 30)
    assert loss.item() == pytest.approx(_ref_ce(ref_logits, labels), rel=1e-5)
    loss.backward()
    assert clf.weight.grad is not None and torch.isfinite(clf.weight.grad).all()
    # MagFace through MarginLoss takes norms from the un-normalised embeddings
    mag = MarginLoss(MagFace())(emb, labels, cos.detach())
    assert mag.item() == pytest.approx(margin_cross_entropy(MagFace(), cos.detach(), labels, emb.norm(dim=1)).item())
    with pytest.raises(ValueError, match=r"embeddings must be \[B, 8\]"):
        clf(torch.randn(4, 7))


@pytest.mark.parametrize("name", ["arcface", "cosface", "adaface", "magface"])
@pytest.mark.parametrize("autocast", [False, True])
def test_extreme_inputs_are_finite(name, autocast):
    cos = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.999999, -0.999999, 0.5]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    norms = torch.tensor([1e6, 1e-6, 0.0]).requires_grad_()
    head = build_head(name).train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = head(cos.to(torch.bfloat16) if autocast else cos, labels, norms=norms)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        reg = head.regularizer(norms.clamp_min(1e-3))
        total = loss if reg is None else loss + reg
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all() and torch.isfinite(total)
    total.backward()
    assert torch.isfinite(cos.grad).all()


def test_classifier_bf16_huge_embeddings_finite():
    clf = NormalizedClassifier(16, 10)
    emb = (torch.randn(4, 16) * 1e6).requires_grad_()
    labels = torch.tensor([1, 2, 3, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cos = clf(emb.to(torch.bfloat16))
        loss = MarginLoss(ArcFace())(emb, labels, cos)
    assert cos.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(clf.weight.grad).all()


def test_bad_inputs_name_the_field():
    head = ArcFace()
    with pytest.raises(ValueError, match=r"labels.*\[0, 2\]"):
        head(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"`labels` must be \[B\]"):
        head(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"`cos` must be \[B, C\]"):
        head(torch.zeros(3), torch.tensor([0]))
    with pytest.raises(TypeError, match="integer"):
        head(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
