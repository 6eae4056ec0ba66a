"""The shared optimisation loop: step counting with accumulation, epochs, checkpoints, a clear error on NaN."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from rankface.training.steps import Learner, find_checkpoint, run_steps


def _setup(tmp_path, accumulation: int = 1):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    data = torch.randn(10, 3)
    loader = DataLoader(data, batch_size=2, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    args = SimpleNamespace(max_grad_norm=1.0, eval_steps=None, checkpoint_steps=2, checkpoints_to_keep=1, quiet=True)
    state = {"step": 0, "epoch": 0, "batches_done_in_epoch": 0, "log": []}
    return accelerator, Learner("m", model, optimizer, scheduler), loader, args, state


def test_counts_optimizer_steps_across_epochs_and_checkpoints(tmp_path):
    accelerator, learner, loader, args, state = _setup(tmp_path, accumulation=2)
    seen = []

    def micro_step(batch):
        loss = learner.model(batch).pow(2).mean()
        accelerator.backward(loss)
        return {"loss": loss.item()}

    run_steps(accelerator, [learner], loader, state, 4, micro_step, args, tmp_path, evaluate=lambda st: None,
              start_epoch=seen.append)
    # 5 micro-batches per epoch, 2 per optimizer step: accelerate syncs at the epoch's end too, so 3 steps per
    # epoch; step 4 is the first of the second epoch.
    assert state["step"] == 4 and [e["step"] for e in state["log"]] == [1, 2, 3, 4]
    assert seen == [0, 1] and state["epoch"] == 1
    assert find_checkpoint(tmp_path, "latest").name == "step-0000004"


def test_nan_loss_names_the_step(tmp_path):
    accelerator, learner, loader, args, state = _setup(tmp_path)

    def micro_step(batch):
        loss = learner.model(batch).sum() * float("nan")
        accelerator.backward(loss)
        return {"loss": loss.item()}

    with pytest.raises(FloatingPointError, match=r"step 1: \{'loss': nan\}"):
        run_steps(accelerator, [learner], loader, state, 3, micro_step, args, tmp_path, evaluate=lambda st: None)
