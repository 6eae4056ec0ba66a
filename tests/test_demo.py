"""The main job (`rankface demo`) end to end on synthetic collections: rows, p-values, learning curve, folds."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from test_training import write_collection

from rankface.cli import main
from rankface.retrieval.trec import read_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


def demo_config(tmp_path, tiny_bert_dir, **overrides):
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({
        "encoder": "bi", "model_name_or_path": str(tiny_bert_dir), "max_length": 32, "num_negatives": 3,
        "batch_size": 4, "max_steps": 4, "eval_split": None, "training_mode": "query_side",
        "cache_dir": str(tmp_path / "cache"),
    } | overrides))
    return config


def test_demo_prints_bm25_zero_shot_and_trained_rows_with_p_values(collection, tiny_bert_dir, tmp_path, capsys):
    config = demo_config(tmp_path, tiny_bert_dir, eval_split="dev", eval_steps=2)
    code = main(["demo", "--collection", str(collection), "--config", str(config), "--test-split", "dev",
                 "--output-dir", str(tmp_path / "demo"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| BM25 |" in out and "zero-shot (the starting model)" in out and "trained (4 steps)" in out
    assert "trained vs zero-shot: nDCG@10" in out and "p = " in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(results["metrics"]) == 3 and results["cpu"]["class"] and results["threads"] >= 1
    assert set(results["comparisons"]) == {"trained vs zero-shot", "trained vs BM25", "zero-shot vs BM25"}
    assert 0.0 <= results["comparisons"]["trained vs zero-shot"]["p"] <= 1.0
    assert read_run(tmp_path / "demo" / "reranked.dev.trec")
    # The learning curve starts at step 0 (the starting model) and has the dev points of every eval step.
    state = json.loads((tmp_path / "demo" / "training" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log"] if "eval" in e][:3] == [0, 2, 4]
    assert (tmp_path / "demo" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_single_split_collection_is_cross_validated(collection, tiny_bert_dir, tmp_path, capsys):
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(collection / "corpus.jsonl", single / "corpus.jsonl")
    queries = (collection / "queries.train.tsv").read_text() + (collection / "queries.dev.tsv").read_text()
    qrels = (collection / "qrels.train.txt").read_text() + (collection / "qrels.dev.txt").read_text()
    (single / "queries.tsv").write_text(queries)
    (single / "qrels.txt").write_text(qrels)
    config = demo_config(tmp_path, tiny_bert_dir, max_steps=2)
    code = main(["demo", "--collection", str(single), "--config", str(config), "--output-dir", str(tmp_path / "demo"),
                 "--quiet"])
    assert code == 0
    assert "2-fold cross-validation" in capsys.readouterr().out
    # Every query is tested once, by the model that did not train on it.
    reranked = read_run(tmp_path / "demo" / "reranked.all.trec")
    assert set(reranked) == {line.split("\t")[0] for line in queries.splitlines()}
    for fold in (0, 1):
        folder = tmp_path / "demo" / f"fold-{fold}" / "collection"
        train = {line.split("\t")[0] for line in (folder / "queries.train.tsv").read_text().splitlines()}
        test = {line.split("\t")[0] for line in (folder / "queries.test.tsv").read_text().splitlines()}
        assert train and test and not train & test


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("flags", [[], ["--training-mode", "full"], ["--method", "cet"], ["--encoder", "cross",
                                                                                          "--training-mode", "full"]])
def test_built_in_settings_with_any_override_are_valid(cuda, flags):
    import argparse

    from rankface.demo import add_demo_arguments, demo_settings
    from rankface.training.arguments import RerankerTrainingArguments

    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    settings = demo_settings(parser.parse_args(flags), cuda=cuda)
    RerankerTrainingArguments(**settings)  # raises on a contradiction (e.g. corpus negatives without a corpus cache)
    assert settings["corpus_negatives"] == (not cuda and not flags)
    assert (settings["domain_gate_threshold"] is not None) == (not cuda and flags in ([], ["--method", "cet"]))


def single_split_copy(collection, folder):
    """The collection's corpus with every query in one split (as Cranfield is)."""
    folder.mkdir()
    shutil.copy(collection / "corpus.jsonl", folder / "corpus.jsonl")
    (folder / "queries.tsv").write_text((collection / "queries.train.tsv").read_text()
                                        + (collection / "queries.dev.tsv").read_text())
    (folder / "qrels.txt").write_text((collection / "qrels.train.txt").read_text()
                                      + (collection / "qrels.dev.txt").read_text())
    return folder


def test_the_demo_checks_another_collection_with_the_trained_model_and_its_start(collection, tiny_bert_dir, tmp_path,
                                                                                  capsys):
    from test_training import write_collection

    other = single_split_copy(write_collection(tmp_path / "other-source", seed=1), tmp_path / "other")
    config = demo_config(tmp_path, tiny_bert_dir, domain_gate_threshold=0.5, domain_gate_temperature=0.05)
    record_path = tmp_path / "record.json"
    code = main(["demo", "--collection", str(collection), "--config", str(config), "--test-split", "dev",
                 "--output-dir", str(tmp_path / "demo"), "--ood-collection", str(other), "--quiet",
                 "--transfer-record", str(record_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "out of domain: every query of other" in out and "trained vs zero-shot out of domain: nDCG@10" in out
    record = json.loads(record_path.read_text())
    assert record == json.loads((tmp_path / "demo" / "transfer.json").read_text())
    # The T1 keys (benchmarks.md), named after the --config file, and the RESULT line that prints them.
    assert {"indomain_gain", "p_indomain", "ood_change", "p_ood", "setting", "mode"} <= set(record)
    assert record["setting"] == "demo" and record["ood"]["queries"] == 20 and record["ood_collection"] == "other"
    assert record["ood_change"] == pytest.approx(record["ood"]["trained"] - record["ood"]["zero_shot"])
    # the gate's mechanism, logged: its mean weight on each side, and its settings
    assert 0 <= record["gate"]["mean_alpha_indomain"] <= 1 and 0 <= record["gate"]["mean_alpha_ood"] <= 1
    assert record["gate"]["threshold"] == 0.5 and "query-domain gate: mean weight of the trained query tower" in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["transfer"]["indomain_gain"] == pytest.approx(
        results["comparisons"]["trained vs zero-shot"]["delta_ndcg10"])
    result = [line for line in out.splitlines() if line.startswith("RESULT ")]
    expected = (f"RESULT indomain_gain={record['indomain_gain']:+.4f} p_indomain={record['p_indomain']:.3g} "
                f"ood_change={record['ood_change']:+.4f} p_ood={record['p_ood']:.3g} setting=demo mode=demo")
    assert result == [expected]


def test_the_out_of_domain_collection_defaults_to_cranfield_after_nfcorpus_only(monkeypatch, tmp_path):
    from rankface.demo import out_of_domain_collection

    (tmp_path / "data" / "ir" / "cranfield").mkdir(parents=True)
    monkeypatch.setenv("RANKFACE_SHARED", str(tmp_path))
    assert out_of_domain_collection("auto", str(tmp_path / "data" / "ir" / "nfcorpus")) == str(
        tmp_path / "data" / "ir" / "cranfield")
    assert out_of_domain_collection("auto", str(tmp_path / "elsewhere")) is None
    assert out_of_domain_collection("none", str(tmp_path / "data" / "ir" / "nfcorpus")) is None
