"""The one order of a ranking: score descending, then document id descending.

This is trec_eval's order: it ignores a run file's rank column and sorts each query's lines by score, breaking
ties by document id in descending byte order (pytrec_eval and `rankface.evaluation.evaluate` do the same). Making
every ranking in rankface this way (reranked hits, TREC files, training windows, dense search) means that a
ranking, the TREC file written from it and its evaluation put tied documents in the same places. Python compares
strings by code point, which for UTF-8 is the same as trec_eval's byte order.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

__all__ = ["TIE_RULE", "rank_order", "ranked", "top_k"]

TIE_RULE = "score descending, ties broken by document id descending (trec_eval's order)"

K = TypeVar("K", bound=Hashable)


def _key(doc_id, score) -> tuple[float, object]:
    score = float(score)
    if math.isnan(score):
        raise ValueError(f"document {doc_id!r} has a NaN score, which has no place in a ranking")
    return score, doc_id


def ranked(scores: Mapping[K, float]) -> list[tuple[K, float]]:
    """`[(doc_id, score), ...]` best first, by `TIE_RULE`."""
    return sorted(((d, float(s)) for d, s in scores.items()), key=lambda item: _key(*item), reverse=True)


def rank_order(doc_ids: Sequence, scores: Sequence[float]) -> list[int]:
    """Positions into the parallel sequences `doc_ids` and `scores`, best first, by `TIE_RULE`.

    For documents known only by their position (e.g. `CrossEncoder.rank`), pass the positions as the ids.
    """
    if len(doc_ids) != len(scores):
        raise ValueError(f"{len(doc_ids)} document ids but {len(scores)} scores")
    return sorted(range(len(doc_ids)), key=lambda i: _key(doc_ids[i], scores[i]), reverse=True)


def top_k(doc_ids: Sequence, scores: np.ndarray, k: int) -> list[int]:
    """Positions of the best `k` of one query's `scores` `[N]` over `doc_ids`, best first, by `TIE_RULE`.

    Only the documents scoring at least the `k`-th best score are sorted (all of those tied at the cut included, so
    the rule also decides which of them make the cut), not the whole corpus.
    """
    scores = np.asarray(scores)
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return []
    threshold = np.partition(scores, n - k)[n - k]
    candidates = np.flatnonzero(scores >= threshold)
    order = rank_order([doc_ids[i] for i in candidates], scores[candidates].tolist())
    return [int(candidates[i]) for i in order[:k]]
