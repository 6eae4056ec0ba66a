"""The `rankface` command end to end on a synthetic collection: index → search → rerank → evaluate, and the demo."""

from __future__ import annotations

import json

import pytest
import yaml
from test_training import write_collection

from rankface.cli import main
from rankface.retrieval.java import run_pyserini_module
from rankface.retrieval.trec import read_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def reranker_dir(tiny_bert_dir, tmp_path_factory):
    from rankface.models.cross_encoder import CrossEncoder

    path = tmp_path_factory.mktemp("reranker")
    CrossEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu").save_pretrained(path)
    return path


def test_index_search_rerank_evaluate(collection, reranker_dir, tmp_path, capsys):
    index = tmp_path / "index"
    assert main(["index", "--corpus", str(collection / "corpus.jsonl"), "--index", str(index)]) == 0
    topics = str(collection / "queries.dev.tsv")
    assert main(["search", "--index", str(index), "--topics", topics, "--hits", "5", "--output",
                 str(tmp_path / "bm25.trec")]) == 0
    assert main(["rerank", "--index", str(index), "--topics", topics, "--model", str(reranker_dir), "--hits", "5",
                 "--output", str(tmp_path / "reranked.trec"), "--quiet"]) == 0
    bm25, reranked = read_run(tmp_path / "bm25.trec"), read_run(tmp_path / "reranked.trec")
    assert set(reranked) == set(bm25) and all(set(reranked[q]) == set(bm25[q]) for q in bm25)

    capsys.readouterr()
    qrels = str(collection / "qrels.dev.txt")
    assert main(["evaluate", "--qrels", qrels, str(tmp_path / "bm25.trec"), str(tmp_path / "reranked.trec")]) == 0
    table = capsys.readouterr().out
    assert "| bm25.trec |" in table and "| reranked.trec |" in table and "nDCG@10" in table

    # pyserini's own trec_eval reads what rankface wrote.
    done = run_pyserini_module("pyserini.eval.trec_eval", ["-c", "-m", "ndcg_cut.10", qrels, str(tmp_path / "reranked.trec")],
                               capture=True)
    assert "ndcg_cut_10" in done.stdout


def test_demo_runs_the_main_job_on_any_collection(collection, tiny_bert_dir, tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({
        "encoder": "bi", "model_name_or_path": str(tiny_bert_dir), "max_length": 32, "num_negatives": 3,
        "batch_size": 4, "max_steps": 2, "eval_split": None, "method": "cet", "cet_selection": "mlp",
        "cache_dir": str(tmp_path / "cache"),
    }))
    code = main(["demo", "--collection", str(collection), "--config", str(config), "--test-split", "dev",
                 "--output-dir", str(tmp_path / "demo"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| BM25 |" in out and "| BM25 >> rankface bi-encoder |" in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(results["metrics"]) == {"BM25", "BM25 >> rankface bi-encoder"}
    assert read_run(tmp_path / "demo" / "reranked.dev.trec")


def test_demo_explains_missing_data(tmp_path, capsys):
    assert main(["demo", "--collection", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "d")]) == 2
    message = capsys.readouterr().out
    assert "--collection" in message and "ir_datasets" in message


def test_train_help_lists_settings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--cet_temperature" in capsys.readouterr().out
