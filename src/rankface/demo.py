"""The main job: index → BM25 top-100 → train a reranker on the train split → rerank the test split → evaluate.

Runs on the shared NFCorpus by default; `--collection` (or `$RANKFACE_COLLECTION`) names any local folder or
ir_datasets id. The training settings come from a YAML file (`--config`); without one, a budget that fits
about 15 minutes on 2 CPU cores (dual encoder), or the cross-encoder when a GPU is present.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from rankface.training.arguments import RerankerTrainingArguments, load_yaml_settings

# What the demo trains when no --config is given. Measured on 2 CPU cores: a cross-encoder started from these
# bi-encoder weights needs thousands of steps (GPU work), a dual encoder improves within a few hundred.
CPU_DEFAULTS = {
    "encoder": "bi",
    "method": "cet",
    # CET's light selection model (an MLP on BM25 rank and score) and weights from the training logits keep the
    # correction nearly free on a CPU; the authors' variant is cet_selection: same, cet_weights_from: eval_forward.
    "cet_selection": "mlp",
    "cet_weights_from": "train_logits",
    "cet_temperature": 10.0,
    "max_length": 128,
    "num_negatives": 7,
    "negatives_from_rank": 1,
    "negatives_to_rank": 100,
    "batch_size": 8,
    "max_steps": 150,
    "learning_rate": 2e-5,
    "warmup_ratio": 0.1,
    "exclude_queries_in": ["test", "dev"],
    "eval_split": None,
}
GPU_DEFAULTS = CPU_DEFAULTS | {
    "encoder": "cross",
    "cet_selection": "same",
    "cet_weights_from": "eval_forward",
    "max_length": 256,
    "batch_size": 32,
    "max_steps": 3000,
    "head_learning_rate": 1e-3,
    "mixed_precision": "bf16",
}


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", default=os.environ.get("RANKFACE_COLLECTION", "nfcorpus"),
                   help="local collection folder or ir_datasets id (default: the shared NFCorpus, or $RANKFACE_COLLECTION)")
    p.add_argument("--config", help="YAML training settings (recipes/configs/*.yaml); default: built-in budget")
    p.add_argument("--encoder", choices=("bi", "cross"), help="override the model kind")
    p.add_argument("--method", choices=("plain", "cet"), help="override the training objective")
    p.add_argument("--max-steps", type=int, help="override the number of training steps")
    p.add_argument("--test-split", default="test")
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates reranked per query")
    p.add_argument("--output-dir", default="runs/demo", help="where runs, the model and results.json go")
    p.add_argument("--quiet", action="store_true")


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from rankface.data.ir import DataUnavailableError, load_collection
    from rankface.evaluation.ranking import evaluate, format_table, paired_ttest
    from rankface.paths import resolve_collection
    from rankface.retrieval.first_stage import bm25_run
    from rankface.retrieval.trec import write_run
    from rankface.training import train
    from rankface.training.loop import load_text_model, rerank_candidates
    from rankface.utils.io import write_json

    spec = resolve_collection(args.collection)
    try:
        collection = load_collection(spec)
        test_queries = collection.queries(args.test_split)
        test_qrels = collection.qrels(args.test_split)
    except (DataUnavailableError, KeyError, FileNotFoundError) as err:
        print(
            f"rankface demo: cannot use the collection {args.collection!r} ({err}).\n"
            "The default is the shared NFCorpus at ../shared/data/ir/nfcorpus. Point the demo at another collection "
            "with --collection PATH (a folder with corpus.jsonl, queries.<split>.tsv, qrels.<split>.txt) or an "
            "ir_datasets id (e.g. --collection beir/nfcorpus on a machine that is online), or set RANKFACE_COLLECTION."
        )
        return 2

    settings = GPU_DEFAULTS if torch.cuda.is_available() else CPU_DEFAULTS
    if args.config:
        settings = load_yaml_settings(args.config)
    overrides = {"encoder": args.encoder, "method": args.method, "max_steps": args.max_steps}
    settings = settings | {k: v for k, v in overrides.items() if v is not None}
    output = Path(args.output_dir)
    train_args = RerankerTrainingArguments(**settings | {
        "collection": spec, "output_dir": str(output / "training"), "quiet": args.quiet,
    })
    print(f"rankface demo on {spec}: {len(test_queries)} {args.test_split} queries; training a "
          f"{train_args.encoder}-encoder ({train_args.method}, {train_args.max_steps} steps)")

    started = time.perf_counter()
    bm25 = bm25_run(collection, args.test_split, depth=args.depth, cache_dir=train_args.cache_dir)
    write_run(output / f"bm25.{args.test_split}.trec", {q: d for q, d in bm25.items() if d}, tag="bm25")
    train(train_args)
    model = load_text_model(dataclasses.replace(train_args, model_name_or_path=str(output / "training" / "model"),
                                                lora_rank=None, num_layers=None))
    reranked = rerank_candidates(model, test_queries, bm25, collection.docs(), 64, args.quiet)
    write_run(output / f"reranked.{args.test_split}.trec", {q: d for q, d in reranked.items() if d}, tag="rankface")

    measures = ("nDCG@10", "RR@10", "R@100")
    rows = {"BM25": evaluate(bm25, test_qrels, measures), f"BM25 >> rankface {train_args.encoder}-encoder":
            evaluate(reranked, test_qrels, measures)}
    table = format_table(rows, measures)
    first, second = rows.values()
    _, p_value = paired_ttest(second, first, "nDCG@10")
    print(f"\n{args.test_split} split of {Path(spec).name}, {len(test_qrels)} queries (top-{args.depth} reranked):\n")
    print(table)
    print(f"\nnDCG@10 difference {second['nDCG@10'] - first['nDCG@10']:+.4f}, paired t-test over queries p = {p_value:.3g}")
    write_json(output / "results.json", {
        "collection": spec, "split": args.test_split, "training": dataclasses.asdict(train_args),
        "metrics": {name: ev.aggregate for name, ev in rows.items()}, "p_ndcg10": p_value, "seconds": time.perf_counter() - started,
    })
    print(f"\nruns, model and results.json in {output}/  ({time.perf_counter() - started:.0f} s)")
    return 0


__all__ = ["add_demo_arguments", "run_demo"]
