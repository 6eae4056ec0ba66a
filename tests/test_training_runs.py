"""A training run as a user lives it: resumed with evaluation on, overwritten, resumed with other settings,
interrupted with Ctrl-C; what its checkpoints and its final folder hold."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from test_training import settings, weights, write_collection

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
