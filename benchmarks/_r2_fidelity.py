"""R2's fidelity check: does a fast inference path rank as rankface fp32 does, on real rankers?

Every path reranks the BM25 top-100 of all 325 NFCorpus test queries; against rankface's PyTorch fp32 it reports
per query the overlap of the top 10 (`|top10 ∩ top10_fp32| / min(10, n)`), Kendall's tau-b over the candidates
(the top 100), and the nDCG@10 of both rankings (all 325 qrels queries; the 16 with no BM25 hit count 0 in both).
A path passes, and `auto` may take it, at mean overlap@10 >= 0.95 and |delta nDCG@10| <= 0.005.

Two rankers:
- `encode` (`BiEncoder.encode`, cosine of the query and document embeddings): the demo's trained bi-encoder
  (`rankface demo`'s defaults; NFCorpus test nDCG@10 0.354 against BM25's 0.330; the JSON has the figures);
- `predict` (`CrossEncoder.predict`): R2's cross-encoder checkpoint (MiniLM-L6 + a linear-probe head), unless
  `--cross-model` names a better one. No cross-encoder better than BM25 can be trained on this 2-core machine in a
  session, so the `predict` figures judge int8 on a ranker whose nDCG@10 is below BM25's: the JSON says so.

Paths: `torch-fp32` (the reference), `torch-bf16`, `torch-int8` (rankface's PyTorch precisions), `onnx`,
`onnx-opt`, `onnx-int8@avx2`, `onnx-int8@avx512_vnni` (the two quantisation configs, forced with
`$RANKFACE_QUANT_ISA`; ONNX Runtime's kernels are this CPU's either way), `openvino` (OpenVINO's default precision:
bf16 on this class), `openvino-int8` (NNCF static int8, calibrated on the first documents / queries scored).

Scores are saved per (ranker, path) and block of queries under `benchmarks/results/rerank_throughput/fidelity/`
(`cache/`, git-ignored), so an interrupted run resumes; the summary `fidelity_<ranker>.json` is committed.

    python benchmarks/rerank_throughput.py --fidelity encode        # ~15 min on 1 thread
    python benchmarks/rerank_throughput.py --fidelity predict       # hours on 1 thread: 7 x 32,500 pairs
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from rankface.utils.io import write_json
from rankface.utils.ties import rank_order

FOLDER = Path(__file__).resolve().parent / "results" / "rerank_throughput" / "fidelity"
PATHS = ("torch-fp32", "onnx-int8@avx2", "onnx-int8@avx512_vnni", "torch-bf16", "onnx-opt", "torch-int8", "onnx",
         "openvino", "openvino-int8")
OVERLAP_MIN, NDCG_DELTA_MAX = 0.95, 0.005
BLOCK = 25  # queries per saved block


def split_path(path: str) -> tuple[str, str, str | None]:
    """`(backend, precision, isa)` of a path name."""
    if path.startswith("torch-"):
        return "torch", path.removeprefix("torch-"), None
    backend, _, isa = path.partition("@")
    return backend, "auto", isa or None


def score_path(ranker: str, model, path: str, queries: dict, candidates: dict, docs: dict, out: Path,
               batch_size: int) -> dict[str, dict[str, float]]:
    """Scores `{qid: {docid: score}}` of one path, computed block by block and saved (resumes)."""
    backend, precision, isa = split_path(path)
    if isa:
        os.environ["RANKFACE_QUANT_ISA"] = isa
    else:
        os.environ.pop("RANKFACE_QUANT_ISA", None)
    qids = [q for q in queries if candidates.get(q)]
    if ranker == "encode":  # every distinct document once (3,633 for 325 queries' top-100s), then the cosines
        file = out / f"{ranker}-{path}.json"
        if file.is_file():
            return json.loads(file.read_text(encoding="utf-8"))
        began = time.perf_counter()
        doc_ids = sorted({d for q in qids for d in candidates[q]})
        row = {d: i for i, d in enumerate(doc_ids)}
        d_emb = model.encode_document([docs[d] for d in doc_ids], batch_size, False, precision, backend)
        q_emb = model.encode_query([queries[q] for q in qids], batch_size, False, precision, backend)
        run = {q: {d: float(q_emb[i] @ d_emb[row[d]]) for d in candidates[q]} for i, q in enumerate(qids)}
        write_json(file, run)
        print(f"  {ranker} {path}: {len(doc_ids)} documents, {len(qids)} queries "
              f"({time.perf_counter() - began:.0f} s)", flush=True)
        return run
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(qids), BLOCK):
        block = qids[start:start + BLOCK]
        file = out / f"{ranker}-{path}-{start:04d}.json"
        if file.is_file():
            run.update(json.loads(file.read_text(encoding="utf-8")))
            continue
        began = time.perf_counter()
        keys = [(q, d) for q in block for d in candidates[q]]
        scores = model.predict([(queries[q], docs[d]) for q, d in keys], batch_size=batch_size,
                               show_progress_bar=False, precision=precision, backend=backend)
        part: dict[str, dict[str, float]] = {}
        for (q, d), value in zip(keys, scores, strict=True):
            part.setdefault(q, {})[d] = float(value)
        write_json(file, part)
        run.update(part)
        print(f"  {ranker} {path}: queries {start + 1}-{start + len(block)} of {len(qids)} "
              f"({len(keys)} pairs, {time.perf_counter() - began:.0f} s)", flush=True)
    return run


def compare(reference: dict, run: dict) -> dict[str, dict[str, float]]:
    """Per query: overlap@10 and Kendall's tau-b of `run` against `reference` over the same candidates."""
    from scipy.stats import kendalltau

    out = {}
    for qid, ref in reference.items():
        docs = list(ref)
        if qid not in run or len(docs) < 2:
            continue
        a = [ref[d] for d in docs]
        b = [run[qid][d] for d in docs]
        k = min(10, len(docs))
        top_ref = set(rank_order(docs, a)[:k])
        top_run = set(rank_order(docs, b)[:k])
        tau = kendalltau(a, b).statistic
        out[qid] = {"overlap10": len(top_ref & top_run) / k, "tau": float(tau) if np.isfinite(tau) else 1.0}
    return out


def load(collection_dir: str, split: str = "test", depth: int = 100):
    from rankface.data.ir import load_collection
    from rankface.retrieval.first_stage import bm25_run
    from rankface.utils.ties import ranked

    collection = load_collection(collection_dir)
    queries = collection.queries(split)
    qrels = collection.qrels(split)
    run = bm25_run(collection, split, depth=depth)
    queries = {q: t for q, t in queries.items() if q in qrels}
    candidates = {q: [d for d, _ in ranked(run.get(q, {}))] for q in queries}
    return queries, qrels, candidates, collection.docs()


def run_fidelity(ranker: str, model_dir: str, collection_dir: str, paths: list[str], batch_size: int,
                 model_note: str, max_queries: int | None = None) -> dict:
    """Score every path, compare with `torch-fp32`, save `fidelity_<ranker>[-q<N>].json` and print the table.

    `max_queries` keeps the first N test queries (a partial check: the summary names it; the gate needs all 325).
    """
    from rankface.evaluation.ranking import evaluate

    queries, qrels, candidates, docs = load(collection_dir)
    if max_queries:
        queries = dict(list(queries.items())[:max_queries])
        qrels = {q: qrels[q] for q in queries}
        candidates = {q: candidates[q] for q in queries}
    if ranker == "predict":
        from rankface.models.cross_encoder import CrossEncoder

        model = CrossEncoder.from_pretrained(model_dir, device="cpu")
    else:
        from rankface.models.bi_encoder import BiEncoder

        model = BiEncoder.from_pretrained(model_dir, device="cpu")
    # (git-ignored: results/**/cache/) keyed by the model folder, so another model never reuses these scores
    key = hashlib.sha1(str(Path(model_dir).resolve()).encode()).hexdigest()[:10]
    scores_dir = FOLDER / "cache" / f"{ranker}-{key}"
    scores_dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for path in ["torch-fp32", *[p for p in paths if p != "torch-fp32"]]:
        print(f"{ranker}: {path} ...", flush=True)
        runs[path] = score_path(ranker, model, path, queries, candidates, docs, scores_dir, batch_size)
    os.environ.pop("RANKFACE_QUANT_ISA", None)
    bm25 = {q: {d: -float(i) for i, d in enumerate(c)} for q, c in candidates.items() if c}
    ndcg = {path: evaluate(run, qrels, ["nDCG@10"]) for path, run in runs.items()}
    reference = runs["torch-fp32"]
    result = {"ranker": ranker, "model": model_note, "queries": len(queries),
              "queries_with_candidates": sum(1 for c in candidates.values() if c),
              "pairs": sum(len(c) for c in candidates.values()),
              "bm25_ndcg10": evaluate(bm25, qrels, ["nDCG@10"])["nDCG@10"],
              "gate": {"overlap10_min": OVERLAP_MIN, "ndcg10_delta_max": NDCG_DELTA_MAX}, "paths": {}}
    for path, run in runs.items():
        per_query = compare(reference, run)
        overlap = float(np.mean([v["overlap10"] for v in per_query.values()]))
        tau = float(np.mean([v["tau"] for v in per_query.values()]))
        delta = ndcg[path]["nDCG@10"] - ndcg["torch-fp32"]["nDCG@10"]
        diffs = [abs(run[q][d] - reference[q][d]) for q in reference for d in reference[q]]
        result["paths"][path] = {
            "ndcg10": ndcg[path]["nDCG@10"], "ndcg10_delta": delta, "overlap10": overlap, "kendall_tau": tau,
            "min_overlap10": float(min(v["overlap10"] for v in per_query.values())),
            "max_abs_diff": float(max(diffs)),
            "passes": bool(overlap >= OVERLAP_MIN and abs(delta) <= NDCG_DELTA_MAX),
        }
    result["ranker_beats_bm25"] = bool(result["paths"]["torch-fp32"]["ndcg10"] > result["bm25_ndcg10"])
    result["complete"] = max_queries is None
    summary = FOLDER / f"fidelity_{ranker}{f'-q{max_queries}' if max_queries else ''}.json"
    result["paths"] = {**earlier_paths(summary, result), **result["paths"]}
    write_json(summary, result)
    print_table(result)
    return result


def earlier_paths(summary: Path, result: dict) -> dict:
    """The paths an earlier run of the same ranker judged and this one did not (a run may judge a few paths only).

    They are kept only when that run's reference is this one's: the same queries and pairs, and the same fp32
    nDCG@10 (the demo's bi-encoder is retrained where it is absent, and a retraining in another session gave
    another ranker: 0.3582, then 0.3544)."""
    if not summary.is_file():
        return {}
    earlier = json.loads(summary.read_text(encoding="utf-8"))
    same = (earlier.get("pairs") == result["pairs"] and earlier.get("queries") == result["queries"]
            and abs(earlier["paths"]["torch-fp32"]["ndcg10"] - result["paths"]["torch-fp32"]["ndcg10"]) < 1e-9)
    if not same:
        print(f"{summary.name}: the earlier paths were judged against another reference ranker: dropped")
        return {}
    return {path: r for path, r in earlier["paths"].items() if path not in result["paths"]}


def print_table(result: dict) -> None:
    print(f"\nR2 fidelity, {result['ranker']} ({result['model']}): {result['queries']} queries "
          f"({result['queries_with_candidates']} with BM25 candidates), {result['pairs']} pairs; BM25 nDCG@10 "
          f"{result['bm25_ndcg10']:.4f}; gate overlap@10 >= {OVERLAP_MIN}, |dnDCG@10| <= {NDCG_DELTA_MAX}\n")
    rows = [("path", "nDCG@10", "delta vs fp32", "overlap@10", "min overlap@10", "Kendall tau", "max |diff|",
             "passes")]
    rows.append(("---",) * len(rows[0]))
    for path, r in result["paths"].items():
        rows.append((path, f"{r['ndcg10']:.4f}", f"{r['ndcg10_delta']:+.4f}", f"{r['overlap10']:.3f}",
                     f"{r['min_overlap10']:.2f}", f"{r['kendall_tau']:.3f}", f"{r['max_abs_diff']:.2e}",
                     "yes" if r["passes"] else "no"))
    print("\n".join("| " + " | ".join(r) + " |" for r in rows))


DEMO_BI = Path(__file__).resolve().parent / "results" / "rerank_throughput" / "models" / "demo-bi"


def demo_bi_encoder(log=print) -> Path:
    """The demo's trained bi-encoder, trained here with `rankface demo`'s defaults when absent (~15 min, 1 thread)."""
    import subprocess
    import sys

    model = DEMO_BI / "training" / "model"
    if not (model / "modules.json").is_file():
        log(f"no trained demo bi-encoder at {model}: training one with `rankface demo --output-dir {DEMO_BI}` ...")
        subprocess.run([sys.executable, "-m", "rankface", "demo", "--output-dir", str(DEMO_BI), "--quiet"],
                       check=True)
    return model
