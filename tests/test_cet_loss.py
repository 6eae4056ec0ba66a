"""CET weights and loss against independently written references (numpy, explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankface.losses.cet import cet_loss, coupled_weights

# Every test here checks a loss against an independently written formula: two code paths (tests/numerics.py).
pytestmark = pytest.mark.numerics


def _ref_weight(x: float, t: float) -> float:
    # The literal definition, as written in the paper and the authors' code (float64 here, so no overflow).
    sig = 1.0 / (1.0 + math.exp(-x / t))
    return 1.0 / (1.0 - sig)


def _ref_pairwise(scores: np.ndarray, w_neg: np.ndarray | None, w_pos: np.ndarray | None) -> float:
    total, count = 0.0, 0
    q, g = scores.shape
    for i in range(q):
        for k in range(1, g):
            # two-way softmax cross-entropy with the positive as the target
            p_pos = math.exp(scores[i, 0]) / (math.exp(scores[i, 0]) + math.exp(scores[i, k]))
            term = -math.log(p_pos)
            wn = 1.0 if w_neg is None else w_neg[i, k - 1]
            wp = 1.0 if w_pos is None else w_pos[i]
            total += wp * wn * term
            count += 1
    return total / count


def _ref_listwise(scores: np.ndarray, w_neg: np.ndarray | None, w_pos: np.ndarray | None) -> float:
    total = 0.0
    q, g = scores.shape
    for i in range(q):
        z = math.exp(scores[i, 0])
        for k in range(1, g):
            wn = 1.0 if w_neg is None else w_neg[i, k - 1]
            z += wn * math.exp(scores[i, k])  # negative k counted w_k times
        wp = 1.0 if w_pos is None else w_pos[i]
        total += wp * -math.log(math.exp(scores[i, 0]) / z)
    return total / q


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 4, generator=gen, dtype=torch.float64) * 3
    other = torch.randn(5, 4, generator=gen, dtype=torch.float64) * 4
    return scores, other


@pytest.mark.parametrize("temperature", [1.0, 2.0, 10.0])
def test_coupled_weights_match_literal_formula(temperature):
    x = torch.tensor([-30.0, -5.0, -0.3, 0.0, 0.7, 4.0, 12.0])
    got = coupled_weights(x, temperature=temperature)
    want = np.array([_ref_weight(v, temperature) for v in x.tolist()])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert got.dtype == torch.float32
    assert (got >= 1).all()


def test_coupled_weights_stable_where_literal_form_overflows():
    x = torch.tensor([20.0, 40.0], dtype=torch.float32)
    literal = 1.0 / (1.0 - torch.sigmoid(x))
    assert torch.isinf(literal).any()  # why the identity form is used
    got = coupled_weights(x)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), [1 + math.exp(20.0), 1 + math.exp(40.0)], rtol=1e-5)
    assert coupled_weights(torch.tensor([200.0]), max_weight=50.0).item() == 50.0


def test_coupled_weights_bf16_input_and_bad_args():
    x = torch.tensor([0.5, -1.0], dtype=torch.bfloat16)
    got = coupled_weights(x, temperature=2.0)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), [_ref_weight(float(v), 2.0) for v in x.float().tolist()], rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        coupled_weights(x, temperature=0.0)
    with pytest.raises(ValueError, match="max_weight"):
        coupled_weights(x, max_weight=0.5)


def test_k1_pairwise_reproduces_authors_form_exactly():
    # The authors: logits [P, 2] over (d+, d-), CrossEntropyLoss(reduction="none") with target 0, times the
    # coupled weight from the other model's logit on d-, then the mean over the P triples.
    gen = torch.Generator().manual_seed(3)
    pos, neg, other_neg = (torch.randn(8, generator=gen) * 4 for _ in range(3))
    t = 10.0
    w = 1.0 / (1.0 - torch.sigmoid(other_neg / t))
    ce = torch.nn.functional.cross_entropy(
        torch.stack([pos, neg], 1), torch.zeros(8, dtype=torch.long), reduction="none"
    )
    authors = (w * ce).mean()
    ours = cet_loss(torch.stack([pos, neg], 1), coupled_weights(other_neg[:, None], temperature=t))
    torch.testing.assert_close(ours, authors, rtol=1e-6, atol=1e-7)
    # and against the explicit w * log(1 + exp(s- - s+))
    explicit = np.mean([wi * math.log1p(math.exp(n - p)) for wi, n, p in zip(w.tolist(), neg.tolist(), pos.tolist())])
    assert ours.item() == pytest.approx(explicit, rel=1e-6)


@pytest.mark.parametrize("form", ["pairwise", "listwise"])
@pytest.mark.parametrize("weight_on", ["negative", "positive", "both"])
@pytest.mark.parametrize("normalize", [False, True])
def test_loss_matches_reference(batch, form, weight_on, normalize):
    scores, other = batch
    w_all = coupled_weights(other, temperature=2.0).double()  # [Q, 1 + K]
    w_np = w_all.numpy()
    if weight_on == "negative":
        weights = w_all[:, 1:]
        w_neg, w_pos = w_np[:, 1:], None
    elif weight_on == "positive":
        weights = w_all
        w_neg, w_pos = None, w_np[:, 0]
    else:
        weights = w_all
        w_neg, w_pos = w_np[:, 1:], w_np[:, 0]
    if normalize:
        w_neg = None if w_neg is None else w_neg / w_neg.mean()
        w_pos = None if w_pos is None else w_pos / w_pos.mean()
    ref = (_ref_pairwise if form == "pairwise" else _ref_listwise)(scores.numpy(), w_neg, w_pos)
    got = cet_loss(scores, weights, form=form, weight_on=weight_on, normalize_weights=normalize)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def test_positive_accepts_single_column(batch):
    scores, other = batch
    w = coupled_weights(other)
    a = cet_loss(scores, w, weight_on="positive")
    b = cet_loss(scores, w[:, :1], weight_on="positive")
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("form", ["pairwise", "listwise"])
def test_unit_weights_are_plain_losses(batch, form):
    scores, _ = batch
    plain = cet_loss(scores, None, form=form)
    ones = cet_loss(scores, torch.ones(5, 3, dtype=torch.float64), form=form)
    torch.testing.assert_close(plain, ones)
    ref = (_ref_pairwise if form == "pairwise" else _ref_listwise)(scores.numpy(), None, None)
    assert plain.item() == pytest.approx(ref, rel=1e-6)


def test_normalisation_makes_loss_invariant_to_weight_scale(batch):
    scores, other = batch
    w = coupled_weights(other[:, 1:])
    a = cet_loss(scores, w, normalize_weights=True)
    b = cet_loss(scores, 7.5 * w, normalize_weights=True)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(cet_loss(scores, w), cet_loss(scores, 7.5 * w))


@pytest.mark.parametrize("form", ["pairwise", "listwise"])
def test_no_gradient_flows_into_weights(form):
    scores = torch.randn(4, 3, requires_grad=True)
    other = torch.randn(4, 3, requires_grad=True)
    raw = 1.0 + torch.exp(other[:, 1:] / 2.0)  # weights built WITH a graph, to prove cet_loss cuts it
    loss = cet_loss(scores, raw, form=form)
    loss.backward()
    assert other.grad is None
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    # the gradient equals the one obtained with constant weights
    s2 = scores.detach().clone().requires_grad_(True)
    cet_loss(s2, raw.detach(), form=form).backward()
    torch.testing.assert_close(scores.grad, s2.grad)
    assert coupled_weights(other).requires_grad is False


def test_pairwise_gradient_matches_analytic():
    # d/ds+ of w*softplus(s- - s+) = -w*sigmoid(s- - s+); d/ds- = +w*sigmoid(s- - s+); mean over Q*K terms.
    scores = torch.tensor([[1.0, 0.5, 2.0], [0.0, -1.0, 0.3]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[2.0, 1.5], [1.2, 3.0]], dtype=torch.float64)
    cet_loss(scores, w).backward()
    s = scores.detach().numpy()
    expected = np.zeros_like(s)
    for i in range(2):
        for k in (1, 2):
            sig = 1 / (1 + math.exp(-(s[i, k] - s[i, 0])))
            expected[i, k] += w[i, k - 1].item() * sig / 4
            expected[i, 0] -= w[i, k - 1].item() * sig / 4
    np.testing.assert_allclose(scores.grad.numpy(), expected, rtol=1e-10)


def test_bf16_scores_close_to_fp32(batch):
    scores, other = batch
    w = coupled_weights(other[:, 1:])
    a = cet_loss(scores.float(), w)
    b = cet_loss(scores.to(torch.bfloat16), w)
    assert b.dtype == torch.float32
    assert b.item() == pytest.approx(a.item(), rel=2e-2)


def test_bad_input_is_named():
    s = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"\[Q, K\]"):
        cet_loss(s, torch.ones(3, 4))
    with pytest.raises(ValueError, match="both"):
        cet_loss(s, torch.ones(3, 3), weight_on="both")
    with pytest.raises(ValueError, match="rows"):
        cet_loss(s, torch.ones(2, 3))
    with pytest.raises(ValueError, match="K >= 1"):
        cet_loss(torch.randn(3, 1), None)
    with pytest.raises(ValueError, match="form"):
        cet_loss(s, None, form="triplet")
    with pytest.raises(ValueError, match="weight_on"):
        cet_loss(s, None, weight_on="query")
    with pytest.raises(ValueError, match="finite"):
        cet_loss(s, torch.full((3, 3), float("inf")))
