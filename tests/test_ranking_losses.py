"""Ranking losses against formulas written independently here (plain Python loops over floats)."""

from __future__ import annotations

import math

import pytest
import torch

from rankface.losses.ranking import ranking_loss

# Every test here checks a loss against an independently written formula: two code paths (tests/numerics.py).
pytestmark = pytest.mark.numerics


def reference(name: str, scores: list[list[float]], weights: list[list[float]] | None) -> float:
    total, count = 0.0, 0
    for q, row in enumerate(scores):
        pos, negs = row[0], row[1:]
        w = weights[q] if weights else [1.0] * len(negs)
        if name == "pairwise":
            for s, wk in zip(negs, w):
                total += wk * math.log(1 + math.exp(s - pos))
                count += 1
        elif name == "listwise":
            denom = math.exp(pos) + sum(wk * math.exp(s) for s, wk in zip(negs, w))
            total += -math.log(math.exp(pos) / denom)
            count += 1
        else:  # bce
            total += -math.log(1 / (1 + math.exp(-pos)))
            for s, wk in zip(negs, w):
                total += wk * -math.log(1 - 1 / (1 + math.exp(-s)))
            count += 1 + len(negs)
    return total / count


@pytest.mark.parametrize("name", ["pairwise", "listwise", "bce"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(name, weighted):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 4, generator=gen, dtype=torch.float64) * 3
    weights = (1 + torch.rand(5, 3, generator=gen, dtype=torch.float64) * 4) if weighted else None
    got = ranking_loss(name, scores, weights).item()
    want = reference(name, scores.tolist(), weights.tolist() if weighted else None)
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("name", ["pairwise", "listwise", "bce"])
def test_unit_weights_equal_no_weights_and_gradient_prefers_positive(name):
    scores = torch.zeros(3, 5, requires_grad=True)
    loss = ranking_loss(name, scores, torch.ones(3, 4))
    assert loss.item() == pytest.approx(ranking_loss(name, scores.detach()).item())
    loss.backward()
    assert (scores.grad[:, 0] < 0).all() and (scores.grad[:, 1:] > 0).all()


@pytest.mark.parametrize("name", ["pairwise", "listwise", "bce"])
def test_finite_for_extreme_scores(name):
    scores = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, 0.0]])
    assert torch.isfinite(ranking_loss(name, scores))


def test_bad_shapes_and_names_are_explained():
    with pytest.raises(ValueError, match="K >= 1"):
        ranking_loss("pairwise", torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"weights must be \[Q, K\]"):
        ranking_loss("pairwise", torch.zeros(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="unknown ranking loss"):
        ranking_loss("hinge", torch.zeros(3, 4))
