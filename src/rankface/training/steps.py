"""The optimisation loop both recipes share: steps, gradient accumulation, epochs, resume, checkpoints.

The reranker recipe (`training.loop`, one model or CET's two) and the face recipe (`training.face`) differ only in
what one micro-batch computes; everything that decides whether a resumed run is bit-identical to an uninterrupted
one (where in the epoch to restart, when the schedulers step, when checkpoints are written) lives here, once.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shlex
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, gather_object
from tqdm.auto import tqdm

from rankface.errors import UserError
from rankface.utils.io import check_finite_weights, replace_folder, write_json

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
        evaluate: called with `state` every `eval_steps` optimizer steps (not at the last one), under
            `isolated_rng()`: whatever it draws leaves the training's random numbers as they were.
        start_epoch: called with the epoch number before each epoch's batches (e.g. to reseed augmentation).

    The models are put in training mode first (dropout on) whether or not an evaluation ran before: a model loaded
    with `from_pretrained` starts in eval mode, so a run without evaluation used to train without dropout.

    Raises:
        FloatingPointError: a micro-batch's value (e.g. its loss) or a gradient norm is NaN or infinite; raised
            before the optimizer step, so the weights stay finite (the step, micro-batch and value are named).
    """
    progress = tqdm(total=total_steps, initial=state["step"], desc="Training",
                    disable=args.quiet or not accelerator.is_main_process)
    started = time.perf_counter()
    for learner in learners:
        learner.model.train()
    while state["step"] < total_steps:
        if start_epoch is not None:
            start_epoch(state["epoch"])
        loader.set_epoch(state["epoch"])
        batches = loader
        if state["batches_done_in_epoch"]:  # resumed mid-epoch: the same order, minus what was already seen
            batches = accelerator.skip_first_batches(loader, state["batches_done_in_epoch"])
        micro_batch = 0
        for batch in _without_drawing(batches):
            with accelerator.accumulate(*[learner.model for learner in learners]):
                values = micro_step(batch)
                micro_batch += 1
                # Checked on every micro-batch, before any optimizer step: with gradient accumulation a NaN in an
                # earlier micro-batch would otherwise reach the weights (and a checkpoint) unseen.
                _check_finite_values(values, state["step"] + 1, micro_batch)
                for learner in learners:
                    if accelerator.sync_gradients:
                        _clip_and_check_gradients(accelerator, learner, args.max_grad_norm, state["step"] + 1)
                    learner.optimizer.step()
                    learner.optimizer.zero_grad(set_to_none=True)
            state["batches_done_in_epoch"] += 1
            if not accelerator.sync_gradients:
                continue
            micro_batch = 0
            for learner in learners:
                learner.scheduler.step()
            state["step"] += 1
            entry = {"step": state["step"], **values, "lr": learners[0].scheduler.get_last_lr()[0]}
            state["log"].append(entry)
            progress.update(1)
            progress.set_postfix({k: f"{v:.4f}" for k, v in values.items() if isinstance(v, float)})
            if args.eval_steps and state["step"] % args.eval_steps == 0 and state["step"] < total_steps:
                with isolated_rng():
                    evaluate(state)
            if args.checkpoint_steps and state["step"] % args.checkpoint_steps == 0:
                save_checkpoint(accelerator, learners, output_dir, state, args.checkpoints_to_keep,
                                settings=run_settings(accelerator, args))
            if state["step"] >= total_steps:
                break
        else:
            state["epoch"] += 1
            state["batches_done_in_epoch"] = 0
    progress.close()
    state["train_seconds"] = time.perf_counter() - started


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block (an evaluation, starting a data iterator) without moving any RNG the training draws from.

    torch's CPU and CUDA generators, Python's `random` and NumPy's global state are restored on leaving: a resumed
    run restores them from its checkpoint, so anything that drew from them outside a training step made the
    resumed run diverge from the uninterrupted one, and an evaluation changed the training that followed it.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _without_drawing(batches: Iterable) -> Iterator:
    """Iterate `batches`, starting the iterator under `isolated_rng()`.

    A DataLoader draws its workers' base seed from torch's global generator when its iterator starts (accelerate's
    shard starts it, and fetches ahead, at the first `next`). An uninterrupted run starts it at the epoch's start, a
    resumed run mid-epoch, after restoring the RNG: the draw then fell between two steps and changed every later
    dropout mask. The batches' order comes from the sampler's own seeded generator and does not depend on it.
    """
    with isolated_rng():
        iterator = iter(batches)
        first = next(iterator, _END)
    if first is _END:
        return
    yield first
    yield from iterator


_END = object()


def _check_finite_values(values: dict, step: int, micro_batch: int) -> None:
    bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"step {step}: {bad} in micro-batch {micro_batch} (lower the learning rate?); "
                                 "the weights were not updated with it")


def _clip_and_check_gradients(accelerator: Accelerator, learner: Learner, max_grad_norm: float | None,
                              step: int) -> None:
    """Clip the gradients (when `max_grad_norm`) and refuse non-finite ones before the optimizer steps on them.

    With fp16 loss scaling an infinite gradient is expected now and then: the scaler skips that step itself.
    """
    if max_grad_norm:
        norm = accelerator.clip_grad_norm_(learner.model.parameters(), max_grad_norm)
    else:
        grads = [p.grad for p in learner.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else None
    if norm is None or accelerator.scaler is not None:
        return
    if not math.isfinite(float(norm)):
        raise FloatingPointError(f"step {step}: the gradient norm of {learner.name!r} is {float(norm)} "
                                 "(lower the learning rate?); the weights were not updated with it")


def process_group_timeout(seconds: int) -> InitProcessGroupKwargs:
    """The Accelerator handler that bounds every collective's wait (torch's default is 30 min for gloo).

    A process that stalls or dies mid-step otherwise holds the others silently; with this they stop with an error
    that names the collective they waited in.
    """
    return InitProcessGroupKwargs(timeout=timedelta(seconds=seconds))


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
    complete = [p for p in _checkpoints(output_dir) if (p / "trainer_state.json").is_file()]
    return complete[-1] if complete else None


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):])


def _checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoint folders under `output_dir`, oldest step first."""
    found = [p for p in (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
             if p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=_step_of)


PREVIOUS_RUN_MARK = ".previous-run-"


def prepare_output_dir(accelerator: Accelerator, output_dir: Path, resume: str | None, overwrite: bool) -> Path | None:
    """Refuse to start a new run in a folder that holds files of another run; call it before writing anything.

    A new run's checkpoints mixed with an old run's would be pruned and resumed wrongly: the old run's later steps
    sort after the new run's, so pruning deleted the new checkpoint and `resume latest` picked the old run's.
    A run may use a non-empty `output_dir` only when it resumes it (`resume` is "latest" or a checkpoint inside
    it) or when `overwrite` is set. Then the old run's folder is renamed aside, whole, to a sibling
    `<name>.previous-run-<time>`, and `output_dir` starts empty: an interrupted new run never leaves its files beside
    the old run's (the old `model/` would have loaded as if it were the new one). The old run is deleted by
    `discard_previous_runs` once the new run has written its first checkpoint (or its final model).

    Returns:
        Where the old run was moved (None: nothing was moved, or this is not the main process).

    Raises:
        UserError: `output_dir` is not empty and the run neither resumes it nor may overwrite it; or both
            `resume` and `overwrite` are given; or the folder to move aside holds the current directory.
    """
    if resume is not None and overwrite:
        raise UserError(f"resume_from_checkpoint={resume!r} continues the run in {output_dir}, overwrite_output_dir "
                        "starts a new one there: give one of them")
    in_use = output_dir.is_dir() and any(output_dir.iterdir())
    checkpoints = (output_dir / "checkpoints").resolve()
    resumes_it = resume == "latest" or (resume is not None and checkpoints in Path(resume).resolve().parents)
    if in_use and not resumes_it and not overwrite:
        raise UserError(
            f"output_dir {output_dir} already holds another run's files; a new run there would mix its checkpoints "
            "with the old ones. Resume it (--resume_from_checkpoint latest), start afresh with --overwrite_output_dir "
            "(moves the old run aside, deleted after the new run's first checkpoint), or choose another --output_dir"
        )
    moved = None
    if in_use and overwrite:
        folder = output_dir.resolve()  # a symlinked output_dir: move the real folder, the link keeps pointing here
        if folder == Path.cwd().resolve() or folder in Path.cwd().resolve().parents:
            raise UserError(f"overwrite_output_dir: output_dir {output_dir} holds the current directory, which cannot "
                            "be moved aside; run from elsewhere or choose another --output_dir")
        accelerator.wait_for_everyone()  # every process has seen the old folder before it moves
        if accelerator.is_main_process:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            moved = folder.with_name(f"{folder.name}{PREVIOUS_RUN_MARK}{stamp}")
            for n in range(1, 1000):  # two overwrites within a second
                if not moved.exists():
                    break
                moved = folder.with_name(f"{folder.name}{PREVIOUS_RUN_MARK}{stamp}-{n}")
            folder.rename(moved)  # one rename: the old run is whole, either here or there
            folder.mkdir()
            accelerator.print(f"overwrite: the previous run in {output_dir} was moved to {moved}; it is deleted once "
                              "this run writes its first checkpoint or its final model")
    accelerator.wait_for_everyone()  # every process has looked at the folder before the first one writes to it
    return moved


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a training run, with what the user needs to go on: the last checkpoint and how to resume.

    Still a `KeyboardInterrupt` (a notebook or a caller that stops on Ctrl-C still does); the entry points
    (`rankface train`, the recipes) print `describe(...)` as one line and exit with status 130.
    """

    def __init__(self, output_dir: Path, overwrite: bool):
        from accelerate import PartialState

        self.output_dir = output_dir
        self.checkpoint = find_checkpoint(output_dir, "latest")
        self.previous_runs = previous_runs(output_dir)
        self.overwrite = overwrite
        self.main_process = PartialState().is_main_process
        super().__init__(self.describe())

    def describe(self, command: str | None = None) -> str:
        if self.checkpoint is not None:
            where = f"the last checkpoint is {self.checkpoint} (step {_step_of(self.checkpoint)})"
        else:
            where = f"no checkpoint was written in {self.output_dir} yet, so resuming starts again from step 0"
        if self.previous_runs:
            where += (f"; the overwritten run is kept in {', '.join(map(str, self.previous_runs))} until this run's "
                      "first checkpoint")
        return f"training interrupted; {where}; resume with: {command or '--resume-from-checkpoint latest'}"

    def resume_command(self, program: list[str], argv: list[str]) -> str:
        """`program argv` as given, less any overwrite or resume flag, plus `--resume-from-checkpoint latest`
        (and `--overwrite_output_dir false` when the overwrite came from the config file)."""
        kept, skip_next, flagged = [], False, False
        for i, arg in enumerate(argv):
            if skip_next:
                skip_next = False
                continue
            name, has_value = arg.lstrip("-").replace("-", "_").split("=")[0], "=" in arg
            if arg.startswith("--") and name in ("overwrite", "overwrite_output_dir"):
                flagged = True
                following = argv[i + 1].lower() if i + 1 < len(argv) else ""
                skip_next = not has_value and following in ("true", "false", "yes", "no", "1", "0")
                continue
            if arg.startswith("--") and name == "resume_from_checkpoint":
                skip_next = not has_value
                continue
            kept.append(arg)
        kept += ["--resume-from-checkpoint", "latest"]
        if self.overwrite and not flagged:
            kept += ["--overwrite_output_dir", "false"]
        return shlex.join([*program, *kept])


def previous_runs(output_dir: Path) -> list[Path]:
    """The old runs that `--overwrite_output_dir` moved aside from `output_dir` and that are not deleted yet."""
    folder = output_dir.resolve()
    return sorted(p for p in folder.parent.glob(f"{folder.name}{PREVIOUS_RUN_MARK}*") if p.is_dir())


def discard_previous_runs(output_dir: Path) -> None:
    """Delete the old runs moved aside from `output_dir`: call it once the new run has a checkpoint or a final model
    there (main process only)."""
    for old in previous_runs(output_dir):
        shutil.rmtree(old, ignore_errors=True)


def run_settings(accelerator: Accelerator, args: Any) -> dict | None:
    """What a checkpoint records of its run's settings (a settings dataclass, plus the number of processes, which
    sets the batch per step as much as the batch size does); None for other `args`."""
    if not is_dataclass(args):
        return None
    return json.loads(json.dumps({**asdict(args), "num_processes": accelerator.num_processes}))


def check_resumed_settings(checkpoint: Path | None, output_dir: Path, settings: dict, may_change: frozenset[str],
                           say: Callable[[str], None] = print) -> None:
    """Refuse to resume `checkpoint` with settings that differ from its run's, except those in `may_change`.

    A resumed run restores the optimizer, the learning-rate schedule and the position in the data: a new learning
    rate, batch size or number of steps would be recorded but not followed (the schedule keeps the old one).
    Settings that only decide what is reported or saved, and when, may change; they are applied and said.
    The run's settings are read from the checkpoint (`training_args.json`, written with it), else from
    `output_dir/training_args.json` of the run it belongs to.

    Raises:
        UserError: a setting outside `may_change` differs; the message lists each as `name old -> new`.
    """
    if checkpoint is None:
        return
    recorded = checkpoint / "training_args.json"
    if not recorded.is_file() and checkpoint.resolve().parent == (output_dir / "checkpoints").resolve():
        recorded = output_dir / "training_args.json"
    if not recorded.is_file():
        say(f"resume: {checkpoint} does not record its run's settings; they cannot be compared with these")
        return
    old = json.loads(recorded.read_text(encoding="utf-8"))
    new = json.loads(json.dumps(settings))
    changed = {k: (old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]}
    refused = {k: v for k, v in changed.items() if k not in may_change}
    if refused:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise UserError(f"resume from {checkpoint}: {listed} differ from the run's settings ({recorded}); a resumed run "
                        "continues the old schedule and data order, so they cannot change. Resume with the old values, "
                        "or start a new run (--overwrite_output_dir, or another --output_dir)")
    applied = {k: v for k, v in changed.items() if k not in ("resume_from_checkpoint", "overwrite_output_dir")}
    if applied:
        say("resume: applying changed settings that do not change training: "
            + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in applied.items()))


FROZEN_MANIFEST = "frozen_weights.json"


def _digest(tensors: dict[str, torch.Tensor], keys: list[str]) -> str:
    digest = hashlib.sha256()
    for key in keys:
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _frozen_keys(model: torch.nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters(remove_duplicate=False) if not param.requires_grad]


def exclude_frozen_weights(accelerator: Accelerator, source: str) -> None:
    """Make `accelerator.save_state` leave out frozen parameters (call once, before the first checkpoint).

    A query-side run's frozen document tower (or LoRA's frozen base, or 'partial''s frozen layers) never changes,
    and a resumed run rebuilds it from `source` (the starting model) anyway: a checkpoint that copied it held a
    second full model beside the trainable one. Each checkpoint instead records, in `frozen_weights.json`, the
    frozen tensors' names, a SHA-256 of their values and where they come from; `load_checkpoint` checks that the
    rebuilt model has exactly those values before loading the rest.
    """

    def leave_out_frozen(models: list[torch.nn.Module], weights: list[dict], output_dir: str) -> None:
        entries = []
        for model, state_dict in zip(models, weights):
            # accelerate saves the unwrapped model's names (no DDP `module.` prefix)
            keys = [k for k in _frozen_keys(accelerator.unwrap_model(model)) if k in state_dict]
            entries.append({"keys": keys, "sha256": _digest(state_dict, keys)})
            for key in keys:
                del state_dict[key]
        if accelerator.is_main_process and any(entry["keys"] for entry in entries):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            write_json(Path(output_dir) / FROZEN_MANIFEST, {"source": source, "models": entries})

    accelerator.register_save_state_pre_hook(leave_out_frozen)


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, models: list[torch.nn.Module]) -> None:
    """`accelerator.load_state(checkpoint)`, for a checkpoint with or without its frozen weights.

    Without them (`frozen_weights.json`), the models' own frozen tensors (rebuilt from the starting model) must
    match the recorded fingerprint, and the file must hold every other weight: nothing is left to chance by loading
    non-strictly.

    Raises:
        UserError: the rebuilt frozen weights differ from the checkpoint's (the starting model changed), or the
            checkpoint lacks a trainable weight.
    """
    manifest_path = checkpoint / FROZEN_MANIFEST
    if not manifest_path.is_file():
        accelerator.load_state(str(checkpoint))
        return
    from safetensors import safe_open

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for i, (model, entry) in enumerate(zip(models, manifest["models"])):
        state_dict = accelerator.unwrap_model(model).state_dict()  # the names the checkpoint uses
        keys = entry["keys"]
        if any(k not in state_dict for k in keys) or _digest(state_dict, keys) != entry["sha256"]:
            raise UserError(f"{checkpoint}: the frozen weights of model {i} ({len(keys)} tensors) are not those it was "
                            f"trained with; they are rebuilt from {manifest['source']}, which must not change between "
                            "a run and its resume")
        saved_file = checkpoint / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
        if saved_file.is_file():
            with safe_open(str(saved_file), framework="pt") as handle:
                saved = set(handle.keys())
            lacking = sorted(set(state_dict) - saved - set(keys))
            if lacking:
                raise UserError(f"{saved_file}: lacks {len(lacking)} weight(s) of model {i}, e.g. {lacking[0]!r}")
    accelerator.load_state(str(checkpoint), strict=False)


def save_checkpoint(accelerator: Accelerator, learners: list[Learner], output_dir: Path, state: dict,
                    keep: int, settings: dict | None = None) -> None:
    """Save the full training state into a staging folder, then rename it: a checkpoint is whole or absent.

    Non-finite weights are refused (`FloatingPointError`) before anything is written. Pruning keeps the `keep`
    newest checkpoints up to this step and never deletes this one: a folder with a later step can only come from a
    run resumed at an earlier checkpoint, and is left alone.
    """
    for learner in learners:
        check_finite_weights(accelerator.unwrap_model(learner.model), f"checkpoint at step {state['step']}")
    folder = output_dir / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{state['step']:07d}"
    staging = folder / f".staging-{state['step']:07d}"
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        if settings is not None:  # what a resume compares its settings with (check_resumed_settings)
            write_json(staging / "training_args.json", settings)
        write_json(staging / "trainer_state.json", state)
        replace_folder(staging, final)
        discard_previous_runs(output_dir)  # the new run can now go on from here: an overwritten run is no longer needed
        earlier = [p for p in _checkpoints(output_dir) if _step_of(p) < state["step"]]
        for old in earlier[: max(0, len(earlier) - (keep - 1))] if keep >= 1 else []:  # keep < 1: keep all
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
