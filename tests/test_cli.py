"""The `rankface` command end to end on a synthetic collection: index → search → rerank → evaluate, and the demo."""

from __future__ import annotations

import pytest
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
    CrossEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu", allow_untrained_head=True).save_pretrained(
        path)
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


def test_demo_explains_missing_data(tmp_path, capsys):
    assert main(["demo", "--collection", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "d")]) == 2
    message = capsys.readouterr().out
    assert "--collection" in message and "ir_datasets" in message


def test_train_help_lists_settings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--cet_temperature" in capsys.readouterr().out
