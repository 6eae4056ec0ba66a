"""The recipe's CET step: where the coupled weights come from in each `weights_from` mode."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from rankface.losses.cet import cet_loss, coupled_weights
from rankface.training.cet_step import make_cet_step


class DropoutScorer(nn.Module):
    """Scores `[Q, D]` from features `[Q, D, 4]`, with heavy dropout so train and eval forwards differ."""

    def __init__(self, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        self.calls: list[tuple[bool, bool]] = []  # (training, grad enabled) of each forward

    def forward(self, features):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.net(features["x"]).squeeze(-1)


def _args(weights_from: str, weight_on: str = "negative") -> SimpleNamespace:
    return SimpleNamespace(
        loss="pairwise",
        cet_weights_from=weights_from,
        cet_temperature=2.0,
        cet_weight_on=weight_on,
        cet_normalize_weights=False,
    )


@pytest.fixture
def setup():
    features = {"x": torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(7))}
    return features, DropoutScorer(1), DropoutScorer(2)


def _reference_grads(rel, sel, features, seed, weights_from, weight_on="negative"):
    """Independent replay: weights from eval-mode no-grad forwards (or detached train logits), then the losses."""
    columns = slice(1, None) if weight_on == "negative" else slice(None)
    rel.eval(), sel.eval()
    with torch.no_grad():
        rel_eval, sel_eval = rel.net(features["x"]).squeeze(-1), sel.net(features["x"]).squeeze(-1)
    rel.train(), sel.train()
    torch.manual_seed(seed)
    rel_scores = rel.net(features["x"]).squeeze(-1)
    sel_scores = sel.net(features["x"]).squeeze(-1)
    rel_view, sel_view = (
        (rel_eval, sel_eval) if weights_from == "eval_forward" else (rel_scores.detach(), sel_scores.detach())
    )
    w_rel = 1.0 + torch.exp(sel_view[:, columns] / 2.0)
    w_sel = 1.0 + torch.exp(rel_view[:, columns] / 2.0)
    (cet_loss(rel_scores, w_rel, weight_on=weight_on) + cet_loss(sel_scores, w_sel, weight_on=weight_on)).backward()
    grads = [p.grad.clone() for p in [*rel.parameters(), *sel.parameters()]]
    for p in [*rel.parameters(), *sel.parameters()]:
        p.grad = None
    return grads, w_rel


@pytest.mark.numerics
@pytest.mark.parametrize("weights_from", ["eval_forward", "train_logits"])
@pytest.mark.parametrize("weight_on", ["negative", "both"])
def test_weights_come_from_the_documented_forward(setup, weights_from, weight_on):
    features, rel, sel = setup
    step = make_cet_step(_args(weights_from, weight_on), Accelerator(cpu=True))
    learners = [SimpleNamespace(model=rel), SimpleNamespace(model=sel)]
    rel.train(), sel.train()
    expected_grads, expected_w = _reference_grads(
        rel, sel, features, seed=11, weights_from=weights_from, weight_on=weight_on
    )
    rel.calls.clear(), sel.calls.clear()
    torch.manual_seed(11)
    logged = step(learners, features)
    got = [p.grad for p in [*rel.parameters(), *sel.parameters()]]
    for g, e in zip(got, expected_grads):
        torch.testing.assert_close(g, e)
    assert logged["weight_mean"] == pytest.approx(expected_w.mean().item(), rel=1e-5)
    if weights_from == "eval_forward":
        # 2 forwards per model: one eval-mode (dropout off) without grad, then the training forward
        assert rel.calls == [(False, False), (True, True)] and sel.calls == [(False, False), (True, True)]
    else:
        assert rel.calls == [(True, True)] and sel.calls == [(True, True)]
    assert rel.training and sel.training  # back in train mode after the step


def test_eval_forward_weights_differ_from_train_logit_weights(setup):
    features, rel, sel = setup
    # With dropout 0.5 the two modes must give different weights, otherwise the tests above could not tell them apart.
    rel.eval()
    with torch.no_grad():
        w_eval = coupled_weights(sel.eval().net(features["x"]).squeeze(-1)[:, 1:], 2.0)
    sel.train()
    torch.manual_seed(11)
    with torch.no_grad():
        w_train = coupled_weights(sel.net(features["x"]).squeeze(-1)[:, 1:], 2.0)
    assert not torch.allclose(w_eval, w_train)
