"""Reranker training end to end on a synthetic collection and a tiny random BERT: plain, CET, resume, 2 processes."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from launch import launch_two_processes
from safetensors.torch import load_file
from tiny_models import WORDS

from rankface.training import parse_training_args, train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "train_reranker.py"


def write_collection(folder: Path, seed: int = 0) -> Path:
    """20 topics; each query names its topic word, relevant docs contain it, others do not."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs, qrels, queries = {}, {"train": [], "dev": []}, {"train": [], "dev": []}
    for t, word in enumerate(WORDS[:20]):
        others = [w for w in WORDS if w != word]
        for j in range(3):
            docs[f"D{t}-{j}"] = " ".join([word, *rng.sample(others, 5)])
        split = "dev" if t % 5 == 0 else "train"
        queries[split].append((f"Q{t}", f"{word} {rng.choice(others)}"))
        qrels[split] += [(f"Q{t}", f"D{t}-{j}", 2 if j == 0 else 1) for j in range(3)]
    with open(folder / "corpus.jsonl", "w") as handle:
        handle.writelines(json.dumps({"id": docid, "contents": text}) + "\n" for docid, text in docs.items())
    for split in ("train", "dev"):
        (folder / f"queries.{split}.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries[split]))
        (folder / f"qrels.{split}.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in qrels[split]))
    # A first-stage run for training: every document, in a seeded random order, for every train query.
    with open(folder / "negatives.trec", "w") as handle:
        for qid, _ in queries["train"]:
            order = rng.sample(sorted(docs), len(docs))
            handle.writelines(f"{qid} Q0 {d} {r} {100 - r} rand\n" for r, d in enumerate(order, 1))
    return folder


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


def settings(collection: Path, tiny_bert_dir: Path, output: Path, **overrides) -> dict:
    base = {
        "collection": str(collection),
        "negatives_run": str(collection / "negatives.trec"),
        "eval_split": None,
        "model_name_or_path": str(tiny_bert_dir),
        "max_length": 32,
        "num_negatives": 3,
        "batch_size": 4,
        "max_steps": 6,
        "learning_rate": 1e-3,
        "output_dir": str(output),
        "cache_dir": str(output.parent / "cache"),
        "quiet": True,
    }
    return base | overrides


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("encoder", ["cross", "bi"])
def test_training_changes_weights_and_saves_a_loadable_model(collection, tiny_bert_dir, tmp_path, encoder):
    config = write_config(tmp_path / "c.yaml", settings(collection, tiny_bert_dir, tmp_path / "out", encoder=encoder))
    args = parse_training_args(["--config", str(config)])
    assert args.encoder == encoder and args.max_steps == 6
    train(args)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["world_size"] == 1
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in state["log"] if "loss" in entry)
    report = json.loads((tmp_path / "out" / "training_groups_report.json").read_text())
    assert report["groups"] == 16 and report["queries_used"] == 16
    from rankface.models.bi_encoder import BiEncoder
    from rankface.models.cross_encoder import CrossEncoder

    model = (CrossEncoder if encoder == "cross" else BiEncoder).from_pretrained(tmp_path / "out" / "model", device="cpu")
    assert model.predict([("fish oil", "fish oil diet")]).shape == (1,)
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    trained = weights(tmp_path / "out" / "model")
    key = "bert.encoder.layer.0.attention.self.query.weight" if encoder == "cross" else "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(trained[key], start["encoder.layer.0.attention.self.query.weight"])


def test_cli_overrides_config_and_unknown_keys_are_named(collection, tiny_bert_dir, tmp_path):
    config = write_config(tmp_path / "c.yaml", settings(collection, tiny_bert_dir, tmp_path / "out"))
    assert parse_training_args(["--config", str(config), "--max_steps", "2"]).max_steps == 2
    bad = write_config(tmp_path / "bad.yaml", {"learning_rat": 1e-3})
    with pytest.raises(ValueError, match=r"bad.yaml: unknown setting\(s\) \['learning_rat'\]"):
        parse_training_args(["--config", str(bad)])
    with pytest.raises(ValueError, match="loss must be one of"):
        parse_training_args(["--config", str(config), "--loss", "hinge"])


@pytest.mark.numerics
@pytest.mark.parametrize("resample", [False, True], ids=["fixed-groups", "groups-redrawn-each-epoch"])
def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(collection, tiny_bert_dir, tmp_path, resample):
    # 16 train queries in batches of 4: 6 steps cross into a second epoch, where redrawn groups must match.
    values = settings(collection, tiny_bert_dir, tmp_path / "out", checkpoint_steps=3, checkpoints_to_keep=5,
                      resample_each_epoch=resample)
    train(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    uninterrupted = weights(tmp_path / "out" / "model")
    checkpoints = sorted((tmp_path / "out" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step-0000003", "step-0000006"]
    # Pretend the run died after step 3: only the first checkpoint survives.
    for path in (checkpoints[1], tmp_path / "out" / "model"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    train(parse_training_args(["--config", str(tmp_path / "c.yaml"), "--resume_from_checkpoint", "latest"]))
    resumed = weights(tmp_path / "out" / "model")
    # The resumed run reads its weights back from the checkpoint, at other offsets in memory, where MKL may sum in
    # another order (tests/numerics.py). Adam turns a relative gradient difference d into a weight difference of
    # about learning_rate * d per step (1e-3 * 1e-6 here), far below 1e-6; a step taken twice or skipped moves
    # weights by ~learning_rate.
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("selection", ["same", "mlp"])
def test_cet_trains_relevance_and_selection_models(collection, tiny_bert_dir, tmp_path, selection):
    values = settings(
        collection, tiny_bert_dir, tmp_path / "out", method="cet", cet_temperature=2.0, max_steps=3,
        cet_selection=selection, cet_weights_from="eval_forward",
    )
    train(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    logged = [e for e in state["log"] if "loss" in e]
    assert {"loss", "selection_loss", "weight_mean"} <= set(logged[-1]) and logged[-1]["weight_mean"] > 1.0
    from rankface.models.cet import CETModel

    pair = CETModel.from_pretrained(tmp_path / "out" / "cet_pair")
    assert pair.config.selection_kind == ("mlp" if selection == "mlp" else "cross")
    relevance = weights(tmp_path / "out" / "model")
    torch.testing.assert_close(pair.relevance.classifier.weight.detach(), relevance["classifier.weight"])
    if selection == "same":
        assert not torch.equal(pair.selection.classifier.weight, pair.relevance.classifier.weight)


def test_resample_each_epoch_redraws_groups_from_the_window(collection, tiny_bert_dir, tmp_path):
    from rankface.training.data import prepare_training_data

    values = settings(collection, tiny_bert_dir, tmp_path / "out", resample_each_epoch=True, positives="sampled",
                      negatives_to_rank=30)
    data = prepare_training_data(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    first = list(data.groups)
    data.start_epoch(0)
    assert data.groups == first  # epoch 0 is the run's seed itself: the same groups as without resampling
    data.start_epoch(1)
    second = list(data.groups)
    assert [g.qid for g in second] == [g.qid for g in first] and second != first
    window = {q: [d for d, _ in sorted(docs.items(), key=lambda kv: -kv[1])][:30] for q, docs in data.train_run.items()}
    for group in second:  # still the window's unlabelled documents, and a best-graded positive
        judged = data.train_qrels[group.qid]
        assert all(d in window[group.qid] and judged.get(d, 0) == 0 for d in group.negative_docids)
        assert judged[group.positive_docid] == max(judged.values())
    data.start_epoch(1)
    assert data.groups == second  # seeded by (seed, epoch): a resumed run draws the same


def test_cet_mlp_selection_reads_the_pooling_run_when_given(collection, tiny_bert_dir, tmp_path):
    """With `cet_selection_run`, the MLP selection model's features (and its standardisation) come from that run,
    not from the run the negatives were mined from."""
    import math

    pool = tmp_path / "pool.trec"  # a "pooling system": the topic's own documents first, then a few others
    lines = []
    for qid in dict.fromkeys(line.split()[0] for line in (collection / "qrels.train.txt").read_text().splitlines()):
        topic = int(qid[1:])
        docs = [f"D{topic}-{j}" for j in range(3)] + [f"D{(topic + 1) % 20}-0"]
        lines += [f"{qid} Q0 {d} {r} {10.0 / r} pool\n" for r, d in enumerate(docs, 1)]
    pool.write_text("".join(lines))
    values = settings(collection, tiny_bert_dir, tmp_path / "out", method="cet", cet_selection="mlp",
                      cet_selection_run=str(pool), max_steps=2)
    args = parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))])
    from rankface.training.data import prepare_training_data
    from rankface.training.loop import GroupCollator, build_models

    data = prepare_training_data(args)
    models = build_models(args, data)
    batch = GroupCollator(models[0], data, with_rank_features=True)([0, 1])
    expected = []  # rank and score in the pool run; a document it lacks sits just below it (rank 5, lowest score)
    for group in (data.groups[0], data.groups[1]):
        pooled = {ln.split()[2]: (int(ln.split()[3]), float(ln.split()[4])) for ln in lines
                  if ln.split()[0] == group.qid}
        expected.append([[math.log1p(pooled.get(d, (5, 2.5))[0]), pooled.get(d, (5, 2.5))[1]]
                         for d in (group.positive_docid, *group.negative_docids)])
    torch.testing.assert_close(batch["selection"]["features"], torch.tensor(expected))
    pool_features = torch.tensor([[math.log1p(int(ln.split()[3])), float(ln.split()[4])] for ln in lines])
    torch.testing.assert_close(models[1].feature_mean, pool_features.mean(0))
    train(args)  # and the whole run trains with it
    assert (tmp_path / "out" / "cet_pair").is_dir()


def test_cet_selection_run_needs_the_mlp_selection_model(collection, tiny_bert_dir, tmp_path):
    values = settings(collection, tiny_bert_dir, tmp_path / "out", method="cet", cet_selection="same",
                      cet_selection_run=str(collection / "negatives.trec"))
    with pytest.raises(ValueError, match="cet_selection_run is read by CET's MLP selection model or its oracle_pool propensity only"):
        parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))])


@pytest.mark.slow
def test_two_process_training_is_one_synchronised_job(collection, tiny_bert_dir, tmp_path):
    launch_two_processes(RECIPE, write_config(tmp_path / "c.yaml", settings(
        collection, tiny_bert_dir, tmp_path / "out", max_steps=4, ddp_timeout=120)), timeout=300,
        output_dir=tmp_path / "out")
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert len(state["rank_fingerprints"]) == 2 and len(set(state["rank_fingerprints"])) == 1
    assert state["step"] == 4


@pytest.mark.parametrize("config", sorted((REPO / "recipes" / "configs").glob("nfcorpus_*.yaml")), ids=lambda p: p.name)
def test_shipped_reranker_configs_parse(config):
    args = parse_training_args(["--config", str(config)])
    assert args.collection == "nfcorpus" and (args.max_steps or 0) + args.epochs > 0


@pytest.mark.parametrize(("encoder", "method"), [("cross", "plain"), ("bi", "plain"), ("cross", "cet")])
def test_lora_trains_adapters_and_exports_merged_plain_weights(collection, tiny_bert_dir, tmp_path, encoder, method):
    values = settings(collection, tiny_bert_dir, tmp_path / "out", encoder=encoder, method=method, lora_rank=4,
                      max_steps=3)
    train(parse_training_args(["--config", str(write_config(tmp_path / "c.yaml", values))]))
    saved = weights(tmp_path / "out" / "model")
    assert not any("lora" in name for name in saved), "the exported model must be merged, loadable without PEFT"
    prefix = "bert." if encoder == "cross" else ""
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    query = f"{prefix}encoder.layer.0.attention.self.query.weight"
    key = f"{prefix}encoder.layer.0.attention.self.key.weight"
    # LoRA targets query and value: merged query weights moved, untouched key weights did not.
    assert not torch.equal(saved[query], start["encoder.layer.0.attention.self.query.weight"])
    torch.testing.assert_close(saved[key], start["encoder.layer.0.attention.self.key.weight"])
