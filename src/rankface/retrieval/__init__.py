"""First-stage retrieval (pyserini/Lucene BM25), strict TREC run/qrels I/O, and the rerank pipeline.

pyserini and Java load lazily: nothing heavy is imported until an index is built or searched.
"""

from rankface.retrieval.java import ensure_pyserini, run_pyserini_module
from rankface.retrieval.lucene import Bm25Retriever, Hit, build_index
from rankface.retrieval.pipeline import RerankedHit, hits_to_run, rerank, run_to_hits
from rankface.retrieval.trec import TrecFormatError, read_qrels, read_run, write_qrels, write_run

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
