"""Cheap training modes compared at an equal wall-clock budget: full, partial, query-side (and its variants), bf16.

The same MiniLM dual encoder, data and objective for every mode (NFCorpus train queries with their best-graded
positive, 7 BM25 negatives from ranks 1-100, pairwise softmax loss, 16 queries per step, lr 1e-4 (5e-5 for the
modes that move every layer), length 128). Each mode's step cost is measured first (a short run of 2 and one of
10 steps: the difference over 8 steps, so loading and caching are not counted); it then trains for as many steps
as fit in `--budget-seconds` and reranks the BM25 top-100 of the 325 test queries. Paired t-tests over queries
against the zero-shot starting model.

Each mode's result is a JSON file under benchmarks/results/training_modes/<budget>/, written when it is done; a
rerun skips it. `--report-only` prints the table from what is saved.

    python benchmarks/training_modes.py                       # 10 minutes of training per mode
    python benchmarks/training_modes.py --budget-seconds 300  # 5 minutes per mode
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from rankface.paths import shared_dir
from rankface.utils.io import atomic_write, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "training_modes"
BASE = {
    "encoder": "bi", "model_name_or_path": "minilm", "max_length": 128, "method": "plain", "loss": "pairwise",
    "num_negatives": 7, "negatives_from_rank": 1, "negatives_to_rank": 100, "positives": "top",
    "exclude_queries_in": ["test", "dev"], "batch_size": 16, "warmup_ratio": 0.1, "eval_split": None,
    "mixed_precision": "no", "quiet": True,
}
MODES = {  # name: (settings, what it is)
    "full": ({"training_mode": "full", "learning_rate": 5e-5}, "every weight, both roles share one tower"),
    "partial-3": ({"training_mode": "partial", "frozen_layers": 3, "learning_rate": 5e-5},
                  "embeddings and layers 1-3 frozen"),
    "query-side": ({"training_mode": "query_side", "learning_rate": 1e-4}, "document tower frozen, corpus cached"),
    "query-side+frozen-emb": ({"training_mode": "query_side", "freeze_embeddings": True, "learning_rate": 1e-4},
                              "query-side, token embeddings frozen too"),
    "query-side+bf16": ({"training_mode": "query_side", "freeze_embeddings": True, "learning_rate": 1e-4,
                         "mixed_precision": "bf16"}, "query-side+frozen-emb with bf16 autocast (native bf16 only)"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", default=str(shared_dir() / "data" / "ir" / "nfcorpus"))
    parser.add_argument("--budget-seconds", type=float, default=600.0, help="training time per mode")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--cache-dir", default="~/.cache/rankface")
    parser.add_argument("--work-dir", default="runs/training_modes", help="models (deleted after scoring)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    args.out = RESULTS / f"budget{int(args.budget_seconds)}s"
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def native_bf16() -> bool:
    import torch

    from rankface.models._text import resolve_precision

    return resolve_precision("auto", torch.device("cpu")) == "bf16"


def timed_training(settings: dict, steps: int, output: Path) -> float:
    from rankface.training import train
    from rankface.training.arguments import RerankerTrainingArguments

    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    train(RerankerTrainingArguments(**settings | {"max_steps": steps, "output_dir": str(output)}))
    return time.perf_counter() - started


def rerank_test(args, model_path: str, training_mode: str):
    from rankface.data.ir import load_collection
    from rankface.evaluation.ranking import evaluate
    from rankface.retrieval.first_stage import bm25_run
    from rankface.training.arguments import RerankerTrainingArguments
    from rankface.training.loop import load_text_model, rerank_candidates

    collection = load_collection(args.collection)
    docs, queries, qrels = collection.docs(), collection.queries("test"), collection.qrels("test")
    candidates = bm25_run(collection, "test", depth=100, cache_dir=args.cache_dir)
    cached = "query_side" if training_mode == "query_side" or model_path == "minilm" else "full"
    model = load_text_model(RerankerTrainingArguments(
        encoder="bi", model_name_or_path=model_path, max_length=128, training_mode=cached,
        cache_dir=args.cache_dir), docs)
    run = rerank_candidates(model, queries, candidates, docs, 64, quiet=True)
    ev = evaluate(run, qrels, ("nDCG@10", "RR@10"))
    return {"aggregate": ev.aggregate, "per_query": ev.per_query}


def run_mode(args, name: str) -> dict | None:
    path = args.out / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    overrides, _ = MODES[name]
    if overrides.get("mixed_precision") == "bf16" and not native_bf16():
        log(f"{name}: skipped, this CPU has no native bf16 (bf16 there is emulated and slower)")
        return None
    settings = BASE | {"collection": args.collection, "cache_dir": args.cache_dir} | overrides
    work = Path(args.work_dir) / name
    # Step cost: the difference between a 10-step and a 2-step run, so that loading and caching do not count.
    short = timed_training(settings, 2, work)
    long = timed_training(settings, 10, work)
    step_seconds = max(1e-3, (long - short) / 8)
    steps = max(1, int(args.budget_seconds / step_seconds))
    log(f"{name}: {step_seconds:.3f} s per step -> {steps} steps in {args.budget_seconds:.0f} s")
    train_seconds = timed_training(settings, steps, work)
    scored = rerank_test(args, str(work / "model"), settings["training_mode"])
    shutil.rmtree(work, ignore_errors=True)
    record = {"mode": name, "settings": settings, "step_seconds": step_seconds, "steps": steps,
              "train_seconds_total": train_seconds, "test": scored, "cpu": cpu_class()}
    write_json(path, record)
    log(f"{name}: test nDCG@10 {scored['aggregate']['nDCG@10']:.4f}")
    return record


def cpu_class() -> dict:
    try:
        from _common import cpu_class as measured  # benchmarks/_common.py, when present

        return measured()
    except ImportError:
        import torch

        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
        return {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")} | {
            "threads": torch.get_num_threads()}


def report(args) -> str:
    from rankface.evaluation.ranking import Evaluation, paired_ttest

    zero_path = args.out / "zero-shot.json"
    zero = json.loads(zero_path.read_text()) if zero_path.is_file() else None
    rows = ["| mode | what is trained | s / step | steps in budget | test nDCG@10 | Δ vs zero-shot | p |",
            "|---|---|---:|---:|---:|---:|---:|"]
    if zero:
        rows.append(f"| zero-shot (start) | – | – | 0 | {zero['test']['aggregate']['nDCG@10']:.4f} | | |")
    result = {}
    full_step = None
    for name, (_, what) in MODES.items():
        path = args.out / f"{name}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        full_step = rec["step_seconds"] if name == "full" else full_step
        ndcg = rec["test"]["aggregate"]["nDCG@10"]
        delta, p = "", ""
        if zero:
            a = Evaluation(aggregate=rec["test"]["aggregate"], per_query=rec["test"]["per_query"], num_queries=0)
            b = Evaluation(aggregate=zero["test"]["aggregate"], per_query=zero["test"]["per_query"], num_queries=0)
            _, pv = paired_ttest(a, b, "nDCG@10")
            delta, p = f"{ndcg - zero['test']['aggregate']['nDCG@10']:+.4f}", f"{pv:.3g}"
        rows.append(f"| {name} | {what} | {rec['step_seconds']:.3f} | {rec['steps']} | {ndcg:.4f} | {delta} | {p} |")
        key = name.replace("+", "_").replace("-", "_")
        result[f"{key}_ndcg10"] = f"{ndcg:.4f}"
        if full_step:
            result[f"{key}_step_speedup"] = f"{full_step / rec['step_seconds']:.2f}"
    cpu = cpu_class()
    head = (f"## Training modes at an equal budget ({args.budget_seconds:.0f} s of training each; CPU "
            + ", ".join(f"{k}={v}" for k, v in cpu.items()) + ")\n")
    return head + "\n".join(rows) + "\n\nRESULT " + " ".join(f"{k}={v}" for k, v in result.items()) + \
        f" budget_s={args.budget_seconds:.0f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        zero_path = args.out / "zero-shot.json"
        if not zero_path.is_file():
            write_json(zero_path, {"mode": "zero-shot", "test": rerank_test(args, "minilm", "query_side")})
        for name in args.modes:
            run_mode(args, name)
    text = report(args)
    with atomic_write(args.out / "report.md") as handle:
        handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
