"""A training run as a user lives it: resumed with evaluation on, overwritten, resumed with other settings,
interrupted with Ctrl-C; what its checkpoints and its final folder hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_training import settings, weights, write_collection, write_config

from rankface.training import train
from rankface.training.arguments import RerankerTrainingArguments


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


def run(collection, tiny_bert_dir, output: Path, **overrides) -> list[dict]:
    """Train with the test settings (and `overrides`); returns the run's log (losses and evaluations by step)."""
    train(RerankerTrainingArguments(**settings(collection, tiny_bert_dir, output, **overrides)))
    return json.loads((output / "trainer_state.json").read_text())["log"]


def losses(log: list[dict]) -> list[tuple[int, float]]:
    return [(entry["step"], entry["loss"]) for entry in log if "loss" in entry]


# ---------------------------------------------------------------------------------------------- resume, RNG
def test_resume_with_evaluation_on_is_bit_identical_to_the_uninterrupted_run(collection, tiny_bert_dir, tmp_path):
    """16 train queries in batches of 4: 4 steps an epoch. Evaluation at steps 0, 2, 4, checkpoints at 3 and 6: the
    resumed run restarts mid-epoch, after an evaluation, and crosses into the next epoch. The old run split at
    step 4: the resumed data iterator drew from the restored RNG, and the model trained without dropout until its
    first evaluation switched it on."""
    values = {"eval_split": "dev", "eval_steps": 2, "checkpoint_steps": 3, "checkpoints_to_keep": 5}
    out = tmp_path / "out"
    uninterrupted = run(collection, tiny_bert_dir, out, **values)
    final = weights(out / "model")
    # The run died after step 3: only its first checkpoint is there.
    for path in (out / "checkpoints" / "step-0000006", out / "model", out / "trainer_state.json"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    resumed = run(collection, tiny_bert_dir, out, **values, resume_from_checkpoint="latest")
    # One code path, the same kernels on the same inputs: exact equality is right (tests/numerics.py). A dropout
    # mask drawn from another RNG state moves a loss by ~1e-3, a step taken twice or skipped by more.
    assert resumed == uninterrupted  # every step's loss and every evaluation's metrics
    assert [e["step"] for e in resumed if "eval" in e] == [0, 2, 4, 6]
    for name, tensor in final.items():
        assert torch.equal(weights(out / "model")[name], tensor), name


def test_the_step_0_evaluation_does_not_change_training(collection, tiny_bert_dir, tmp_path):
    with_evaluation = run(collection, tiny_bert_dir, tmp_path / "a", eval_split="dev", eval_steps=100, max_steps=2)
    without = run(collection, tiny_bert_dir, tmp_path / "b", eval_split=None, max_steps=2)
    assert [e["step"] for e in with_evaluation if "eval" in e] == [0, 2]  # step 0 and the final one
    assert losses(with_evaluation) == losses(without)  # the same steps on the same weights: exact equality


# ---------------------------------------------------------------------------------------------- interrupts
def interrupt_when(command: list[str], ready: Callable[[], bool]) -> subprocess.CompletedProcess:
    """Run `command`, send it SIGINT (Ctrl-C) once `ready()` is true, and return how it ended."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    # A job started in the background by a non-interactive shell (nohup, `cmd &`, some CI runners) inherits SIGINT
    # ignored, and Python then never turns it into KeyboardInterrupt: give the child the default disposition, as a
    # terminal's foreground job has, or the Ctrl-C below is silently dropped and the run goes on.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509 - sets one handler, no locks
    try:
        waited = 0.0
        while not ready():
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"ended (exit {process.returncode}) before it could be interrupted:\n{out[-2000:]}{err[-3000:]}")
            assert waited < 600, "never got ready to be interrupted"  # a hung run, not a timing check
            time.sleep(0.1)
            waited += 0.1
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def new_run_started(out: Path) -> bool:
    """The new run (learning rate 1e-4) has written its settings and prepared its data: it is under way."""
    args = out / "training_args.json"
    return (out / "training_groups_report.json").is_file() and json.loads(args.read_text())["learning_rate"] == 1e-4


def train_command(config: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "rankface", "train", "--config", str(config), *flags]


# ---------------------------------------------------------------------------------------------- overwrite
def test_an_interrupted_overwrite_never_mixes_two_runs_in_one_folder(collection, tiny_bert_dir, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "out"
    run(collection, tiny_bert_dir, out, max_steps=2, checkpoint_steps=1)  # the old run: model, state, checkpoints
    old_model = weights(out / "model")
    # The new run: long, no checkpoint yet when Ctrl-C comes (it has prepared its data: it is under way).
    config = write_config(tmp_path / "new.yaml", settings(collection, tiny_bert_dir, out, max_steps=100_000,
                                                          learning_rate=1e-4))
    aside = lambda: sorted(tmp_path.glob("out.previous-run-*"))
    interrupt_when(train_command(config, "--overwrite"), ready=lambda: new_run_started(out))
    # The folder holds the new run's files only; the old run is whole beside it, not yet deleted.
    assert sorted(p.name for p in out.iterdir()) == ["training_args.json", "training_groups_report.json"]
    assert json.loads((out / "training_args.json").read_text())["learning_rate"] == 1e-4
    [previous] = aside()
    assert {"model", "trainer_state.json", "checkpoints"} <= {p.name for p in previous.iterdir()}
    assert sorted(p.name for p in (previous / "checkpoints").iterdir()) == ["step-0000001", "step-0000002"]
    assert all(torch.equal(weights(previous / "model")[n], t) for n, t in old_model.items())

    # Started afresh in the same folder: the runs moved aside go once the new run's first checkpoint is written.
    seen_at_first_checkpoint = []
    from rankface.training import steps

    real_save = steps.save_checkpoint

    def save_and_look(*args, **kwargs):
        seen_at_first_checkpoint.append(len(aside()))
        real_save(*args, **kwargs)
        seen_at_first_checkpoint.append(len(aside()))

    monkeypatch.setattr(steps, "save_checkpoint", save_and_look)  # looks before and after, saves as always
    run(collection, tiny_bert_dir, out, max_steps=2, checkpoint_steps=1, overwrite_output_dir=True)
    assert seen_at_first_checkpoint[:2] == [2, 0]  # both old runs (the first and the interrupted one) kept until then
    assert aside() == [] and sorted(p.name for p in tmp_path.iterdir()) == ["new.yaml", "out"]
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 2


def test_an_overwrite_without_checkpoints_deletes_the_old_run_after_the_final_model(collection, tiny_bert_dir,
                                                                                     tmp_path):
    out = tmp_path / "out"
    run(collection, tiny_bert_dir, out, max_steps=1, checkpoint_steps=1)
    run(collection, tiny_bert_dir, out, max_steps=2, overwrite_output_dir=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (out / "checkpoints").exists()  # the old run's checkpoints went with it
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 2


# ---------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(collection, tiny_bert_dir, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", settings(collection, tiny_bert_dir, out, max_steps=100_000,
                                                        checkpoint_steps=2))
    # Ready once any checkpoint is whole: a fast machine takes many steps between two polls, and the run keeps only
    # its newest checkpoints, so waiting for one named step can wait forever (step 2 was pruned before it was seen).
    done = interrupt_when(train_command(config, "--quiet"),
                          ready=lambda: any((out / "checkpoints").glob("step-*/trainer_state.json")))
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    latest = max((out / "checkpoints").glob("step-*"))
    assert line.startswith("rankface train: training interrupted; the last checkpoint is ") and str(latest) in line
    command = line.split("resume with: ")[1]
    assert command == f"rankface train --config {config} --quiet --resume-from-checkpoint latest"


def test_the_resume_command_drops_overwrite_and_earlier_resume_flags(tmp_path):
    from rankface.training.steps import TrainingInterrupted

    stop = TrainingInterrupted(tmp_path, overwrite=True)
    argv = ["--config", "c.yaml", "--overwrite", "--resume_from_checkpoint", "x", "--lr=1", "--overwrite_output_dir",
            "true", "--max-steps", "5"]
    assert stop.resume_command(["rankface", "train"], argv) == (
        "rankface train --config c.yaml --lr=1 --max-steps 5 --resume-from-checkpoint latest")
    # The overwrite came from the config file: the command must switch it off, or the resume is refused.
    assert stop.resume_command(["rankface", "train"], ["--config", "my dir/c.yaml"]) == (
        "rankface train --config 'my dir/c.yaml' --resume-from-checkpoint latest --overwrite_output_dir false")
    assert "no checkpoint was written" in stop.describe()


# ---------------------------------------------------------------------------------------------- changed settings
def test_resume_refuses_settings_that_break_the_schedule_and_applies_the_others(collection, tiny_bert_dir, tmp_path,
                                                                                capsys):
    from rankface.errors import UserError

    out = tmp_path / "out"
    values = {"checkpoint_steps": 3, "checkpoints_to_keep": 5}
    uninterrupted = run(collection, tiny_bert_dir, out, **values)
    for path in (out / "checkpoints" / "step-0000006", out / "model", out / "trainer_state.json"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    assert json.loads((out / "checkpoints" / "step-0000003" / "training_args.json").read_text())["learning_rate"] == 1e-3
    recorded = (out / "training_args.json").read_text()
    with pytest.raises(UserError) as refused:
        run(collection, tiny_bert_dir, out, **values, resume_from_checkpoint="latest", learning_rate=0.01,
            batch_size=8, max_steps=8)
    message = str(refused.value)
    for change in ("learning_rate 0.001 -> 0.01", "batch_size 4 -> 8", "max_steps 6 -> 8"):
        assert change in message
    assert (out / "training_args.json").read_text() == recorded  # refused before anything was written

    # Reporting and saving settings may change: applied and said, and the training is the same as before.
    capsys.readouterr()
    resumed = run(collection, tiny_bert_dir, out, checkpoint_steps=2, checkpoints_to_keep=5,
                  resume_from_checkpoint="latest")
    assert "applying changed settings that do not change training: checkpoint_steps 3 -> 2" in capsys.readouterr().out
    assert losses(resumed) == losses(uninterrupted)
    assert json.loads((out / "training_args.json").read_text())["checkpoint_steps"] == 2


# ---------------------------------------------------------------------------------------------- model card
@pytest.mark.parametrize(("encoder", "evaluated"), [("cross", True), ("bi", False)])
def test_a_trained_model_folder_has_its_model_card(collection, tiny_bert_dir, tmp_path, encoder, evaluated):
    from huggingface_hub import ModelCard

    out = tmp_path / "out"
    run(collection, tiny_bert_dir, out, encoder=encoder, max_steps=2, eval_split="dev" if evaluated else None)
    card = ModelCard.load(out / "model" / "README.md")  # parses the YAML front matter (and the model-index)
    assert card.data.library_name == "rankface" and card.data.datasets == [collection.name]
    assert card.data.base_model == tiny_bert_dir.name  # a local folder is named, its machine's path is not written
    assert ("cross-encoder" if encoder == "cross" else "bi-encoder") in card.data.tags
    assert "16 training groups" in card.text and "`steps`: 2" in card.text
    if evaluated:
        final = json.loads((out / "trainer_state.json").read_text())["log"][-1]["eval"]
        assert {(r.metric_name, r.metric_value, r.dataset_split) for r in card.data.eval_results} == {
            (k, round(v, 4), "dev") for k, v in final.items()}
    else:
        assert card.data.eval_results is None and "Not evaluated" in card.text
    assert ("CrossEncoder.from_pretrained" if encoder == "cross" else "BiEncoder.from_pretrained") in card.text


# ---------------------------------------------------------------------------------------------- disk
def test_a_query_side_checkpoint_holds_the_trainable_tower_only(collection, tiny_bert_dir, tmp_path):
    import shutil

    from safetensors import safe_open

    from rankface.errors import UserError

    start = tmp_path / "start"  # a copy of the starting model, to change it between the run and its resume
    shutil.copytree(tiny_bert_dir, start)
    out = tmp_path / "out"
    values = {"encoder": "bi", "training_mode": "query_side", "checkpoint_steps": 3, "checkpoints_to_keep": 5,
              "model_name_or_path": str(start)}
    run(collection, tiny_bert_dir, out, **values)
    checkpoint = out / "checkpoints" / "step-0000003"
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        saved = set(handle.keys())
    assert saved and not any(k.startswith("doc_model.") for k in saved)  # the frozen document tower is not copied
    manifest = json.loads((checkpoint / "frozen_weights.json").read_text())
    assert manifest["source"] == str(start) and all(k.startswith("doc_model.") for k in manifest["models"][0]["keys"])
    # Every weight of the tower is named (the pooler, unused by mean pooling, is not part of it).
    tower = {f"doc_model.{k}" for k in weights(tiny_bert_dir) if not k.startswith("pooler.")}
    assert set(manifest["models"][0]["keys"]) == tower
    # The final model is still complete: both towers.
    assert (out / "model" / "document_0_Transformer" / "model.safetensors").is_file()

    # Resuming rebuilds the frozen tower from the starting model and checks it: a changed one is refused.
    for path in (out / "checkpoints" / "step-0000006", out / "model", out / "trainer_state.json"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    from safetensors.torch import save_file

    changed = weights(start)
    changed["embeddings.word_embeddings.weight"][5] += 0.1
    save_file(changed, str(start / "model.safetensors"))
    with pytest.raises(UserError, match="frozen weights of model 0 .* are not those it was trained with"):
        run(collection, tiny_bert_dir, out, **values, resume_from_checkpoint="latest")
