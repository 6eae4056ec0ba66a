"""First-stage hits in, reranked hits out: the step between BM25 (or any run) and a TREC run file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rankface.retrieval.lucene import Hit
from rankface.utils.ties import rank_order, ranked

logger = logging.getLogger(__name__)

__all__ = ["PairScorer", "RerankedHit", "hits_to_run", "rerank", "run_to_hits"]


@dataclass(frozen=True)
class RerankedHit:
    """One reranked result: the first stage's score is kept beside the new one; `rank` follows `score`."""

    docid: str
    first_stage_score: float
    score: float
    rank: int


class PairScorer(Protocol):
    """Anything that scores (query, document) pairs, e.g. `CrossEncoder` or `BiEncoder`."""

    def predict(self, pairs: list[tuple[str, str]], batch_size: int = ..., show_progress_bar: bool | None = ...
                ) -> np.ndarray: ...


def rerank(hits: Mapping[str, Sequence[Hit]], queries: Mapping[str, str], doc_text: Callable[[str], str],
           model: PairScorer, top_k: int = 100, batch_size: int = 32, show_progress_bar: bool | None = None,
           predict_kwargs: Mapping[str, Any] | None = None) -> dict[str, list[RerankedHit]]:
    """Rescore the top `top_k` first-stage hits of every query with `model`.

    All pairs of all queries go to one `model.predict` call, so batches span queries (and a length-sorting model
    packs them well). Documents below `top_k` are dropped. Ties in the new score follow `rankface.utils.ties`
    (docid descending), the order of the TREC file written from the result and of its evaluation.

    Args:
        hits: `{qid: [Hit, ...]}` best first (e.g. `Bm25Retriever.batch_search`); empty lists stay empty.
        queries: `{qid: text}`; every qid of `hits` must be present.
        doc_text: docid -> text (e.g. `Bm25Retriever.doc_text` or `IRCollection.doc_text`).
        model: has `predict(pairs, batch_size=..., show_progress_bar=...) -> float [N]`.
        top_k: hits per query to rescore.
        batch_size: passed to `predict`.
        show_progress_bar: passed to `predict`.
        predict_kwargs: further keyword arguments for `predict` (e.g. `{"precision": "fp32"}` for rankface models).

    Returns:
        `{qid: [RerankedHit, ...]}` sorted by the new score, ranks 1.., same qids and order as `hits`.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    missing = [qid for qid in hits if qid not in queries]
    if missing:
        raise KeyError(f"{len(missing)} queries of the hits have no text, e.g. {missing[:5]}")
    pairs: list[tuple[str, str]] = []
    spans: dict[str, tuple[int, int]] = {}
    texts: dict[str, str] = {}
    for qid, qhits in hits.items():
        start = len(pairs)
        for hit in list(qhits)[:top_k]:
            if hit.docid not in texts:
                texts[hit.docid] = doc_text(hit.docid)
            pairs.append((queries[qid], texts[hit.docid]))
        spans[qid] = (start, len(pairs))
    if pairs:
        raw = model.predict(pairs, batch_size=batch_size, show_progress_bar=show_progress_bar,
                            **(predict_kwargs or {}))
        scores = np.asarray(raw, dtype=np.float64).reshape(-1)
    else:  # every query came with an empty ranking: nothing to score
        scores = np.zeros(0)
    if scores.shape[0] != len(pairs):
        raise ValueError(f"model.predict returned {scores.shape[0]} scores for {len(pairs)} pairs")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"model.predict returned {int((~np.isfinite(scores)).sum())} non-finite scores")
    out: dict[str, list[RerankedHit]] = {}
    for qid, qhits in hits.items():
        start, end = spans[qid]
        top = list(qhits)[:top_k]
        order = rank_order([hit.docid for hit in top], scores[start:end].tolist())
        out[qid] = [
            RerankedHit(docid=top[i].docid, first_stage_score=float(top[i].score), score=float(scores[start + i]),
                        rank=rank)
            for rank, i in enumerate(order, 1)
        ]
    empty = sum(1 for v in out.values() if not v)
    if empty:
        logger.info("%d of %d queries had no first-stage hit to rerank", empty, len(out))
    return out


def hits_to_run(hits: Mapping[str, Sequence[Hit | RerankedHit]], first_stage: bool = False
                ) -> dict[str, dict[str, float]]:
    """`{qid: {docid: score}}` for `write_run` / `evaluate`, from `Hit`s or `RerankedHit`s.

    Args:
        hits: ranked hits per query.
        first_stage: for `RerankedHit`s, take the first-stage score instead of the new one (the first stage's
            run restricted to the reranked depth).

    Raises:
        ValueError: a query lists the same document twice.
    """
    run: dict[str, dict[str, float]] = {}
    for qid, qhits in hits.items():
        docs: dict[str, float] = {}
        for hit in qhits:
            if hit.docid in docs:
                raise ValueError(f"query {qid!r} lists document {hit.docid!r} twice")
            use_first = first_stage and isinstance(hit, RerankedHit)
            docs[hit.docid] = float(hit.first_stage_score if use_first else hit.score)
        run[str(qid)] = docs
    return run


def run_to_hits(run: Mapping[str, Mapping[str, float]]) -> dict[str, list[Hit]]:
    """`{qid: [Hit, ...]}` from a run dict (e.g. `read_run`), in `rankface.utils.ties` order: score descending,
    ties by docid descending, as trec_eval reads a run file."""
    return {str(qid): [Hit(docid=d, score=s, rank=i) for i, (d, s) in enumerate(ranked(docs), 1)]
            for qid, docs in run.items()}
