"""The one corpus parser: what indexing (`rankface index`), training and evaluation accept as a document collection.

Formats, chosen by the file's suffix:

- `.jsonl` / `.json`: one JSON object per line. The id is `"id"` (pyserini) or `"_id"` (BEIR); the text is
  `"contents"` (pyserini) or `"text"` (BEIR), with an optional `"title"` put before it (as pyserini's BEIR
  indexes do). A title alone is a document too.
- `.tsv` / `.txt`: `docid<TAB>text` (e.g. MS MARCO `collection.tsv`).

A document id is a non-empty string (or integer) without whitespace, since a TREC run cannot hold any other, and
occurs once. Both are checked as the file is read, so a bad id stops `rankface index` or training before the
work, not when the run is written. A document with empty text is kept (qrels may name it) but counted and reported.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rankface.errors import UserError
from rankface.utils.io import read_lines

logger = logging.getLogger(__name__)

__all__ = ["CORPUS_FORMAT", "CorpusReport", "iter_corpus", "read_corpus"]

CORPUS_FORMAT = (
    "a .jsonl file with one object per line, {\"id\", \"contents\"} or BEIR {\"_id\", \"title\", \"text\"}, or a "
    ".tsv file of `docid<TAB>text` lines"
)
_ID_FIELDS = ("id", "_id")
_TEXT_FIELDS = ("contents", "text")


@dataclass
class CorpusReport:
    """What reading a corpus found: document count, and the documents whose text is empty (up to 5 ids)."""

    path: str
    documents: int = 0
    empty_text: int = 0
    empty_text_examples: list[str] = field(default_factory=list)

    def note_empty(self, docid: str) -> None:
        self.empty_text += 1
        if len(self.empty_text_examples) < 5:
            self.empty_text_examples.append(docid)


def iter_corpus(corpus: str | os.PathLike, report: CorpusReport | None = None) -> Iterator[tuple[str, str]]:
    """Yield `(docid, text)` for every document of a corpus file, in file order.

    Args:
        corpus: the corpus file (formats in this module's docstring).
        report: filled in as the file is read (counts of documents and empty texts); once the whole file has been
            read, empty texts are also logged as a warning.

    Raises:
        FileNotFoundError: no such file.
        UserError: an unknown suffix, or a line that is not what the format expects (invalid JSON, no id, no text,
            an id with whitespace, an id seen before, text that is not UTF-8); the message names file and line.
    """
    path = Path(corpus)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path} (expected {CORPUS_FORMAT})")
    if path.suffix in {".tsv", ".txt"}:
        parse = _parse_tsv_line
    elif path.suffix in {".jsonl", ".json"}:
        parse = _parse_jsonl_line
    else:
        raise UserError(f"{path}: unknown corpus format {path.suffix!r}; expected {CORPUS_FORMAT}")
    report = report if report is not None else CorpusReport(str(path))
    return _documents(path, parse, report)


def read_corpus(corpus: str | os.PathLike) -> tuple[dict[str, str], CorpusReport]:
    """The whole corpus as `{docid: text}`, with its `CorpusReport` (see `iter_corpus`)."""
    report = CorpusReport(str(corpus))
    return dict(iter_corpus(corpus, report)), report


def _documents(path: Path, parse, report: CorpusReport) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for lineno, line in read_lines(path):
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) hold no document
        where = f"{path}:{lineno}"
        docid, text = parse(line, where)
        if not docid or any(c.isspace() for c in docid):
            raise UserError(f"{where}: document id {docid!r} is empty or contains whitespace; expected an id "
                            "without spaces or tabs (a TREC run cannot hold it)")
        if docid in seen:
            raise UserError(f"{where}: document id {docid!r} occurs more than once (first on line "
                            f"{_first_line_of(path, parse, docid)}); expected each id once")
        seen.add(docid)
        report.documents += 1
        if not text.strip():
            report.note_empty(docid)
        yield docid, text
    if report.documents == 0:
        raise UserError(f"{path}: no documents; expected {CORPUS_FORMAT}")
    if report.empty_text:
        logger.warning("%s: %d of %d documents have empty text (e.g. %s); they are kept", path, report.empty_text,
                       report.documents, ", ".join(report.empty_text_examples))


def _first_line_of(path: Path, parse, docid: str) -> int:
    """Where an id first occurs: read again only when a duplicate is found, so that reading keeps just the ids."""
    for lineno, line in read_lines(path):
        if line.strip() and parse(line, "")[0] == docid:
            return lineno
    return 0


def _parse_tsv_line(line: str, where: str) -> tuple[str, str]:
    docid, sep, text = line.partition("\t")
    if not sep:
        raise UserError(f"{where}: expected `docid<TAB>text`, found no tab in {line[:80]!r}")
    return docid, text


def _parse_jsonl_line(line: str, where: str) -> tuple[str, str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: expected one JSON object per line, found invalid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    expected = "expected fields 'id' (or BEIR '_id') and 'contents' (or BEIR 'text' and/or 'title')"
    ids = [f for f in _ID_FIELDS if f in obj]
    texts = [f for f in _TEXT_FIELDS if f in obj]
    if not ids or not (texts or "title" in obj):
        missing = "no id field" if not ids else "no text field"
        raise UserError(f"{where}: {expected}; {missing}, found keys {sorted(obj)}")
    if len(ids) > 1 or len(texts) > 1:
        both = ids if len(ids) > 1 else texts
        raise UserError(f"{where}: {expected}; found both {both[0]!r} and {both[1]!r}, which one is meant?")
    docid = obj[ids[0]]
    if isinstance(docid, bool) or not isinstance(docid, str | int):
        raise UserError(f"{where}: the document id must be a string, found {docid!r}")
    parts = []
    for name in ("title", *texts):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise UserError(f"{where}: field {name!r} must be a string, found {type(value).__name__}")
        if value:
            parts.append(value)
    # Title and body joined by a space: the text pyserini indexes for BEIR and rankface reranks.
    return str(docid), " ".join(parts)
