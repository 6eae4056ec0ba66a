"""Strict TREC run and qrels files: read with line-precise errors, write atomically.

Run line: `qid Q0 docid rank score tag` (6 whitespace-separated columns).
Qrels line: `qid iter docid grade` (4 columns, integer grade).
Files are UTF-8; a byte-order mark at the start is ignored. Runs are written in `rankface.utils.ties` order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from rankface.errors import UserError
from rankface.utils.io import atomic_write, read_lines
from rankface.utils.ties import ranked

__all__ = ["QRELS_FORMAT", "RUN_FORMAT", "TrecFormatError", "read_qrels", "read_run", "write_qrels", "write_run"]

RUN_FORMAT = "6 whitespace-separated columns `qid Q0 docid rank score tag` (integer rank, numeric score)"
QRELS_FORMAT = "4 whitespace-separated columns `qid iter docid grade` (integer grade)"


class TrecFormatError(UserError):
    """A malformed line in a TREC run or qrels file; the message names file, line, the expected format and
    what was found."""

    def __init__(self, path: str | os.PathLike, lineno: int, expected: str, found: str) -> None:
        self.path, self.lineno = str(path), lineno
        super().__init__(f"{path}:{lineno}: expected {expected}; found {found}")


def _lines(path: Path) -> Iterator[tuple[int, list[str], str]]:
    if not path.is_file():
        raise FileNotFoundError(f"TREC file not found: {path}")
    for lineno, line in read_lines(path):
        stripped = line.strip()
        if stripped:  # blank lines (e.g. a trailing newline) carry nothing and trec_eval skips them too
            yield lineno, stripped.split(), stripped


def _show(line: str) -> str:
    return repr(line if len(line) <= 120 else line[:117] + "...")


def read_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run into `{qid: {docid: score}}`.

    The rank column is checked to be an integer but not used (trec_eval ranks by score too).

    Raises:
        TrecFormatError: wrong column count, non-integer rank, non-numeric or non-finite score, or the same
            (qid, docid) twice.
    """
    path = Path(path)
    run: dict[str, dict[str, float]] = {}
    for lineno, cols, line in _lines(path):
        if len(cols) != 6:
            raise TrecFormatError(path, lineno, RUN_FORMAT, f"{len(cols)} columns in {_show(line)}")
        qid, _, docid, rank, score, _ = cols
        try:
            int(rank)
        except ValueError:
            found = f"rank {rank!r} (not an integer) in {_show(line)}"
            raise TrecFormatError(path, lineno, RUN_FORMAT, found) from None
        try:
            value = float(score)
        except ValueError:
            found = f"score {score!r} (not a number) in {_show(line)}"
            raise TrecFormatError(path, lineno, RUN_FORMAT, found) from None
        if not math.isfinite(value):
            raise TrecFormatError(path, lineno, RUN_FORMAT, f"score {score!r} (not finite) in {_show(line)}")
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise TrecFormatError(path, lineno, "each (qid, docid) at most once per run",
                                  f"a second line for query {qid!r}, document {docid!r}")
        docs[docid] = value
    return run


def write_run(path: str | os.PathLike, run: Mapping[str, Mapping[str, float]], tag: str = "rankface") -> Path:
    """Write `{qid: {docid: score}}` as a TREC run, atomically: per query in `rankface.utils.ties` order (score
    descending, ties by docid descending: trec_eval reads the file in the same order), ranks 1.., scores at full
    float precision (they read back exactly). Queries with no document write no line.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"the run tag must be a non-empty word without whitespace, got {tag!r}")
    path = Path(path)
    with atomic_write(path) as handle:
        for qid, docs in run.items():
            qid = str(qid)
            if not qid or any(c.isspace() for c in qid):
                raise ValueError(f"query id {qid!r} cannot be written to a TREC run (empty or has whitespace)")
            for rank, (docid, score) in enumerate(ranked({str(d): s for d, s in docs.items()}), 1):
                if not docid or any(c.isspace() for c in docid):
                    raise ValueError(f"document id {docid!r} of query {qid!r} cannot be written (whitespace)")
                if not math.isfinite(score):
                    raise ValueError(f"score {score} of query {qid!r}, document {docid!r} is not finite")
                handle.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
    return path


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read TREC qrels into `{qid: {docid: grade}}` (grade 0 = judged non-relevant, kept).

    Raises:
        TrecFormatError: wrong column count, non-integer grade, or a (qid, docid) judged twice with different
            grades.
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, cols, line in _lines(path):
        if len(cols) != 4:
            raise TrecFormatError(path, lineno, QRELS_FORMAT, f"{len(cols)} columns in {_show(line)}")
        qid, _, docid, grade = cols
        try:
            value = int(grade)
        except ValueError:
            found = f"grade {grade!r} (not an integer) in {_show(line)}"
            raise TrecFormatError(path, lineno, QRELS_FORMAT, found) from None
        docs = qrels.setdefault(qid, {})
        if docid in docs and docs[docid] != value:
            raise TrecFormatError(path, lineno, "one grade per (qid, docid)",
                                  f"query {qid!r}, document {docid!r} graded {docs[docid]} and {value}")
        docs[docid] = value
    return qrels


def write_qrels(path: str | os.PathLike, qrels: Mapping[str, Mapping[str, int]]) -> Path:
    """Write `{qid: {docid: grade}}` as TREC qrels (`qid 0 docid grade`), atomically, in the given order."""
    path = Path(path)
    with atomic_write(path) as handle:
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                if any(c.isspace() for c in f"{qid}{docid}") or not qid or not docid:
                    raise ValueError(f"ids cannot be empty or contain whitespace: query {qid!r}, document {docid!r}")
                if int(grade) != grade:
                    raise ValueError(f"grade {grade!r} of query {qid!r}, document {docid!r} is not an integer")
                handle.write(f"{qid} 0 {docid} {int(grade)}\n")
    return path
