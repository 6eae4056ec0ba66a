"""Lucene (pyserini/Anserini) first stage: build an index from a corpus file, BM25 search and batch search.

pyserini is imported lazily, after `ensure_pyserini()` has set up Java 21, so importing rankface stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rankface import __version__
from rankface.data.corpus import CorpusReport, iter_corpus
from rankface.errors import UserError
from rankface.retrieval.java import ensure_pyserini, run_pyserini_module
from rankface.utils.io import replace_folder, staging_folder, write_json
from rankface.utils.ties import rank_order

logger = logging.getLogger(__name__)

__all__ = ["INDEX_MARKER", "Bm25Retriever", "Hit", "build_index", "is_rankface_index", "iter_corpus"]

# Written into every index `build_index` makes: `overwrite` replaces only a folder that holds it (and Lucene's own
# `segments_N`), so a mistyped index path can never delete someone's data.
INDEX_MARKER = "rankface-index.json"


@dataclass(frozen=True)
class Hit:
    """One first-stage result: document id, retrieval score and 1-based rank within its query."""

    docid: str
    score: float
    rank: int


def build_index(corpus: str | os.PathLike, index_dir: str | os.PathLike, threads: int = 2,
                overwrite: bool = False) -> Path:
    """Build a Lucene index (Anserini's default English analyzer, raw text stored) from a corpus file.

    The corpus is read by `rankface.data.corpus.iter_corpus` (the parser training uses too: a bad line, an id with
    whitespace or a repeated id stops here, before any indexing) and rewritten as a one-file `JsonCollection` in a
    staging folder, then indexed by `python -m pyserini.index.lucene` in a subprocess (the JVM and Anserini's
    `System.exit` stay out of this process). The finished index replaces `index_dir` by `replace_folder`, so a
    failed build never leaves a half-written index and a failed replacement never loses the old one.

    Args:
        corpus: `corpus.jsonl` (`{"id","contents"}` or BEIR `{"_id","title","text"}`) or a docs TSV.
        index_dir: where the index goes.
        threads: indexing threads.
        overwrite: replace an existing `index_dir`, which must hold an index built here (`is_rankface_index`):
            any other non-empty folder is refused (`UserError`), with or without `overwrite`.

    Returns:
        The index folder.
    """
    index_dir = Path(index_dir)
    if index_dir.exists() and (not index_dir.is_dir() or any(index_dir.iterdir())):
        if not overwrite:
            raise FileExistsError(f"index folder {index_dir} already exists and is not empty; pass overwrite=True")
        if not is_rankface_index(index_dir):
            raise UserError(
                f"refusing to replace {index_dir}: it is not a Lucene index built by rankface (no {INDEX_MARKER} "
                "beside Lucene's segments_N files), so replacing it could delete other data; choose a new or empty "
                "index folder, or remove this one yourself")
    work = staging_folder(index_dir)
    try:
        collection = work / "collection"
        collection.mkdir()
        report = CorpusReport(str(corpus))
        with (collection / "docs.jsonl").open("w", encoding="utf-8") as out:
            for docid, text in iter_corpus(corpus, report):
                out.write(json.dumps({"id": docid, "contents": text}, ensure_ascii=False) + "\n")
        built = work / "index"
        run_pyserini_module(
            "pyserini.index.lucene",
            ["--collection", "JsonCollection", "--input", collection, "--index", built,
             "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads),
             "--storePositions", "--storeDocvectors", "--storeRaw"],
        )
        if not any(built.glob("segments_*")):
            raise RuntimeError(f"pyserini finished but wrote no Lucene index into {built}")
        write_json(built / INDEX_MARKER, {"built_by": "rankface", "rankface_version": __version__,
                                          "corpus": Path(corpus).name, "documents": report.documents})
        # The new index is complete beside the old one; the swap renames the old aside first (`replace_folder`).
        replace_folder(built, index_dir)
        logger.info("indexed %d documents from %s into %s", report.documents, corpus, index_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return index_dir


def is_rankface_index(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a Lucene index written by `build_index`: its marker file and a `segments_N`."""
    folder = Path(folder)
    return folder.is_dir() and (folder / INDEX_MARKER).is_file() and any(folder.glob("segments_*"))


class Bm25Retriever:
    """BM25 over a Lucene index through pyserini's `LuceneSearcher`.

    Args:
        index_dir: a Lucene index built by `build_index` (or by pyserini/Anserini with `--storeRaw`).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
    """

    def __init__(self, index_dir: str | os.PathLike, k1: float = 0.9, b: float = 0.4) -> None:
        index_dir = Path(index_dir)
        if not index_dir.is_dir() or not any(index_dir.glob("segments_*")):
            raise FileNotFoundError(f"no Lucene index at {index_dir} (build one with rankface.retrieval.build_index)")
        ensure_pyserini()
        from pyserini.search.lucene import LuceneSearcher

        self._init(LuceneSearcher(str(index_dir)), str(index_dir), k1, b)

    def _init(self, searcher, index_dir: str, k1: float, b: float) -> None:
        self.searcher = searcher
        self.index_dir = index_dir
        self.k1, self.b = float(k1), float(b)
        self.searcher.set_bm25(self.k1, self.b)
        self.num_docs: int = int(self.searcher.num_docs)
        # Query ids that got no hit in the last batch_search (all their terms absent from the index).
        self.last_empty_queries: list[str] = []

    @classmethod
    def from_prebuilt_index(cls, name: str, k1: float = 0.9, b: float = 0.4) -> Bm25Retriever:
        """Open one of pyserini's prebuilt indexes (downloads it: needs network access the first time)."""
        ensure_pyserini()
        from pyserini.search.lucene import LuceneSearcher

        searcher = LuceneSearcher.from_prebuilt_index(name)
        if searcher is None:  # pyserini prints the failure and returns None instead of raising
            raise RuntimeError(
                f"pyserini could not open the prebuilt index {name!r} (unknown name, or its download failed: "
                "offline machines cannot fetch prebuilt indexes). Build a local index instead: "
                "rankface.retrieval.build_index('corpus.jsonl', 'index_dir')."
            )
        self = cls.__new__(cls)
        self._init(searcher, str(searcher.index_dir), k1, b)
        return self

    @staticmethod
    def _hits(raw) -> list[Hit]:
        # Lucene breaks score ties by its internal document number; rankface's rule (`utils.ties`) decides instead,
        # so these ranks are those of the TREC file written from them and of its evaluation.
        docids, scores = [h.docid for h in raw], [float(h.score) for h in raw]
        return [Hit(docid=docids[i], score=scores[i], rank=r) for r, i in enumerate(rank_order(docids, scores), 1)]

    def search(self, query: str, k: int = 1000) -> list[Hit]:
        """Top-`k` BM25 hits for one query, best first (ties by `utils.ties`; an empty list when no query term is in
        the index)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self._hits(self.searcher.search(query, k))

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 2) -> dict[str, list[Hit]]:
        """Top-`k` hits for every query, searched concurrently by Anserini.

        Args:
            queries: `{qid: text}`.
            k: hits per query.
            threads: search threads.

        Returns:
            `{qid: [Hit, ...]}` in the order of `queries`; every qid is present, with an empty list when nothing
            matched (those qids are also in `self.last_empty_queries` and logged as a count).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        qids = [str(q) for q in queries]
        if not qids:
            self.last_empty_queries = []
            return {}
        raw = self.searcher.batch_search([queries[q] for q in queries], qids, k, threads)
        out = {qid: self._hits(raw.get(qid, [])) for qid in qids}
        self.last_empty_queries = [qid for qid, hits in out.items() if not hits]
        if self.last_empty_queries:
            logger.warning("%d of %d queries retrieved no document (kept as empty rankings)",
                           len(self.last_empty_queries), len(qids))
        return out

    def doc_text(self, docid: str) -> str:
        """The stored text (`contents`) of a document; `KeyError` if the index does not hold it."""
        doc = self.searcher.doc(str(docid))
        if doc is None:
            raise KeyError(f"document {docid!r} is not in the index {self.index_dir}")
        raw = doc.raw()
        if raw is None:
            raise RuntimeError(f"index {self.index_dir} stores no raw text; rebuild it with rankface's indexer "
                               "(`rankface index`, or build_index in Python), which stores it")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            return raw  # collections other than JsonCollection store the raw text itself
        return obj.get("contents", raw) if isinstance(obj, dict) else raw

    def close(self) -> None:
        self.searcher.close()
