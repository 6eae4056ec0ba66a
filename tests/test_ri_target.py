"""The fixed RI target (issue 21): the clamped product form, prototypes the sample was not fitted to (leave-one-out
clean centroids), the loss fed with them, against formulas written here with loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankface.losses.margins import ArcFace, MarginLoss, NormalizedClassifier
from rankface.losses.recognizability import RecognizabilityLoss, UICentre, recognizability_index, ri_from_cosines
from rankface.training.face_ri import TargetPrototypes, ri_probe_indices

pytestmark = pytest.mark.numerics


def _unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_clamped_product_form_and_its_gradient_never_pulls_towards_the_ui_centre():
    ui = torch.tensor([0.3, -0.2, 0.5, 0.1], requires_grad=True)
    pos = torch.tensor([0.6, 0.1, 0.2, 0.4])
    neg = torch.tensor([0.2, 0.5, 0.2, 0.1])
    xi = ri_from_cosines(ui, pos, neg, form="product_clamped")
    expected = [(1 - u) * max(0.0, p - n) for u, p, n in zip(ui.tolist(), pos.tolist(), neg.tolist(), strict=True)]
    np.testing.assert_allclose(xi.detach().numpy(), expected, rtol=1e-6)
    # The hinge lowers the loss by raising xi; d xi / d ui = -max(0, pos - neg) <= 0: a gradient step on the hinge
    # moves ui down (away from the UI centre) or leaves it; the plain product moves a misclassified face (row 2) up.
    (grad,) = torch.autograd.grad(xi.sum(), ui)
    assert (grad <= 0).all() and grad[1] == 0
    (grad_old,) = torch.autograd.grad(ri_from_cosines(ui, pos, neg, form="product").sum(), ui)
    assert grad_old[1] > 0


def _prototypes(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])  # class 2 has one image: it keeps it
    emb = rng.normal(size=(8, 6))
    return TargetPrototypes(torch.tensor(emb), torch.tensor(labels), num_classes=4), _unit(emb), labels


def test_target_cos_leaves_the_image_out_of_its_own_class_prototype():
    protos, e, labels = _prototypes()
    v = torch.tensor(np.random.default_rng(1).normal(size=(5, 6)), requires_grad=True)
    index = torch.tensor([0, 4, 5, 6, 2])
    got = protos.target_cos(v, torch.tensor(labels[index.numpy()]), index)
    vn = _unit(v.detach().numpy())
    for row, i in enumerate(index.tolist()):
        for c in range(4):
            members = [k for k in range(8) if labels[k] == c and (c != labels[i] or k != i or (labels == c).sum() == 1)]
            proto = _unit(e[members].sum(0))
            assert got[row, c].item() == pytest.approx(float(vn[row] @ proto), abs=1e-6)
    got.sum().backward()  # the cosines keep their gradient into the embeddings (index diversion)
    assert v.grad is not None and v.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="labels are not those"):
        protos.target_cos(v, torch.tensor([1, 1, 2, 3, 0]), index)


def test_loss_with_target_cos_measures_xi_there_and_diverts_through_it():
    torch.manual_seed(0)
    protos, _, labels = _prototypes(2)
    emb = (torch.randn(8, 6) * 3).requires_grad_()
    index = torch.arange(8)
    y = torch.tensor(labels)
    clf = NormalizedClassifier(6, 4)
    centre = UICentre(6)
    centre.update(torch.randn(8, 6), y, protos.centroids(), form="product_clamped")
    quality = torch.randn(8, requires_grad=True)
    target_cos = protos.target_cos(emb, y, index)
    ri_loss = RecognizabilityLoss(MarginLoss(ArcFace()), gamma=0.0, tau=3.0, form="product_clamped")
    out = ri_loss(emb, y, clf(emb), clf.weight, quality, centre, step=0, target_cos=target_cos)
    # xi by loops: clamped product against the leave-one-out prototypes, never the classifier's rows
    u = centre.direction.numpy()
    vn = _unit(emb.detach().numpy())
    xi = []
    for i in range(8):
        cs = target_cos[i].detach().numpy()
        pos, neg = cs[labels[i]], max(c for j, c in enumerate(cs) if j != labels[i])
        xi.append((1 - vn[i] @ _unit(u)) * max(0.0, pos - neg))
    np.testing.assert_allclose(out.xi.numpy(), xi, rtol=1e-5, atol=1e-6)
    assert out.diversion.item() == pytest.approx(np.mean(np.maximum(0, centre.mu_ui.item() + 3.0 - np.array(xi))),
                                                 rel=1e-5)
    old = ri_loss(emb, y, clf(emb), clf.weight, quality, centre, step=0)  # the old target: classifier rows
    ref_old = recognizability_index(emb.detach(), centre.direction, class_weights=clf.weight.detach(), labels=y,
                                    form="product_clamped")
    torch.testing.assert_close(old.xi, ref_old)
    assert not torch.allclose(old.xi, out.xi)


def test_probe_sample_is_fixed_and_within_the_set():
    a, b = ri_probe_indices(50, 10, seed=3), ri_probe_indices(50, 10, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10 and a.max() < 50
    assert len(ri_probe_indices(5, 10, seed=3)) == 5
