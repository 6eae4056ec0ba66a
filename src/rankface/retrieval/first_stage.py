"""Cached BM25 first stage for a collection: the index and the per-split runs are built once and reused.

Training, the demo, the CLI and the benchmarks all need "BM25 top-N for split S of collection C"; this is
the one place that computes it. Everything lands in `cache_dir/<collection key>/`, written atomically, so
an interrupted run never leaves a half-built index or run that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rankface.retrieval.lucene import Bm25Retriever, build_index
from rankface.retrieval.trec import read_run, write_run


def collection_cache(collection, cache_dir: str | os.PathLike) -> Path:
    """A cache folder unique to the collection's identity (its name and corpus file size and mtime)."""
    corpus = Path(collection.corpus_path)
    stat = corpus.stat()
    key = f"{collection.name}|{corpus.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(collection.name).name)
    return Path(cache_dir).expanduser() / f"{safe}-{digest}"


def ensure_index(collection, cache_dir: str | os.PathLike, threads: int = 2) -> Path:
    """The collection's Lucene index, built on first use."""
    folder = collection_cache(collection, cache_dir)
    index_dir = folder / "index"
    if any(index_dir.glob("segments_*")):
        return index_dir
    return build_index(collection.corpus_path, index_dir, threads=threads, overwrite=True)


def bm25_run(
    collection,
    split: str,
    depth: int = 100,
    cache_dir: str | os.PathLike = "~/.cache/rankface",
    k1: float = 0.9,
    b: float = 0.4,
    threads: int = 2,
) -> dict[str, dict[str, float]]:
    """BM25 top-`depth` for every query of `split`, as a run `{qid: {docid: score}}` (cached TREC file).

    Queries for which Lucene finds no document (no query term in the corpus) get an empty entry, so callers
    can count them instead of losing them.
    """
    folder = collection_cache(collection, cache_dir)
    path = folder / "runs" / f"bm25.k1={k1}.b={b}.{split}.top{depth}.trec"
    queries = collection.queries(split)
    if not path.is_file():
        retriever = Bm25Retriever(ensure_index(collection, cache_dir, threads), k1=k1, b=b)
        hits = retriever.batch_search(queries, k=depth, threads=threads)
        write_run(path, {qid: {h.docid: h.score for h in hs} for qid, hs in hits.items() if hs}, tag="bm25")
    run = read_run(path)
    return {qid: run.get(qid, {}) for qid in queries}
