"""Strict TREC run / qrels I/O: round trips, ordering, and errors that name file, line and format."""

from __future__ import annotations

import os

import pytest

from rankface.retrieval.trec import TrecFormatError, read_qrels, read_run, write_qrels, write_run


def test_run_round_trip_sorted_by_score_with_ranks(tmp_path):
    run = {"q2": {"a": 0.5, "b": 2.25, "c": -1.0}, "q1": {"x": 1 / 3, "y": 1 / 3, "z": 10.0}}
    path = write_run(tmp_path / "run.txt", run, tag="bm25")
    lines = path.read_text().splitlines()
    assert lines[0] == "q2 Q0 b 1 2.25 bm25"
    assert [ln.split()[2] for ln in lines[:3]] == ["b", "a", "c"]
    assert [ln.split()[3] for ln in lines[:3]] == ["1", "2", "3"]
    # equal scores: ties by docid descending (trec_eval's order, rankface.utils.ties), whatever the dict order
    assert [ln.split()[2] for ln in lines[3:]] == ["z", "y", "x"]
    back = read_run(path)
    assert back == run  # full float precision survives the round trip
    assert list(back) == ["q2", "q1"]


def test_qrels_round_trip_keeps_zero_grades(tmp_path):
    qrels = {"1": {"d1": 2, "d2": 0}, "7": {"d9": 1}}
    path = write_qrels(tmp_path / "qrels.txt", qrels)
    assert path.read_text().splitlines()[1] == "1 0 d2 0"
    assert read_qrels(path) == qrels


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 1\n\nq1 0 d2 3\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 3}}


@pytest.mark.parametrize(
    ("content", "lineno", "found"),
    [
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0\n", 2, "5 columns"),
        ("q1 Q0 d1 first 2.0 t\n", 1, "rank 'first'"),
        ("q1 Q0 d1 1 high t\n", 1, "score 'high'"),
        ("q1 Q0 d1 1 nan t\n", 1, "not finite"),
        ("q1\tQ0\td1\t1\t2.0\tt\nq1 Q0 d2 2 1.0 t extra\n", 2, "7 columns"),
    ],
)
def test_malformed_run_line_names_file_line_and_format(tmp_path, content, lineno, found):
    path = tmp_path / "bad.run"
    path.write_text(content)
    with pytest.raises(TrecFormatError) as info:
        read_run(path)
    message = str(info.value)
    assert f"{path}:{lineno}:" in message
    assert "qid Q0 docid rank score tag" in message
    assert found in message
    assert isinstance(info.value, ValueError)
    assert info.value.lineno == lineno


def test_duplicate_docid_in_run_is_an_error(tmp_path):
    path = tmp_path / "dup.run"
    path.write_text("q1 Q0 d1 1 2.0 t\nq2 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n")
    with pytest.raises(TrecFormatError, match=r"dup.run:3: .*'q1'.*'d1'"):
        read_run(path)


@pytest.mark.parametrize(
    ("content", "found"),
    [("q1 0 d1\n", "3 columns"), ("q1 0 d1 rel\n", "grade 'rel'"), ("q1 0 d1 1.5\n", "grade '1.5'")],
)
def test_malformed_qrels_line(tmp_path, content, found):
    path = tmp_path / "bad.qrels"
    path.write_text("q0 0 d0 1\n" + content)
    with pytest.raises(TrecFormatError) as info:
        read_qrels(path)
    assert f"{path}:2:" in str(info.value)
    assert "qid iter docid grade" in str(info.value)
    assert found in str(info.value)


def test_conflicting_qrels_grades(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("q1 0 d1 1\nq1 0 d1 2\n")
    with pytest.raises(TrecFormatError, match=r"q.txt:2: .*graded 1 and 2"):
        read_qrels(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_run(tmp_path / "nope.txt")


def test_write_is_atomic_on_bad_input(tmp_path):
    path = write_run(tmp_path / "run.txt", {"q1": {"d1": 1.0}})
    before = path.read_text()
    with pytest.raises(ValueError, match="whitespace"):
        write_run(path, {"q1": {"d1": 1.0, "bad doc": 0.5}})
    with pytest.raises(ValueError, match="not finite"):
        write_run(path, {"q1": {"d1": float("inf")}})
    assert path.read_text() == before  # the old file is untouched, no temp file left behind
    assert sorted(os.listdir(tmp_path)) == ["run.txt"]


def test_numpy_scores_are_written_as_plain_floats(tmp_path):
    np = pytest.importorskip("numpy")
    path = write_run(tmp_path / "r.txt", {"q": {"d": np.float32(0.5), "e": np.float64(0.25)}})
    assert path.read_text().splitlines() == ["q Q0 d 1 0.5 rankface", "q Q0 e 2 0.25 rankface"]
