"""First-stage retrieval (pyserini/Lucene BM25), strict TREC run/qrels I/O, and the rerank pipeline.

pyserini and Java load lazily: nothing heavy is imported until an index is built or searched. The names below are
resolved on first access, so that `python -m rankface.retrieval.java` does not import its own module twice.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ensure_pyserini": "java",
    "run_pyserini_module": "java",
    "Bm25Retriever": "lucene",
    "Hit": "lucene",
    "build_index": "lucene",
    "RerankedHit": "pipeline",
    "hits_to_run": "pipeline",
    "rerank": "pipeline",
    "run_to_hits": "pipeline",
    "TrecFormatError": "trec",
    "read_qrels": "trec",
    "read_run": "trec",
    "write_qrels": "trec",
    "write_run": "trec",
}

__all__ = [
    "Bm25Retriever",
    "Hit",
    "RerankedHit",
    "TrecFormatError",
    "build_index",
    "ensure_pyserini",
    "hits_to_run",
    "read_qrels",
    "read_run",
    "rerank",
    "run_pyserini_module",
    "run_to_hits",
    "write_qrels",
    "write_run",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
