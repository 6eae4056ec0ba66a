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


@pytest.fixture(scope="module")
def index(collection, tmp_path_factory):
    index = tmp_path_factory.mktemp("index") / "index"
    assert main(["index", "--corpus", str(collection / "corpus.jsonl"), "--index", str(index)]) == 0
    return index


def test_index_search_rerank_evaluate(collection, index, reranker_dir, tmp_path, capsys):
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


def test_rerank_refuses_an_empty_first_stage_run(collection, reranker_dir, tmp_path, capsys):
    (tmp_path / "empty.trec").write_text("\n")
    assert main(["rerank", "--index", str(tmp_path / "no-index"), "--topics", str(collection / "queries.dev.tsv"),
                 "--model", str(reranker_dir), "--first-stage-run", str(tmp_path / "empty.trec"),
                 "--output", str(tmp_path / "out.trec"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"rankface rerank: error: {tmp_path / 'empty.trec'}: the first-stage run is empty" in err
    assert not (tmp_path / "out.trec").exists()


def test_rerank_warns_about_topics_the_first_stage_run_misses(collection, index, reranker_dir, tmp_path, capsys):
    topics = collection / "queries.dev.tsv"  # Q0, Q5, Q10, Q15
    (tmp_path / "partial.trec").write_text("Q5 Q0 D5-0 1 3.0 x\nQ5 Q0 D1-1 2 2.0 x\n")
    assert main(["rerank", "--index", str(index), "--topics", str(topics), "--model", str(reranker_dir),
                 "--first-stage-run", str(tmp_path / "partial.trec"), "--output", str(tmp_path / "out.trec"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (f"warning: {tmp_path / 'partial.trec'}: ranks 1 of the 4 queries of {topics}; 3 get an empty ranking "
            "(e.g. Q0, Q10, Q15)") in err
    assert set(read_run(tmp_path / "out.trec")) == {"Q5"}


@pytest.fixture
def restore_progress_bars(monkeypatch):
    """--quiet switches the libraries' bars off for the whole process (earlier tests of this module pass it): on
    before the test, as in a fresh `rankface` process, and back on after it."""
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as transformers_logging

    def switch_on():
        enable_progress_bars()
        transformers_logging.enable_progress_bar()
        transformers_logging.set_verbosity_warning()

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    switch_on()
    yield
    switch_on()


def test_rerank_prints_the_precision_it_runs_and_quiet_silences_every_bar(collection, index, reranker_dir, tmp_path,
                                                                          capfd, restore_progress_bars):
    from rankface import hardware

    topics = collection / "queries.dev.tsv"
    args = ["rerank", "--index", str(index), "--topics", str(topics), "--model", str(reranker_dir), "--hits", "3",
            "--output", str(tmp_path / "out.trec")]
    capfd.readouterr()
    assert main([*args, "--precision", "fp32"]) == 0
    err = capfd.readouterr().err
    assert f"scoring with the CrossEncoder in {reranker_dir}, backend torch, precision fp32\n" in err
    assert "Loading weights" in err  # the bar --quiet must silence
    assert main([*args, "--backend", "torch"]) == 0
    expected = "bf16" if hardware.native_bf16() else "fp32"  # auto: bf16 only where the CPU runs it natively
    assert f"backend torch, precision {expected} (auto on cpu)\n" in capfd.readouterr().err
    assert main(args) == 0  # --backend auto: this CPU class's fast path
    from rankface.inference.backends import resolve_backend

    auto = resolve_backend("auto", "cpu", "text")
    note = f"backend {auto} (auto on cpu)" if auto != "torch" else f"backend torch, precision {expected} (auto on cpu)"
    assert note + "\n" in capfd.readouterr().err
    assert main([*args, "--backend", "onnx", "--precision", "int8", "--quiet"]) == 2
    assert "--backend onnx --precision int8: backend='onnx' sets its own precision" in capfd.readouterr().err
    assert main([*args, "--quiet"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "precision" not in err and "%|" not in err


def test_rerank_threads_limit_torch(collection, index, reranker_dir, tmp_path):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["rerank", "--index", str(index), "--topics", str(collection / "queries.dev.tsv"), "--model",
                     str(reranker_dir), "--hits", "3", "--threads", "2", "--output", str(tmp_path / "out.trec"),
                     "--quiet"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
