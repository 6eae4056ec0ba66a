"""RI losses against independently written numpy formulas; monotonicity, hinge, orthogonality, EMA buffers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rankface.losses.margins import ArcFace, MarginLoss, NormalizedClassifier
from rankface.losses.recognizability import (
    RecognizabilityLoss,
    UICentre,
    attention_loss,
    attention_target,
    index_diversion_loss,
    make_unrecognizable,
    recognizability_index,
    ri_from_cosines,
    ri_regression_loss,
)
from rankface.losses.unpg import UNPGLoss

# Every test here checks a loss against an independently written formula: two code paths (tests/numerics.py).
pytestmark = pytest.mark.numerics


def _unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _ref_ri(v, u, w, y, form="product", eps=1e-6):
    """Loops over samples: nearest other prototype by explicit search."""
    out = []
    for i in range(len(v)):
        vi = _unit(v[i])
        ui = float(vi @ _unit(u))
        cs = [float(vi @ _unit(w[j])) for j in range(len(w))]
        pos = cs[y[i]]
        neg = max(c for j, c in enumerate(cs) if j != y[i])
        out.append((1 - ui) * (pos - neg) if form == "product" else (1 - ui) * pos / (neg + 1 + eps))
    return np.array(out)


def _setup(b=6, e=8, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, e, generator=g) * 4,
        torch.randn(e, generator=g),
        torch.randn(c, e, generator=g),
        torch.randint(0, c, (b,), generator=g),
    )


@pytest.mark.parametrize("form", ["product", "ratio"])
def test_ri_formula_and_equivalent_inputs(form):
    v, u, w, y = _setup()
    ref = _ref_ri(v.numpy(), u.numpy(), w.numpy(), y.numpy(), form)
    got = recognizability_index(v, u, class_weights=w, labels=y, form=form)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    cos = F.normalize(v, dim=1) @ F.normalize(w, dim=1).T
    np.testing.assert_allclose(
        recognizability_index(v, u, class_cos=cos, labels=y, form=form).numpy(), ref, rtol=1e-5, atol=1e-6
    )
    cs = cos.clone()
    cs[torch.arange(len(y)), y] = -2
    w_pos, w_neg = w[y], w[cs.argmax(1)]
    np.testing.assert_allclose(
        recognizability_index(v, u, w_pos=w_pos, w_neg_max=w_neg, form=form).numpy(), ref, rtol=1e-5, atol=1e-6
    )


def test_ri_range_and_zero_centre():
    v, _, w, y = _setup(b=64, seed=1)
    xi = recognizability_index(v, torch.zeros(8), class_weights=w, labels=y)  # no centre yet: cos(v, u) = 0
    cos = F.normalize(v, dim=1) @ F.normalize(w, dim=1).T
    pos = cos[torch.arange(64), y]
    neg = cos.scatter(1, y[:, None], -9).max(1).values
    torch.testing.assert_close(xi, pos - neg)
    extreme = ri_from_cosines(torch.tensor([-1.0, -1.0]), torch.tensor([1.0, -1.0]), torch.tensor([-1.0, 1.0]))
    assert extreme.tolist() == [4.0, -4.0]


def test_ri_monotonic_in_each_input():
    grid = torch.linspace(-1, 1, 41)
    for form in ("product", "ratio"):
        for a in torch.linspace(-0.95, 0.95, 9):
            for b in torch.linspace(-0.95, 0.95, 9):
                # increasing in pos, everywhere
                assert (ri_from_cosines(a.expand(41), grid, b.expand(41), form).diff() >= -1e-7).all()
                if form == "product" or a >= 0:  # (ratio: decreasing in neg where pos >= 0)
                    assert (ri_from_cosines(b.expand(41), a.expand(41), grid, form).diff() <= 1e-7).all()
        # decreasing in cos(v, u) where the class term is positive (pos > neg, resp. pos >= 0)
        xi = ri_from_cosines(grid, torch.full((41,), 0.6), torch.full((41,), 0.2), form)
        assert (xi.diff() < 0).all()
    # strictness in pos and neg for the product form
    assert (ri_from_cosines(torch.zeros(41), grid, torch.zeros(41)).diff() > 0).all()
    assert (ri_from_cosines(torch.zeros(41), torch.zeros(41), grid).diff() < 0).all()
    # documented caveat: for a misclassified face (pos < neg) the product form grows more negative away from u
    mis = ri_from_cosines(grid, torch.full((41,), 0.1), torch.full((41,), 0.5))
    assert (mis.diff() > 0).all()
    with pytest.raises(ValueError, match="form"):
        ri_from_cosines(grid, grid, grid, "sum")


def test_regression_loss_smooth_l1_and_detached_target():
    pred = torch.tensor([0.0, 1.0, -2.0, 0.5], requires_grad=True)
    target = torch.tensor([0.2, -0.5, 1.0, 0.5], requires_grad=True)
    loss = ri_regression_loss(pred, target, beta=0.75)
    d = np.abs(pred.detach().numpy() - target.detach().numpy())
    ref = np.mean([0.5 * x * x / 0.75 if x < 0.75 else x - 0.375 for x in d])
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    loss.backward()
    assert target.grad is None and pred.grad is not None


def test_hinge_zero_above_mu_plus_tau():
    mu, tau = 0.3, 0.2
    xi = torch.tensor([0.5, 0.6, 1.0, 0.49, -1.0], requires_grad=True)
    loss = index_diversion_loss(xi, torch.tensor(mu), torch.tensor(tau))
    ref = np.mean([max(0.0, mu + tau - x) for x in [0.5, 0.6, 1.0, 0.49, -1.0]])
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    loss.backward()
    assert xi.grad[:3].eq(0).all() and (xi.grad[3:] < 0).all()
    above = torch.tensor([0.5, 0.7, 3.0])
    assert index_diversion_loss(above, mu, tau).item() == 0.0


def test_attention_target_orthogonal_to_ui_direction():
    v, u, _, _ = _setup(b=16, seed=2)
    v.requires_grad_()
    t = attention_target(v, u)
    assert not t.requires_grad
    torch.testing.assert_close(t @ F.normalize(u, dim=0), torch.zeros(16), atol=1e-6, rtol=0)
    torch.testing.assert_close(t.norm(dim=1), torch.ones(16))
    # reference: Gram-Schmidt in numpy
    vn, un = _unit(v.detach().numpy()), _unit(u.numpy())
    ref = _unit(vn - (vn @ un)[:, None] * un[None, :])
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-6)
    att = torch.randn(16, 8, requires_grad=True)
    loss = attention_loss(att, v, u)
    assert loss.item() == pytest.approx(np.mean(np.sum((att.detach().numpy() - ref) ** 2, axis=1)), rel=1e-5)
    assert attention_loss(att, v, u, "elements").item() == pytest.approx(loss.item() / 8, rel=1e-5)
    loss.backward()
    assert v.grad is None and att.grad is not None


def test_ui_centre_ema_and_state_dict_roundtrip():
    torch.manual_seed(0)
    centre = UICentre(8, momentum=0.99)
    w = torch.randn(5, 8)
    batches = [(torch.randn(6, 8, requires_grad=True), torch.randint(0, 5, (6,))) for _ in range(3)]
    c_ref = mu_ref = sd_ref = None
    for k, (emb, y) in enumerate(batches):
        ri = centre.update(emb, y, w)
        e = _unit(emb.detach().numpy())
        mean = e.mean(0)
        c_ref = mean if k == 0 else 0.99 * c_ref + 0.01 * mean
        ri_ref = _ref_ri(emb.detach().numpy(), c_ref, w.numpy(), y.numpy())
        np.testing.assert_allclose(ri.numpy(), ri_ref, rtol=1e-5, atol=1e-6)
        mu_ref = ri_ref.mean() if k == 0 else 0.99 * mu_ref + 0.01 * ri_ref.mean()
        sd_ref = ri_ref.std() if k == 0 else 0.99 * sd_ref + 0.01 * ri_ref.std()
    np.testing.assert_allclose(centre.centre.numpy(), c_ref, rtol=1e-5, atol=1e-7)
    assert centre.mu_ui.item() == pytest.approx(mu_ref, rel=1e-5)
    assert centre.sigma_ui.item() == pytest.approx(sd_ref, rel=1e-5)
    assert int(centre.num_updates) == 3
    assert all(not b.requires_grad for b in centre.buffers())
    buf = io.BytesIO()
    torch.save(centre.state_dict(), buf)
    buf.seek(0)
    fresh = UICentre(8)
    fresh.load_state_dict(torch.load(buf))
    for name, tensor in centre.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert set(centre.state_dict()) == {"centre", "mu_ui", "sigma_ui", "num_updates"}


def test_make_unrecognizable():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 32, 32, generator=g)
    a = make_unrecognizable(images, generator=torch.Generator().manual_seed(1))
    b = make_unrecognizable(images, generator=torch.Generator().manual_seed(1))
    assert a.shape == images.shape and a.dtype == images.dtype and torch.equal(a, b)
    # without blur and with r fixed: exactly down to 4 px (antialiased) and back up
    plain = make_unrecognizable(images, size_range=(4, 4), blur=False)
    small = F.interpolate(images, size=(4, 4), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(plain, F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False))

    # far less detail than the source; the blur removes more
    def tv(x):
        return (x.diff(dim=-1).abs().mean() + x.diff(dim=-2).abs().mean()).item()

    assert tv(plain) < 0.2 * tv(images) and tv(a) < tv(make_unrecognizable(images, blur=False))
    half = make_unrecognizable(images.to(torch.bfloat16), generator=torch.Generator().manual_seed(1))
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), a, atol=1e-2)
    with pytest.raises(ValueError, match="size_range"):
        make_unrecognizable(images, size_range=(6, 4))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        make_unrecognizable(images[0])


def _loss_inputs(seed=0):
    torch.manual_seed(seed)
    emb = (torch.randn(8, 16) * 5).requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    clf = NormalizedClassifier(16, 4)
    quality = torch.randn(8, requires_grad=True)
    attended = torch.randn(8, 16, requires_grad=True)
    centre = UICentre(16)
    centre.update(torch.randn(8, 16), labels, clf.weight)
    return emb, labels, clf, quality, attended, centre


def test_total_loss_formula_and_warmup_gate():
    emb, labels, clf, quality, attended, centre = _loss_inputs()
    ri_loss = RecognizabilityLoss(MarginLoss(ArcFace()), alpha=0.5, beta=2.0, gamma=3.0, warmup_steps=10)
    cos = clf(emb)
    w = clf.weight.detach().numpy()
    u = centre.direction.numpy()
    xi = _ref_ri(emb.detach().numpy(), u, w, labels.numpy())
    d = np.abs(quality.detach().numpy() - xi)
    reg = np.mean([0.5 * x * x / 0.75 if x < 0.75 else x - 0.375 for x in d])
    hinge = np.mean(np.maximum(0.0, centre.mu_ui.item() + centre.sigma_ui.item() - xi))
    vn = _unit(emb.detach().numpy())
    target = _unit(vn - (vn @ _unit(u))[:, None] * _unit(u)[None, :])
    att = np.mean(np.sum((attended.detach().numpy() - target) ** 2, axis=1))
    margin = MarginLoss(ArcFace())(emb, labels, cos).item()

    early = ri_loss(emb, labels, cos, clf.weight, quality, centre, attended=attended, step=9)
    assert not early.active and early.diversion.item() == 0.0 and early.attention.item() == 0.0
    assert early.loss.item() == pytest.approx(margin + 0.5 * reg, rel=1e-5)
    np.testing.assert_allclose(early.xi.numpy(), xi, rtol=1e-5, atol=1e-6)
    late = ri_loss(emb, labels, cos, clf.weight, quality, centre, attended=attended, step=10)
    assert late.active and hinge > 0
    assert late.diversion.item() == pytest.approx(hinge, rel=1e-5)
    assert late.attention.item() == pytest.approx(att, rel=1e-5)
    assert late.loss.item() == pytest.approx(margin + 0.5 * reg + 2.0 * hinge + 3.0 * att, rel=1e-5)


def test_diversion_gradient_goes_to_embeddings_not_prototypes():
    emb, labels, clf, quality, attended, centre = _loss_inputs(seed=1)
    grads = {}
    for beta in (0.0, 1.0):
        loss = RecognizabilityLoss(MarginLoss(ArcFace()), beta=beta, gamma=0.0, tau=5.0)(
            emb, labels, clf(emb), clf.weight, quality, centre, attended=attended, step=0
        ).loss
        grads[beta] = torch.autograd.grad(loss, [emb, clf.weight, quality])
    assert not torch.allclose(grads[0.0][0], grads[1.0][0])  # L_ID moves the embeddings
    torch.testing.assert_close(grads[0.0][1], grads[1.0][1])  # ...but never the class prototypes
    torch.testing.assert_close(grads[0.0][2], grads[1.0][2])  # ...nor the regressor (diversion on xi)
    # the option: diversion on the regressed quality instead
    loss = RecognizabilityLoss(MarginLoss(ArcFace()), alpha=0.0, gamma=0.0, tau=5.0, diversion_on="xi_hat")(
        emb, labels, clf(emb), clf.weight, quality, centre, step=0
    )
    ref = np.mean(np.maximum(0.0, centre.mu_ui.item() + 5.0 - quality.detach().numpy()))
    assert loss.diversion.item() == pytest.approx(ref, rel=1e-6)


def test_combines_with_unpg_and_bf16_extreme_inputs_finite():
    emb, labels, clf, quality, attended, centre = _loss_inputs(seed=2)
    with torch.no_grad():
        emb[0] *= 1e5
        emb[1] = clf.weight[labels[1]] * 3  # cos = 1 with its class
        emb[2] = centre.centre * 10  # exactly on the UI direction
    ri_loss = RecognizabilityLoss(UNPGLoss(ArcFace()), form="ratio")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ri_loss(
            emb.to(torch.bfloat16),
            labels,
            clf(emb.to(torch.bfloat16)),
            clf.weight,
            quality.to(torch.bfloat16),
            centre,
            attended=attended.to(torch.bfloat16),
            step=0,
        )
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    for t in (emb, quality, attended, clf.weight):
        assert torch.isfinite(t.grad).all()


def test_bad_inputs():
    emb, labels, clf, quality, _, centre = _loss_inputs()
    with pytest.raises(ValueError, match="quality"):
        RecognizabilityLoss(MarginLoss(ArcFace()))(emb, labels, clf(emb), clf.weight, quality[:3], centre)
    with pytest.raises(ValueError, match="ui_direction"):
        recognizability_index(emb, torch.zeros(3), class_weights=clf.weight, labels=labels)
    with pytest.raises(ValueError, match="give `class_weights`"):
        recognizability_index(emb, torch.zeros(16))
    with pytest.raises(ValueError, match="diversion_on"):
        RecognizabilityLoss(MarginLoss(ArcFace()), diversion_on="both")
