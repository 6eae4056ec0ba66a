"""Malformed input through the library and the `rankface` command: each error names file, line and what was
expected; the CLI shows it as one line with exit status 2 (the traceback only with --debug)."""

from __future__ import annotations

import json
import logging

import pytest

from rankface.cli import main
from rankface.data.ir import load_collection, read_queries_tsv
from rankface.retrieval.lucene import build_index, iter_corpus
from rankface.retrieval.trec import read_qrels, read_run

BOM = "\ufeff"


def _jsonl(path, *rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _folder(root, corpus_rows, queries="q1\tfirst query\n", qrels="q1 0 d1 1\n"):
    folder = root / "col"
    folder.mkdir()
    _jsonl(folder / "corpus.jsonl", *corpus_rows)
    (folder / "queries.tsv").write_text(queries, encoding="utf-8")
    (folder / "qrels.txt").write_text(qrels, encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- encodings
def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
    (tmp_path / "qrels.txt").write_text(BOM + "q1 0 d1 1\n", encoding="utf-8")
    (tmp_path / "queries.tsv").write_text(BOM + "q1\ttext\n", encoding="utf-8")
    (tmp_path / "run.txt").write_text(BOM + "q1 Q0 d1 1 2.0 x\n", encoding="utf-8")
    assert read_qrels(tmp_path / "qrels.txt") == {"q1": {"d1": 1}}
    assert read_queries_tsv(tmp_path / "queries.tsv") == {"q1": "text"}
    assert read_run(tmp_path / "run.txt") == {"q1": {"d1": 2.0}}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(BOM + json.dumps({"id": "d1", "contents": "x"}) + "\n", encoding="utf-8")
    assert list(iter_corpus(corpus)) == [("d1", "x")]


def test_a_local_collection_with_byte_order_marks_reads_clean_ids(tmp_path):
    folder = _folder(tmp_path, [{"id": "d1", "contents": "x"}], queries=BOM + "q1\tfirst\n", qrels=BOM + "q1 0 d1 1\n")
    collection = load_collection(folder)
    assert collection.queries() == {"q1": "first"} and collection.qrels() == {"q1": {"d1": 1}}


@pytest.mark.parametrize("name", ["queries.tsv", "qrels.txt", "corpus.jsonl"])
def test_non_utf8_input_names_file_and_line(tmp_path, name):
    lines = {"queries.tsv": [b"q1\tfine\n", b"q2\tcaf\xe9\n"], "qrels.txt": [b"q1 0 d1 1\n", b"q\xe9 0 d1 1\n"],
             "corpus.jsonl": [b'{"id": "d1", "contents": "x"}\n', b'{"id": "d2", "contents": "caf\xe9"}\n']}[name]
    path = tmp_path / name
    path.write_bytes(b"".join(lines))
    read = {"queries.tsv": read_queries_tsv, "qrels.txt": read_qrels, "corpus.jsonl": lambda p: list(iter_corpus(p))}
    with pytest.raises(ValueError, match=rf"{name}:2: not UTF-8 text \(byte 0xe9 .*expected a UTF-8 file"):
        read[name](path)


# ---------------------------------------------------------------------------------------------- the corpus
def test_a_duplicate_document_id_names_both_lines(tmp_path):
    corpus = _jsonl(tmp_path / "c.jsonl", {"id": "a", "contents": "x"}, {"id": "b", "contents": "y"},
                    {"id": "a", "contents": "z"})
    with pytest.raises(ValueError, match=r"c.jsonl:3: document id 'a' occurs more than once \(first on line 1\)"):
        list(iter_corpus(corpus))


def test_a_local_collection_without_ids_names_file_line_and_fields(tmp_path):
    folder = _folder(tmp_path, [{"id": "d1", "contents": "x"}, {"docid": "d2", "contents": "y"}])
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: expected fields 'id' .*no id field, found keys "
                                         r"\['contents', 'docid'\]"):
        load_collection(folder).docs()


def test_a_document_id_with_whitespace_is_refused_when_the_corpus_is_read(tmp_path):
    folder = _folder(tmp_path, [{"id": "d1", "contents": "x"}, {"id": "d 2", "contents": "y"}])
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: document id 'd 2' .* whitespace"):
        load_collection(folder).docs()
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: document id 'd 2'"):
        build_index(folder / "corpus.jsonl", tmp_path / "index")  # before any indexing work
    assert not (tmp_path / "index").exists()
    (tmp_path / "q.tsv").write_text("q 1\ttext\n")
    with pytest.raises(ValueError, match=r"q.tsv:1: query id 'q 1' contains whitespace"):
        read_queries_tsv(tmp_path / "q.tsv")


def test_empty_texts_are_kept_counted_and_reported(tmp_path, caplog):
    from rankface.data.corpus import read_corpus

    corpus = _jsonl(tmp_path / "c.jsonl", {"id": "d1", "contents": "x"}, {"id": "d2", "contents": ""},
                    {"_id": "d3", "title": "", "text": " "})
    with caplog.at_level(logging.WARNING):
        docs, report = read_corpus(corpus)
    assert docs == {"d1": "x", "d2": "", "d3": " "}
    assert (report.documents, report.empty_text, report.empty_text_examples) == (3, 2, ["d2", "d3"])
    assert "c.jsonl: 2 of 3 documents have empty text (e.g. d2, d3)" in caplog.text
    (tmp_path / "q.tsv").write_text("q1\tfine\nq2\t\n")
    with caplog.at_level(logging.WARNING):
        assert read_queries_tsv(tmp_path / "q.tsv") == {"q1": "fine", "q2": ""}
    assert "q.tsv: 1 of 2 queries have empty text (e.g. q2)" in caplog.text


def test_indexing_and_training_read_a_corpus_the_same_way(tmp_path):
    """One parser: the fields the index accepts (BEIR title without text, pyserini id with BEIR text) are the
    fields a training collection accepts, and the same files are refused by both."""
    rows = [{"_id": "d1", "title": "only a title"}, {"_id": "d2", "title": "T", "text": "body"},
            {"id": "d3", "contents": "plain"}, {"id": 4, "text": "numeric id"}]
    folder = _folder(tmp_path, rows)
    expected = {"d1": "only a title", "d2": "T body", "d3": "plain", "4": "numeric id"}
    assert dict(iter_corpus(folder / "corpus.jsonl")) == expected
    assert load_collection(folder).docs() == expected
    import ir_datasets

    # The plain ir_datasets view of the folder reads through the same parser.
    dataset = ir_datasets.load(load_collection(folder).docs_id)
    assert {d.doc_id: d.text for d in dataset.docs_iter()} == expected

    twice = tmp_path / "twice"
    twice.mkdir()
    dup = _folder(twice, [{"id": "a", "contents": "x"}, {"_id": "a", "text": "y"}])
    with pytest.raises(ValueError, match="occurs more than once"):
        list(iter_corpus(dup / "corpus.jsonl"))
    with pytest.raises(ValueError, match="occurs more than once"):
        load_collection(dup).docs()


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.fixture
def evaluation_files(tmp_path):
    (tmp_path / "qrels.txt").write_text(BOM + "q1 0 d1 1\nq2 0 d2 1\n", encoding="utf-8")
    for folder, lines in (("a", "q1 Q0 d1 1 2.0 x\n"), ("b", "q1 Q0 d9 1 2.0 x\nq2 Q0 d2 1 1.0 x\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run.txt").write_text(lines)
    (tmp_path / "empty.txt").write_text("")
    return tmp_path


def test_evaluate_keeps_runs_with_the_same_file_name_apart(evaluation_files, capsys):
    qrels, a, b = (str(evaluation_files / p) for p in ("qrels.txt", "a/run.txt", "b/run.txt"))
    assert main(["evaluate", "--qrels", qrels, a, b, "--measures", "RR@10"]) == 0
    out, err = capsys.readouterr()
    # a finds q1's document at rank 1 (q2 missing): 0.5; b finds only q2's: 0.5. The BOM did not hide q1.
    assert "| a/run.txt | 0.5000 | 2 |" in out and "| b/run.txt | 0.5000 | 2 |" in out
    assert f"warning: {a}: 1 of 2 queries of {qrels} have no ranking and score 0 (e.g. q2)" in err


def test_evaluate_refuses_a_run_that_ranks_no_query(evaluation_files, capsys):
    qrels, empty = str(evaluation_files / "qrels.txt"), str(evaluation_files / "empty.txt")
    assert main(["evaluate", "--qrels", qrels, empty]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"rankface evaluate: error: {empty}: no ranking for any query of {qrels} (the run is empty)")


def test_cli_errors_are_one_line_with_status_2_and_a_traceback_only_with_debug(tmp_path, capsys):
    corpus = _jsonl(tmp_path / "c.jsonl", {"id": "d1", "contents": "x"}, {"id": "d1", "contents": "y"})
    assert main(["index", "--corpus", str(corpus), "--index", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"rankface index: error: {corpus}:2: document id 'd1' occurs more than once" in err
    with pytest.raises(ValueError, match="occurs more than once"):
        main(["--debug", "index", "--corpus", str(corpus), "--index", str(tmp_path / "idx")])
    with pytest.raises(ValueError, match="occurs more than once"):
        main(["index", "--corpus", str(corpus), "--index", str(tmp_path / "idx"), "--debug"])


def test_cli_messages_name_cli_commands(tmp_path, capsys):
    (tmp_path / "q.tsv").write_text("q1\ttext\n")
    assert main(["search", "--index", str(tmp_path / "nowhere"), "--topics", str(tmp_path / "q.tsv"),
                 "--output", str(tmp_path / "run.trec")]) == 2
    err = capsys.readouterr().err
    assert f"build one with `rankface index --corpus CORPUS --index {tmp_path / 'nowhere'}`" in err
    assert "rankface.retrieval" not in err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    corpus = _jsonl(tmp_path / "c.jsonl", {"id": "d1", "contents": "x"})
    assert main(["index", "--corpus", str(corpus), "--index", str(tmp_path / "used")]) == 2
    err = capsys.readouterr().err
    assert "is not an index built by `rankface index`; choose a new or empty index folder" in err
    assert "overwrite=True" not in err


def test_index_overwrite_refuses_a_folder_that_is_not_a_rankface_index(tmp_path, capsys):
    scratch = tmp_path / "scratch"
    (scratch / "sub").mkdir(parents=True)
    (scratch / "important.txt").write_text("keep")
    corpus = _jsonl(tmp_path / "c.jsonl", {"id": "d1", "contents": "x"})
    assert main(["index", "--corpus", str(corpus), "--index", str(scratch), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rankface index: error: refusing to replace {scratch}: it is not a Lucene index built by "
                          "rankface") and err.count("\n") == 1
    assert (scratch / "important.txt").read_text() == "keep" and (scratch / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "scratch"]  # no staging folder left behind


def test_evaluate_names_an_empty_qrels_file(evaluation_files, capsys):
    empty_qrels = evaluation_files / "empty-qrels.txt"
    empty_qrels.write_text("\n")
    assert main(["evaluate", "--qrels", str(empty_qrels), str(evaluation_files / "a/run.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"rankface evaluate: error: {empty_qrels}: no judgments (the file is empty); expected")


def test_evaluate_warns_about_run_queries_absent_from_the_qrels(evaluation_files, capsys):
    run = evaluation_files / "extra.txt"
    run.write_text("q1 Q0 d1 1 2.0 x\nq7 Q0 d1 1 2.0 x\nq8 Q0 d1 1 2.0 x\n")
    assert main(["evaluate", "--qrels", str(evaluation_files / "qrels.txt"), str(run)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {run}: 2 of its 3 queries are not in {evaluation_files / 'qrels.txt'} and are ignored " \
           "(e.g. q7, q8)" in err


def test_search_refuses_an_empty_topics_file(tmp_path, capsys):
    (tmp_path / "topics.tsv").write_text("")
    assert main(["search", "--index", str(tmp_path / "index"), "--topics", str(tmp_path / "topics.tsv"),
                 "--output", str(tmp_path / "run.trec")]) == 2
    err = capsys.readouterr().err
    assert f"rankface search: error: {tmp_path / 'topics.tsv'}: no queries (the file is empty)" in err
    assert not (tmp_path / "run.trec").exists()


def test_an_empty_query_id_is_named_as_such(tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tfirst\n\tsecond query\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{topics}:2: the query id \(the field before the tab\) is empty; "
                                         r"expected `qid<TAB>text`, found '\\tsecond query'$"):
        read_queries_tsv(topics)
