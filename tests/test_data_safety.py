"""Nothing lost: runs never mix checkpoints, NaN never reaches the weights or the disk, folders are replaced without
a moment with no copy, and outputs get the permissions the umask asks for."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from test_training import settings, write_collection
from torch.utils.data import DataLoader

from rankface.training import train
from rankface.training.arguments import RerankerTrainingArguments
from rankface.training.steps import Learner, find_checkpoint, run_steps
from rankface.utils.io import atomic_write, save_folder_atomically, write_json


def _learner(accumulation: int = 1, checkpoint_steps: int | None = 2, keep: int = 2):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loader = DataLoader(torch.randn(8, 3), batch_size=2, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    args = SimpleNamespace(max_grad_norm=1.0, eval_steps=None, checkpoint_steps=checkpoint_steps,
                           checkpoints_to_keep=keep, quiet=True)
    state = {"step": 0, "epoch": 0, "batches_done_in_epoch": 0, "log": []}
    return accelerator, Learner("m", model, optimizer, scheduler), loader, args, state


def _fake_checkpoint(output_dir: Path, step: int) -> Path:
    folder = output_dir / "checkpoints" / f"step-{step:07d}"
    folder.mkdir(parents=True)
    write_json(folder / "trainer_state.json", {"step": step})
    return folder


# ---------------------------------------------------------------------------------------------- checkpoints
def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    """Checkpoints of later steps than this run's (an old run's, or a branch resumed earlier) are not this run's
    to prune: the checkpoint just saved must survive."""
    old = [_fake_checkpoint(tmp_path, 400), _fake_checkpoint(tmp_path, 500)]
    accelerator, learner, loader, args, state = _learner(checkpoint_steps=2, keep=2)

    def micro_step(batch):
        loss = learner.model(batch).pow(2).mean()
        accelerator.backward(loss)
        return {"loss": loss.item()}

    run_steps(accelerator, [learner], loader, state, 4, micro_step, args, tmp_path, evaluate=lambda st: None)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # keep=2: this run's step 2 and 4; the later-step folders are left alone.
    assert names == ["step-0000002", "step-0000004", "step-0000400", "step-0000500"]
    assert all(p.is_dir() for p in old)


def test_a_nan_in_an_earlier_micro_batch_never_reaches_the_weights(tmp_path):
    """With accumulation 2, micro-batch 1 of step 1 is NaN and micro-batch 2 finite: the old loop checked only the
    last micro-batch, stepped on the NaN gradient and wrote a checkpoint of NaN weights."""
    accelerator, learner, loader, args, state = _learner(accumulation=2, checkpoint_steps=1)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    calls = []

    def micro_step(batch):
        calls.append(1)
        loss = learner.model(batch).pow(2).mean()
        if len(calls) == 1:
            loss = loss * float("nan")
        accelerator.backward(loss)
        return {"loss": loss.item()}

    with pytest.raises(FloatingPointError, match=r"step 1: \{'loss': nan\} in micro-batch 1"):
        run_steps(accelerator, [learner], loader, state, 3, micro_step, args, tmp_path, evaluate=lambda st: None)
    for name, tensor in learner.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # the same tensors, untouched: exact equality is right
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_a_non_finite_gradient_with_a_finite_loss_is_refused_before_the_step(tmp_path):
    accelerator, learner, loader, args, state = _learner(checkpoint_steps=None)
    args.max_grad_norm = 0.0  # no clipping: the check must not depend on it

    def micro_step(batch):
        # sqrt'(0) is infinite: the loss is finite (0), its gradient is not.
        loss = torch.sqrt(learner.model(batch).sum() * 0.0)
        accelerator.backward(loss)
        return {"loss": loss.item()}

    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"step 1: the gradient norm of 'm' is"):
        run_steps(accelerator, [learner], loader, state, 2, micro_step, args, tmp_path, evaluate=lambda st: None)
    assert all(torch.equal(t, before[n]) for n, t in learner.model.state_dict().items())


class _Saveable(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((2,), value))

    def save_pretrained(self, folder):
        torch.save(self.state_dict(), Path(folder) / "weights.pt")


def test_non_finite_weights_are_never_saved(tmp_path):
    save_folder_atomically(_Saveable(1.0), tmp_path / "model")
    with pytest.raises(FloatingPointError, match="weight 'weight' is not finite"):
        save_folder_atomically(_Saveable(float("nan")), tmp_path / "model")
    assert torch.load(tmp_path / "model" / "weights.pt")["weight"].tolist() == [1.0, 1.0]  # the good copy stays


# ---------------------------------------------------------------------------------------------- replacing folders
def test_a_failed_folder_replacement_keeps_the_old_copy(tmp_path, monkeypatch):
    """The moment between removing the old folder and renaming the new one into place: if the rename fails (disk
    full, a killed process), the old copy must still be there. Deleting first lost both."""
    target = tmp_path / "model"
    save_folder_atomically(_Saveable(1.0), target)
    real_replace = os.replace

    def failing_replace(src, dst):
        staging = Path(src).name.startswith(".model.") and ".previous-" not in Path(src).name
        if staging and Path(dst) == target:  # the new folder's rename into place
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        save_folder_atomically(_Saveable(2.0), target)
    monkeypatch.undo()
    assert torch.load(target / "weights.pt")["weight"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging or set-aside folder left behind


def test_replacing_a_folder_puts_the_new_one_in_place(tmp_path):
    save_folder_atomically(_Saveable(1.0), tmp_path / "model")
    save_folder_atomically(_Saveable(2.0), tmp_path / "model")
    assert torch.load(tmp_path / "model" / "weights.pt")["weight"].tolist() == [2.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# ---------------------------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "new.txt") as handle:
            handle.write("x")
        save_folder_atomically(_Saveable(1.0), tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.txt"
    path.write_text("old")
    path.chmod(0o640)
    with atomic_write(path) as handle:
        handle.write("new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "new"


# ---------------------------------------------------------------------------------------------- output_dir
@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


def test_a_new_run_in_a_used_output_dir_is_refused_unless_resumed_or_overwritten(collection, tiny_bert_dir, tmp_path):
    """Old run: checkpoints at steps 4 and 8. A new 2-step run there used to write step 2, prune it at once (it
    sorted before the old run's) and leave `resume latest` pointing at the old run's step 8."""
    out = tmp_path / "out"
    base = settings(collection, tiny_bert_dir, out, checkpoints_to_keep=2, encoder="bi")
    train(RerankerTrainingArguments(**base | {"max_steps": 8, "checkpoint_steps": 4}))
    old_args = (out / "training_args.json").read_text()

    with pytest.raises(ValueError, match=r"already holds another run's files.*--overwrite_output_dir"):
        train(RerankerTrainingArguments(**base | {"max_steps": 2, "checkpoint_steps": 2}))
    assert (out / "training_args.json").read_text() == old_args  # refused before writing anything
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000004", "step-0000008"]

    train(RerankerTrainingArguments(**base | {"max_steps": 2, "checkpoint_steps": 2, "overwrite_output_dir": True}))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]
    assert find_checkpoint(out, "latest").name == "step-0000002"
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 2
    assert load_file(out / "model" / "model.safetensors")  # the new run's model is in place

    # Resuming the run in its own folder is allowed; resuming and overwriting at once is a contradiction.
    train(RerankerTrainingArguments(**base | {"max_steps": 2, "resume_from_checkpoint": "latest"}))
    with pytest.raises(ValueError, match="give one of them"):
        train(RerankerTrainingArguments(**base | {"resume_from_checkpoint": "latest", "overwrite_output_dir": True}))
