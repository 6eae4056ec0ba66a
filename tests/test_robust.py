"""Robust fine-tuning (training/robust.py): WiSE-FT weight interpolation and the L2-SP penalty, on their own and in
query-side training runs of a tiny random BERT, resumed or not."""

from __future__ import annotations

import subprocess

import pytest
import torch
from safetensors.torch import load_file
from test_training import settings, write_collection, write_config

from rankface.training import parse_training_args, train
from rankface.training.robust import L2SP, interpolate_folders, interpolate_weights

QUERY_TOWER = "query_0_Transformer/model.safetensors"
DOCUMENT_TOWER = "document_0_Transformer/model.safetensors"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


def query_side(collection, tiny_bert_dir, out, **overrides):
    values = settings(collection, tiny_bert_dir, out, encoder="bi", training_mode="query_side", **overrides)
    config = write_config(out.parent / f"{out.name}.yaml", values)
    train(parse_training_args(["--config", str(config)]))
    return out / "model"


def tower(folder, which=QUERY_TOWER) -> dict[str, torch.Tensor]:
    return load_file(str(folder / which))


# ---------------------------------------------------------------------------------------------- WiSE-FT
def test_interpolation_is_exact_at_both_ends_and_linear_between():
    g = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(7, 5, generator=g), "b": torch.randn(5, generator=g), "ids": torch.arange(4)}
    tuned = {"w": torch.randn(7, 5, generator=g), "b": torch.randn(5, generator=g), "ids": torch.arange(4)}
    at0, at1, mid = (interpolate_weights(start, tuned, a) for a in (0.0, 1.0, 0.3))
    for name, begin in start.items():
        assert torch.equal(at0[name], begin) and torch.equal(at1[name], tuned[name]), name
        expected = begin * 0.7 + tuned[name] * 0.3 if begin.is_floating_point() else begin
        torch.testing.assert_close(mid[name], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate_weights(start, tuned, 1.5)
    with pytest.raises(ValueError, match="only in the start"):
        interpolate_weights(start, {k: v for k, v in tuned.items() if k != "b"}, 0.5)
    with pytest.raises(ValueError, match="non-float buffer 'ids'"):
        interpolate_weights(start, tuned | {"ids": torch.arange(1, 5)}, 0.5)


def test_weights_equal_in_both_models_keep_their_bits():
    # MiniLM holds a -0.0 weight; lerp's start + 0.25 * 0 would make it +0.0 and change the frozen document tower's
    # fingerprint (its corpus cache would be encoded again).
    weights = torch.tensor([-0.0, 0.0, 1.5, -2.0])
    tuned = weights.clone()
    tuned[2] = 3.0
    for alpha in (0.25, 0.5, 0.75):
        mixed = interpolate_weights({"w": weights}, {"w": tuned}, alpha)["w"]
        assert torch.equal(torch.signbit(mixed[:2]), torch.tensor([True, False])), alpha
        assert mixed[2] == pytest.approx(1.5 + alpha * 1.5) and mixed[3] == -2.0


def test_interpolating_a_query_side_model_reproduces_the_start_and_the_fine_tuned_model(
        collection, tiny_bert_dir, tmp_path, capsys):
    from rankface.cli import main

    tuned = query_side(collection, tiny_bert_dir, tmp_path / "run", max_steps=4)
    start = load_file(str(tiny_bert_dir / "model.safetensors"))  # also holds the unused pooler (not loaded)
    trained = tower(tuned)
    assert any(not torch.equal(trained[n], start[n]) for n in trained), "training did not move the query tower"
    for alpha in (0, 0.5, 1):
        code = main(["interpolate", "--start", str(tiny_bert_dir), "--finetuned", str(tuned), "--alpha", str(alpha),
                     "--output", str(tmp_path / f"alpha-{alpha}")])
        assert code == 0
    assert "wrote" in capsys.readouterr().out
    at0, at1, mid = (tower(tmp_path / f"alpha-{a}") for a in (0, 1, 0.5))
    assert set(at0) == set(at1) == set(mid) == set(trained)
    for name in trained:
        assert torch.equal(at0[name], start[name]), name
        assert torch.equal(at1[name], trained[name]), name
        torch.testing.assert_close(mid[name], (start[name] + trained[name]) / 2, rtol=0, atol=1e-6)
    # The frozen document tower is the start's at every alpha, so the corpus cache stays valid.
    for name, value in tower(tmp_path / "alpha-0.5", DOCUMENT_TOWER).items():
        assert torch.equal(value, start[name]), name
    # A bad alpha is one line naming the setting, from the command.
    assert main(["interpolate", "--start", str(tiny_bert_dir), "--finetuned", str(tuned), "--alpha", "2",
                 "--output", str(tmp_path / "bad")]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_wise_ft_setting_saves_the_interpolated_model(collection, tiny_bert_dir, tmp_path):
    plain = tower(query_side(collection, tiny_bert_dir, tmp_path / "plain", max_steps=4))
    mixed = tower(query_side(collection, tiny_bert_dir, tmp_path / "wise", max_steps=4, wise_ft_alpha=0.25))
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    for name, value in ((n, start[n]) for n in plain):
        # Two runs with one seed train the same weights; the saved model is then 3/4 start + 1/4 trained.
        torch.testing.assert_close(mixed[name], 0.75 * value + 0.25 * plain[name], rtol=0, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="alpha"):
        parse_training_args(["--config", str(tmp_path / "plain.yaml"), "--wise_ft_alpha", "-0.1"])


# ---------------------------------------------------------------------------------------------- L2-SP
def test_l2sp_penalty_and_its_gradient_match_the_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[1].bias.requires_grad_(False)  # frozen weights are not penalised
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    penalty = L2SP(model, weight=0.7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    # Independently: the sum of squared differences over the trainable tensors, and its autograd gradient.
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    expected = 0.7 * sum(((p - start[n]) ** 2).sum() for n, p in trainable)
    assert penalty.value() == pytest.approx(expected.item(), rel=1e-6)
    expected.backward()
    autograd = {n: p.grad.clone() for n, p in trainable}
    model.zero_grad(set_to_none=True)
    penalty.add_gradient()
    for n, p in trainable:
        torch.testing.assert_close(p.grad, autograd[n], rtol=1e-6, atol=1e-7, msg=n)
    assert model[1].bias.grad is None
    with pytest.raises(ValueError, match="l2sp_weight must be >= 0"):
        L2SP(model, weight=-1.0)


def test_a_huge_l2sp_weight_keeps_query_side_training_at_the_start(collection, tiny_bert_dir, tmp_path):
    lr, steps = 1e-3, 20
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    free = tower(query_side(collection, tiny_bert_dir, tmp_path / "free", learning_rate=lr, max_steps=steps))
    held = tower(query_side(collection, tiny_bert_dir, tmp_path / "held", learning_rate=lr, max_steps=steps,
                            l2sp_weight=1e6))
    drift = max(float((value - start[name]).abs().max()) for name, value in free.items())
    pinned = max(float((value - start[name]).abs().max()) for name, value in held.items())
    # Adam moves a weight by about the learning rate per step whatever the size of its gradient (at most
    # lr * (1 - beta1) / sqrt(1 - beta2) ~ 3.2 lr), so no penalty pins it closer than that: with a huge weight
    # every step points back to the start, and every weight stays within 3 * lr of it (measured: 1.6 lr).
    # Without the penalty the weights drift further (measured: 9 lr after 20 steps).
    assert pinned <= 3 * lr, pinned
    assert drift > 5 * lr, drift


@pytest.mark.numerics
def test_resumed_runs_with_l2sp_and_wise_ft_reproduce_the_uninterrupted_run(collection, tiny_bert_dir, tmp_path):
    # The penalty's anchor must be the starting weights, not the checkpoint's: a resumed run anchored at step 3
    # would pull towards other weights and end elsewhere.
    extra = {"l2sp_weight": 10.0, "wise_ft_alpha": 0.5, "checkpoint_steps": 3, "checkpoints_to_keep": 5}
    out = tmp_path / "run"
    uninterrupted = tower(query_side(collection, tiny_bert_dir, out, **extra))
    for path in (out / "checkpoints" / "step-0000006", out / "model"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    train(parse_training_args(["--config", str(tmp_path / "run.yaml"), "--resume_from_checkpoint", "latest"]))
    resumed = tower(out / "model")
    for name, value in uninterrupted.items():  # tolerance: see test_training's resume test
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


def test_interpolate_folders_refuses_models_of_other_shapes(tiny_bert_dir, tmp_path):
    from tiny_models import make_tiny_bert
    from transformers import BertConfig, BertModel

    other = tmp_path / "other"
    make_tiny_bert(other)
    config = BertConfig.from_pretrained(other)
    config.num_hidden_layers = 1
    BertModel(config).save_pretrained(other)
    with pytest.raises(ValueError, match="cannot interpolate"):
        interpolate_folders(tiny_bert_dir, other, 0.5, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("encoder", "overrides"), [
    ("bi", {"training_mode": "full"}),
    ("bi", {"training_mode": "full", "lora_rank": 2}),
    ("cross", {"training_mode": "partial", "frozen_layers": 1}),
    ("bi", {"training_mode": "query_side", "method": "cet", "l2sp_weight": 1.0}),
], ids=["full", "lora", "cross-partial", "query-side-cet"])
def test_wise_ft_at_zero_saves_the_start_in_every_mode(collection, tiny_bert_dir, tmp_path, encoder, overrides):
    values = settings(collection, tiny_bert_dir, tmp_path / "out", encoder=encoder, max_steps=3, wise_ft_alpha=0.0,
                      **overrides)
    train(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    model = tmp_path / "out" / "model"
    saved = load_file(str(model / (QUERY_TOWER if (model / QUERY_TOWER).is_file() else "model.safetensors")))
    prefix = "bert." if encoder == "cross" else ""
    encoder_weights = {n[len(prefix):]: t for n, t in saved.items()
                       if n.startswith(prefix) and not n.startswith(f"{prefix}pooler.")}
    assert encoder_weights and all(torch.equal(t, start[n]) for n, t in encoder_weights.items())
    if encoder == "cross":  # the head (pooler + classifier) is the trained one: the start's is random
        assert {"bert.pooler.dense.weight", "classifier.weight"} <= set(saved)
