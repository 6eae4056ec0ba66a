"""Protocol R2 (../shared/docs/benchmarks.md): rerank throughput of rankface against sentence-transformers.

The same MiniLM-L6 reranker checkpoint and the same NFCorpus BM25 top-100 (query, document) pairs are scored, in
one process with one thread count, by:

- `st-fp32`: `sentence_transformers.CrossEncoder(folder).predict` (its defaults: fp32, raw logits requested);
- `rankface-fp32`: `rankface CrossEncoder.predict(precision="fp32")`;
- `rankface-bf16`: `precision="bf16"` (a cached bf16 copy of the weights);
- `rankface-default`: `precision="auto"` (bf16 where the CPU/GPU runs it natively, else fp32; not scored again when
  it resolves to one of the two above).

The checkpoint is the MiniLM weights with a new one-logit head, saved once by rankface with a fixed seed and loaded
from that folder by both libraries, so both score with identical weights. Reported: pairs/s, speedups over
sentence-transformers, max |score difference| in fp32, nDCG@10 of each reranking (and of BM25), the matmul peak
(2048^2, bf16 and fp32, same threads) and the share of it achieved, counting the model's matmul FLOPs over the real
padded batches that rankface ran.

    python benchmarks/rerank_throughput.py --quick     # 2,000 pairs (the first test queries, BM25 top-100)
    python benchmarks/rerank_throughput.py             # all 32,500 test pairs

Scores and timings per system are saved under benchmarks/results/rerank_throughput/ so a rerun skips what is done
(`--force` recomputes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from rankface.paths import minilm_path, shared_dir
from rankface.utils.io import atomic_write, write_json
from rankface.utils.ties import ranked

RESULTS = Path(__file__).resolve().parent / "results" / "rerank_throughput"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="score 2,000 pairs instead of the whole split")
    parser.add_argument("--collection", default=str(shared_dir() / "data" / "ir" / "nfcorpus"),
                        help="local collection folder or ir_datasets id (default: the shared NFCorpus)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    parser.add_argument("--max-pairs", type=int, default=None, help="score only this many pairs (quick: 2,000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256, help="pair length in tokens, both libraries")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new scoring head")
    parser.add_argument("--model", default=None,
                        help="a trained reranker folder to use instead of the MiniLM weights with a seeded new head")
    parser.add_argument("--force", action="store_true", help="recompute systems already saved")
    args = parser.parse_args(argv)
    if args.quick and args.max_pairs is None:
        args.max_pairs = 2000
    return args


# ------------------------------------------------------------------------------------------------ data
def load_pairs(args: argparse.Namespace):
    """BM25 top-`depth` pairs of the split, in query-file order, cut at `max_pairs`.

    Returns:
        `(pairs, keys, qrels, bm25)`: pairs `[(query, doc)]`, keys `[(qid, docid)]` aligned with them, the qrels of
        the queries covered, and the BM25 run restricted to the same pairs.
    """
    from rankface.data.ir import load_collection
    from rankface.retrieval.first_stage import bm25_run

    collection = load_collection(args.collection)
    queries = collection.queries(args.split)
    qrels = collection.qrels(args.split)
    run = bm25_run(collection, args.split, depth=args.depth)
    docs = collection.docs()
    keys = [(qid, docid) for qid in queries if qid in qrels
            for docid, _ in ranked(run[qid])]
    keys = keys[: args.max_pairs] if args.max_pairs else keys
    covered = {qid for qid, _ in keys}
    pairs = [(queries[qid], docs[docid]) for qid, docid in keys]
    bm25 = {qid: {} for qid in covered}
    for qid, docid in keys:
        bm25[qid][docid] = run[qid][docid]
    return pairs, keys, {qid: qrels[qid] for qid in covered}, bm25


def make_checkpoint(args: argparse.Namespace) -> Path:
    """The MiniLM weights with a seeded new head, saved by rankface; both libraries load this folder."""
    from rankface.models.cross_encoder import CrossEncoder

    if args.model:
        return Path(args.model)
    folder = RESULTS / f"checkpoint-seed{args.seed}-len{args.max_length}"
    if not (folder / "config.json").is_file():
        torch.manual_seed(args.seed)
        # A fresh seeded head on purpose: this benchmark times scoring, the scores' quality does not matter.
        CrossEncoder.from_pretrained(minilm_path(), max_length=args.max_length, device="cpu",
                                     allow_untrained_head=True).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------------ measurements
def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul over `repeats` timed runs (after one warm-up), current threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def padded_flops(model, lengths: list[int], batch_size: int) -> float:
    """Matmul FLOPs of the encoder over the batches rankface actually runs (length-sorted, padded per batch).

    Per token and layer: 2 x (weights of the layer's linear maps) + 4 x L x hidden for QK^T and AV, where L is the
    padded length of its batch; plus the pooler and the classifier on the [CLS] token of each pair.
    """
    from rankface.models._text import length_sorted_batches

    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    hidden = model.config.hidden_size
    linear_per_layer = sum(m.in_features * m.out_features for m in layers[0].modules() if isinstance(m, torch.nn.Linear))
    head = sum(m.in_features * m.out_features for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ("pooler" in name or "classifier" in name))
    total = 0.0
    for index in length_sorted_batches(lengths, batch_size):
        padded = max(lengths[i] for i in index)
        per_token = len(layers) * (2 * linear_per_layer + 4 * padded * hidden)
        total += len(index) * (padded * per_token + 2 * head)
    return total


def score(system: str, folder: Path, pairs: list[tuple[str, str]], args: argparse.Namespace) -> dict:
    """Scores and wall time of one system over all pairs (after a warm-up batch), saved for later reruns."""
    path = RESULTS / f"{run_key(args)}" / f"{system}.json"
    if path.is_file() and not args.force:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved["scores"] = np.asarray(saved["scores"], dtype=np.float32)
        saved["cached"] = True
        return saved
    if system == "st-fp32":
        from sentence_transformers import CrossEncoder as STCrossEncoder

        model = STCrossEncoder(str(folder), max_length=args.max_length, device="cpu")
        identity = torch.nn.Identity()  # raw logits, as rankface returns (ST applies a sigmoid by default)

        def predict(batch):
            return model.predict(batch, batch_size=args.batch_size, show_progress_bar=False, activation_fn=identity)
    else:
        from rankface.models.cross_encoder import CrossEncoder

        model = CrossEncoder.from_pretrained(folder, max_length=args.max_length, device="cpu")
        precision = system.split("-", 1)[1].replace("default", "auto")

        def predict(batch):
            return model.predict(batch, batch_size=args.batch_size, show_progress_bar=False, precision=precision)

    predict(pairs[: args.batch_size])  # warm-up: first-call allocations and oneDNN kernel selection
    start = time.perf_counter()
    scores = np.asarray(predict(pairs), dtype=np.float32)
    seconds = time.perf_counter() - start
    result = {"system": system, "seconds": seconds, "pairs": len(pairs), "threads": torch.get_num_threads(),
              "scores": scores.tolist()}
    write_json(path, result)
    return {**result, "scores": scores, "cached": False}


def run_key(args: argparse.Namespace) -> str:
    settings = [args.collection, args.split, args.depth, args.max_pairs, args.batch_size, args.max_length,
                args.seed, torch.get_num_threads()] + ([str(Path(args.model).resolve())] if args.model else [])
    mode = "quick" if args.quick else "full"
    return f"{mode}-{hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]}"


def ndcg10(keys: list[tuple[str, str]], scores: np.ndarray, qrels: dict) -> float:
    from rankface.evaluation.ranking import evaluate

    run: dict[str, dict[str, float]] = {}
    for (qid, docid), value in zip(keys, scores, strict=True):
        run.setdefault(qid, {})[docid] = float(value)
    return evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from rankface.models._text import resolve_precision

    pairs, keys, qrels, bm25 = load_pairs(args)
    folder = make_checkpoint(args)
    default = resolve_precision("auto", torch.device("cpu"))
    systems = ["st-fp32", "rankface-fp32", "rankface-bf16"]
    results = {name: score(name, folder, pairs, args) for name in systems}
    results["rankface-default"] = results[f"rankface-{default}"]  # "auto" is one of the two precisions

    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    from rankface.models.cross_encoder import CrossEncoder

    reranker = CrossEncoder.from_pretrained(folder, max_length=args.max_length, device="cpu")
    lengths = [len(ids) for ids in reranker._tokenize([p[0] for p in pairs], [p[1] for p in pairs])["input_ids"]]
    flops = padded_flops(reranker.model, lengths, args.batch_size)

    st = results["st-fp32"]
    rows = []
    for name in ["st-fp32", "rankface-fp32", "rankface-bf16"]:
        r = results[name]
        precision = name.split("-")[1]
        rate = r["pairs"] / r["seconds"]
        achieved = flops / r["seconds"] / 1e9 if name.startswith("rankface") else None
        r.update(rate=rate, speedup=st["seconds"] / r["seconds"], ndcg=ndcg10(keys, r["scores"], qrels),
                 max_diff=float(np.max(np.abs(r["scores"] - st["scores"]))),
                 share=achieved / peak[precision] if achieved else None, achieved=achieved)
        rows.append((name + (" (default)" if name == f"rankface-{default}" else "") + (" [cached]" if r["cached"]
                     else ""), f"{rate:.1f}", f"{r['speedup']:.2f}x", f"{r['ndcg']:.4f}", f"{r['max_diff']:.2e}",
                     f"{achieved:.1f}" if achieved else "-", f"{r['share']:.1%}" if achieved else "-"))
    bm25_ndcg = ndcg10(keys, np.asarray([bm25[q][d] for q, d in keys]), qrels)

    mode = "quick" if args.quick else "full"
    print(f"\nR2 rerank throughput ({mode}): {len(pairs)} pairs, {len(qrels)} queries of {args.split}, BM25 top-"
          f"{args.depth}, batch {args.batch_size}, max_length {args.max_length}, {torch.get_num_threads()} threads; "
          f"matmul peak 2048^2: fp32 {peak['fp32']:.1f}, bf16 {peak['bf16']:.1f} GFLOP/s; model "
          f"{flops / len(pairs) / 1e9:.2f} GFLOP/pair (padded, mean length {np.mean(lengths):.1f} tokens)\n")
    header = ("system", "pairs/s", "vs ST", "nDCG@10", "max abs diff vs ST", "GFLOP/s", "share of peak")
    table = [header, ("---",) * len(header), *rows, ("BM25 (first stage)", "-", "-", f"{bm25_ndcg:.4f}", "-", "-", "-")]
    print("\n".join("| " + " | ".join(row) + " |" for row in table))

    d = results["rankface-default"]
    summary = {
        "speedup_default": d["speedup"],
        "speedup_fp32": results["rankface-fp32"]["speedup"],
        "max_abs_diff_fp32": results["rankface-fp32"]["max_diff"],
        "ndcg10_delta_bf16": results["rankface-bf16"]["ndcg"] - results["rankface-fp32"]["ndcg"],
        "peak_share": d["share"],
        "mode": mode,
    }
    with atomic_write(RESULTS / run_key(args) / "summary.json") as handle:
        json.dump({**summary, "peak_gflops": peak, "flops": flops, "pairs": len(pairs), "bm25_ndcg10": bm25_ndcg,
                   "ndcg10": {n: results[n]["ndcg"] for n in systems}}, handle, indent=2)
    print("\nRESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
