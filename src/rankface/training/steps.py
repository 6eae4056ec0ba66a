"""The optimisation loop both recipes share: steps, gradient accumulation, epochs, resume, checkpoints.

The reranker recipe (`training.loop`, one model or CET's two) and the face recipe (`training.face`) differ only in
what one micro-batch computes; everything that decides whether a resumed run is bit-identical to an uninterrupted
one (where in the epoch to restart, when the schedulers step, when checkpoints are written) lives here, once.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from rankface.utils.io import write_json

CHECKPOINT_PREFIX = "step-"


@dataclass
class Learner:
    """One trained model with its own optimizer and schedule (CET trains two)."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def run_steps(
    accelerator: Accelerator,
    learners: list[Learner],
    loader,
    state: dict,
    total_steps: int,
    micro_step: Callable[[Any], dict[str, float]],
    args: Any,
    output_dir: Path,
    evaluate: Callable[[dict], Any],
    start_epoch: Callable[[int], None] | None = None,
) -> None:
    """Train until `state["step"] == total_steps`, continuing from `state` (a fresh or a resumed one).

    Args:
        learners: the models stepped together; each is clipped, stepped and scheduled after every optimizer step.
        loader: the prepared DataLoader (its `set_epoch` reshuffles reproducibly).
        state: `{"step", "epoch", "batches_done_in_epoch", "log", ...}`, updated in place and saved in checkpoints.
        micro_step: forward and `accelerator.backward` of one micro-batch; returns the values to log.
        args: settings with `max_grad_norm`, `eval_steps`, `checkpoint_steps`, `checkpoints_to_keep`, `quiet`.
        evaluate: called with `state` every `eval_steps` optimizer steps (not at the last one).
        start_epoch: called with the epoch number before each epoch's batches (e.g. to reseed augmentation).

    Raises:
        FloatingPointError: a logged value is NaN or infinite (the step and the value are named).
    """
    progress = tqdm(total=total_steps, initial=state["step"], desc="Training",
                    disable=args.quiet or not accelerator.is_main_process)
    started = time.perf_counter()
    while state["step"] < total_steps:
        if start_epoch is not None:
            start_epoch(state["epoch"])
        loader.set_epoch(state["epoch"])
        batches = loader
        if state["batches_done_in_epoch"]:  # resumed mid-epoch: the same order, minus what was already seen
            batches = accelerator.skip_first_batches(loader, state["batches_done_in_epoch"])
        for batch in batches:
            with accelerator.accumulate(*[learner.model for learner in learners]):
                values = micro_step(batch)
                for learner in learners:
                    if accelerator.sync_gradients and args.max_grad_norm:
                        accelerator.clip_grad_norm_(learner.model.parameters(), args.max_grad_norm)
                    learner.optimizer.step()
                    learner.optimizer.zero_grad(set_to_none=True)
            state["batches_done_in_epoch"] += 1
            if not accelerator.sync_gradients:
                continue
            for learner in learners:
                learner.scheduler.step()
            state["step"] += 1
            entry = {"step": state["step"], **values, "lr": learners[0].scheduler.get_last_lr()[0]}
            bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
            if bad:
                raise FloatingPointError(f"step {state['step']}: {bad} (lower the learning rate?)")
            state["log"].append(entry)
            progress.update(1)
            progress.set_postfix({k: f"{v:.4f}" for k, v in values.items() if isinstance(v, float)})
            if args.eval_steps and state["step"] % args.eval_steps == 0 and state["step"] < total_steps:
                evaluate(state)
            if args.checkpoint_steps and state["step"] % args.checkpoint_steps == 0:
                save_checkpoint(accelerator, output_dir, state, args.checkpoints_to_keep)
            if state["step"] >= total_steps:
                break
        else:
            state["epoch"] += 1
            state["batches_done_in_epoch"] = 0
    progress.close()
    state["train_seconds"] = time.perf_counter() - started


def check_ranks_agree(accelerator: Accelerator, learners: list[Learner]) -> list[str]:
    """A fingerprint of every rank's weights; they must be equal, or the processes were not one DDP job.

    (`accelerate launch --multi_gpu` without a distributed backend runs unsynchronised copies without error.)
    """
    digest = hashlib.sha256()
    for learner in learners:
        for tensor in accelerator.unwrap_model(learner.model).state_dict().values():
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    fingerprints = gather_object([digest.hexdigest()[:16]])
    if len(set(fingerprints)) != 1:
        raise RuntimeError(f"ranks ended with different weights {fingerprints}: the processes were not synchronised")
    return fingerprints


# ---------------------------------------------------------------------------------------------- checkpoints
def find_checkpoint(output_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: `None` (start afresh), a checkpoint folder, or "latest" under `output_dir`."""
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(f"{path} is not a rankface checkpoint (no trainer_state.json)")
        return path
    found = sorted((output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    return complete[-1] if complete else None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, keep: int) -> None:
    """Save the full training state into a temporary folder, then rename it: a checkpoint is whole or absent."""
    folder = output_dir / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{state['step']:07d}"
    staging = folder / f".staging-{state['step']:07d}"
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        write_json(staging / "trainer_state.json", state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in sorted(folder.glob(f"{CHECKPOINT_PREFIX}*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
