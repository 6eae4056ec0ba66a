"""T1's gate sweep (benchmarks/transfer.py --gate-sweep): the query-domain gate's settings on one trained model.

A gate only mixes two query embeddings that do not depend on its settings (the trained tower's and the starting
tower's), so each evaluation's queries and BM25 candidates are embedded once and every grid point is scored from
those embeddings, as `BiEncoder.encode_query` with that gate would score it. The chosen point is then checked
through the real model path (a gated model folder reranking each collection), as a setting of its own.
"""

from __future__ import annotations

import itertools

import numpy as np

MEASURE = "nDCG@10"
GRID = {"k": (1, 5, 20), "threshold": (0.3, 0.35, 0.4, 0.45, 0.5, 0.6), "temperature": (0.02, 0.05)}


def point_name(k: int, threshold: float, temperature: float) -> str:
    return f"k{k}-t{threshold:g}-T{temperature:g}"


def grid_points() -> list[dict]:
    keys = list(GRID)
    return [dict(zip(keys, values)) for values in itertools.product(*GRID.values())]


def embed_evaluations(model_folder, training_queries, train_args, evaluations: dict, depth: int) -> dict:
    """`{"bank": [M, H], evaluation: {"qids", "start", "trained", "candidates", "docs", "qrels"}}` for the
    trained query-side model in `model_folder`: the training queries (the gate's bank) and each evaluation query
    embedded by the starting tower (the document tower), each evaluation query by the trained tower too, and each
    BM25 candidate by the document tower."""
    from rankface.data.ir import load_collection
    from rankface.models.bi_encoder import BiEncoder
    from rankface.paths import resolve_collection
    from rankface.retrieval.first_stage import bm25_run

    model = BiEncoder.from_pretrained(model_folder, device="cpu")
    model.domain_gate = None  # the sweep sets its own

    def encode(texts, tower):
        return model.encode(list(texts), train_args.eval_batch_size, show_progress_bar=False, tower=tower)

    found: dict = {"bank": encode(training_queries, "document")}
    for evaluation, (name, split) in evaluations.items():
        collection = load_collection(resolve_collection(name))
        split = split or collection.default_split
        queries, docs = collection.queries(split), collection.docs()
        candidates = bm25_run(collection, split, depth=depth, cache_dir=train_args.cache_dir)
        qids = list(queries)
        needed = sorted({d for q in qids for d in candidates.get(q, {})})
        found[evaluation] = {
            "qids": qids, "start": encode([queries[q] for q in qids], "document"),
            "trained": encode([queries[q] for q in qids], "query"),
            "candidates": {q: list(candidates.get(q, {})) for q in qids},
            "docs": dict(zip(needed, encode([docs[d] for d in needed], "document"))),
            "qrels": collection.qrels(split),
        }
    return found


def per_query_scores(embedded: dict, query_embeddings: np.ndarray) -> dict:
    """Per-query `MEASURE` of the BM25 candidates reranked by cosine with `query_embeddings`."""
    from rankface.evaluation.ranking import evaluate

    run = {}
    for row, qid in enumerate(embedded["qids"]):
        docs = embedded["candidates"][qid]
        if docs:
            scores = np.stack([embedded["docs"][d] for d in docs]) @ query_embeddings[row]
            run[qid] = dict(zip(docs, scores.astype(float)))
        else:
            run[qid] = {}
    return evaluate(run, embedded["qrels"], (MEASURE,)).per_query[MEASURE]


def sweep(embedded: dict, evaluations) -> dict:
    """`{point name: {"gate": settings, evaluation: {"per_query", "mean_alpha"}}}`, plus `"ungated"` (α = 1)."""
    from rankface.models.bi_encoder.domain_gate import QueryDomainGate

    results = {"ungated": {"gate": None, **{e: {"per_query": per_query_scores(embedded[e], embedded[e]["trained"]),
                                                 "mean_alpha": 1.0} for e in evaluations}}}
    for point in grid_points():
        gate = QueryDomainGate(embedded["bank"], point["threshold"], point["temperature"], point["k"])
        results[point_name(**point)] = {"gate": point, **{
            e: {"per_query": per_query_scores(embedded[e], gate.mix(embedded[e]["start"], embedded[e]["trained"])),
                "mean_alpha": float(gate.weights(embedded[e]["start"]).mean())}
            for e in evaluations}}
    return results


def similarity_percentiles(embedded: dict, evaluations, percentiles=(10, 50, 90)) -> dict:
    """`{k: {evaluation: {percentile: s}}}`: how near each collection's queries are to the training queries, the
    gate's input, for every k of the grid."""
    from rankface.models.bi_encoder.domain_gate import QueryDomainGate

    found = {}
    for k in GRID["k"]:
        gate = QueryDomainGate(embedded["bank"], threshold=0.0, k=k)
        found[str(k)] = {e: {str(q): float(np.percentile(gate.similarity(embedded[e]["start"]), q))
                             for q in percentiles} for e in evaluations}
    return found
