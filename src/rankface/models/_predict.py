"""What `predict` and `rank` of the text models share: the pairs they accept, the activation, the ranked hits.

The conventions are sentence-transformers' (`CrossEncoder.predict` on one pair returns one float; `rank` returns
`[{"corpus_id", "score", ("text")}]` best first) and rerankers' (documents with ids of their own, kept in each hit);
ties follow rankface's one rule (`rankface.utils.ties`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from rankface.utils.ties import rank_order

# None / "identity": raw scores (a cross-encoder's logits, a bi-encoder's cosines); "sigmoid": into (0, 1).
ACTIVATIONS = (None, "identity", "sigmoid")
Activation = str | Callable | None


def as_pairs(pairs) -> tuple[list[tuple[str, str]], bool]:
    """`(list of (query, document) pairs, whether one pair was given)`.

    One pair is a tuple or list of two strings (as sentence-transformers takes it); anything else is an iterable of
    pairs, a generator included (read once, here).
    """
    if isinstance(pairs, str | bytes):
        raise TypeError(f"pairs must be one (query, document) pair or an iterable of pairs, got the string {pairs!r}")
    if isinstance(pairs, tuple | list) and len(pairs) == 2 and all(isinstance(t, str) for t in pairs):
        return [(pairs[0], pairs[1])], True
    if not isinstance(pairs, Iterable):
        raise TypeError(f"pairs must be one (query, document) pair or an iterable of pairs, got {type(pairs).__name__}")
    pairs = list(pairs)
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2 \
                or not all(isinstance(t, str) for t in pair):
            raise TypeError(f"pairs[{i}] must be a (query, document) tuple of two strings, got {pair!r}")
    return [(q, d) for q, d in pairs], False


def check_activation(activation: Activation) -> None:
    """Refuse an unknown activation before any scoring is done."""
    if not (activation in ACTIVATIONS or callable(activation)):
        raise ValueError(f"activation must be one of {ACTIVATIONS} or a callable on a tensor of scores, "
                         f"got {activation!r}")


def apply_activation(scores: np.ndarray, activation: Activation) -> np.ndarray:
    """`scores` `float32 [N]` through `activation`: a name of `ACTIVATIONS`, or a callable taking the scores as a
    float32 tensor `[N]` (e.g. `torch.sigmoid`, `torch.nn.Tanh()`) and returning `N` values."""
    check_activation(activation)
    if activation is None or activation == "identity":
        return scores
    if activation == "sigmoid":
        return torch.sigmoid(torch.from_numpy(scores)).numpy()
    with torch.no_grad():
        out = activation(torch.from_numpy(scores.copy()))  # a copy: an in-place callable must not touch `scores`
    out = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=np.float32)
    if out.shape != scores.shape:
        raise ValueError(f"activation returned shape {out.shape} for scores of shape {scores.shape}")
    return out


def check_rank_inputs(query, documents, doc_ids, top_k) -> tuple[list[str], list | None]:
    """`(documents, doc_ids)` as lists, after checking them: ids unique, one per document, all strings or all
    integers (they break ties, so they must compare with each other)."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if isinstance(documents, str):
        raise TypeError("documents must be a list of strings, got one string")
    documents = list(documents)
    for i, document in enumerate(documents):
        if not isinstance(document, str):
            raise TypeError(f"documents[{i}] must be a string, got {type(document).__name__}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be None or an integer >= 0, got {top_k!r}")
    if doc_ids is None:
        return documents, None
    doc_ids = list(doc_ids)
    if len(doc_ids) != len(documents):
        raise ValueError(f"{len(doc_ids)} doc_ids for {len(documents)} documents; give one id per document")
    if all(isinstance(d, str) for d in doc_ids):
        pass
    elif not all(isinstance(d, int) and not isinstance(d, bool) for d in doc_ids):
        raise TypeError("doc_ids must be all strings or all integers (they break ties, so they are compared)")
    if len(set(doc_ids)) != len(doc_ids):
        seen, repeated = set(), []
        for d in doc_ids:
            if d in seen:
                repeated.append(d)
            seen.add(d)
        raise ValueError(f"doc_ids must be unique; repeated: {sorted(set(repeated))[:5]}")
    return documents, doc_ids


def ranked_hits(
    scores: np.ndarray,
    documents: list[str],
    top_k: int | None,
    return_documents: bool,
    doc_ids: list | None,
) -> list[dict]:
    """`[{"corpus_id": i, ("doc_id": id), "score": s, ("text": d)}]` best first, by rankface's tie rule with the
    document ids (the positions when no ids are given) breaking ties: the greater id first."""
    order = rank_order(list(range(len(documents))) if doc_ids is None else doc_ids, scores.tolist())[:top_k]
    hits = []
    for i in order:
        hit = {"corpus_id": i}
        if doc_ids is not None:
            hit["doc_id"] = doc_ids[i]
        hit["score"] = float(scores[i])
        if return_documents:
            hit["text"] = documents[i]
        hits.append(hit)
    return hits
