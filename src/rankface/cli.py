"""The `rankface` command: index, search, rerank, train, evaluate, demo, and data/model conversions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rankface.errors import UserError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, also after a command whose own parser would reject it
    argv = [a for a in argv if a != "--debug"]
    parser = argparse.ArgumentParser(prog="rankface", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("index", help="Build a Lucene index from a corpus.jsonl or docs TSV.")
    p.add_argument("--corpus", required=True, help="corpus.jsonl ({id, contents} or BEIR) or docs TSV")
    p.add_argument("--index", required=True, help="index folder to create")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing index built by `rankface index` (any other folder is refused)")
    p.set_defaults(handler=_index)

    p = commands.add_parser("search", help="BM25 search of a topics file; writes a TREC run.")
    _first_stage_arguments(p)
    p.add_argument("--output", required=True, help="TREC run to write")
    p.set_defaults(handler=_search)

    p = commands.add_parser("rerank", help="BM25 (or a given run) first stage, then rerank with a model.")
    _first_stage_arguments(p)
    p.add_argument("--model", required=True, help="reranker folder or Hub id")
    _encoder_arguments(p)
    p.add_argument("--first-stage-run", help="rerank this TREC run instead of searching the index")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32", "int8"), default="auto",
                   help="auto: bf16 where the CPU/GPU runs it natively, else fp32 (see `rankface env`); int8: "
                        "dynamic int8 quantization, CPU only")
    p.add_argument("--backend", choices=("auto", "torch", "onnx", "onnx-opt", "onnx-int8", "openvino", "openvino-int8"),
                   default="auto",
                   help="engine on CPU: auto (default) runs the fastest path that kept R2's ranking fidelity on this "
                        "CPU class (rankface.inference.backends.AUTO; torch on GPU, or with --precision other than "
                        "auto); the others by name (onnx*: ONNX Runtime; openvino*: the [openvino] extra)")
    p.add_argument("--output", required=True, help="TREC run to write")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_rerank)

    p = commands.add_parser("train", help="Train a reranker (recipes/train_reranker.py); see `rankface train --help`.",
                            add_help=False)
    p.set_defaults(handler=_train)

    p = commands.add_parser("evaluate", help="Evaluate TREC runs against qrels (nDCG@10, RR@10, R@100, AP).")
    p.add_argument("--qrels", required=True)
    p.add_argument("runs", nargs="+", help="one or more TREC run files")
    p.add_argument("--measures", nargs="+", default=["nDCG@10", "RR@10", "R@100", "AP"])
    p.add_argument("--rr-min-grade", type=int, default=1, help="lowest grade counted relevant by RR")
    p.add_argument("--per-query", action="store_true",
                   help="also show every qrels query's value (one table per measure, one column per run)")
    p.add_argument("--significance", action="store_true",
                   help="paired t-test (scipy.stats.ttest_rel over the qrels queries) between every two runs, per "
                        "measure; p-values are not corrected for the number of tests")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown tables")
    p.set_defaults(handler=_evaluate)

    # The demo's own parser is built when `demo` runs: rankface.demo imports the training code.
    p = commands.add_parser("demo", help="The main job: index, BM25, train a reranker, rerank, evaluate.",
                            add_help=False)
    p.set_defaults(handler=_demo)

    p = commands.add_parser("interpolate", help="WiSE-FT: write (1 - alpha) * start + alpha * fine-tuned weights.",
                            add_help=False)
    p.set_defaults(handler=_interpolate)

    p = commands.add_parser("gate", help="Query-domain gate: a query-side model falls back to its start off its "
                                         "training queries' domain.", add_help=False)
    p.set_defaults(handler=_gate)

    p = commands.add_parser("pool-labels", help="Simulate pooled (sparse) labels from dense qrels and a run.",
                            add_help=False)
    p.set_defaults(handler=_pool_labels)

    p = commands.add_parser("convert-mobilefacenet", help="Convert a MobileFaceNet state_dict to a rankface model.",
                            add_help=False)
    p.set_defaults(handler=_convert_mobilefacenet)

    p = commands.add_parser("env", help="Show what decides speed here: CPU class and flags, threads, torch/oneDNN, "
                                        "the precision auto picks.")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(handler=_env)

    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in _OWN_PARSERS:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args, rest) or 0
    except _USER_ERRORS as err:
        if debug:
            raise
        return _report_error(args.command, err)


# Commands that parse their own arguments when they run, so that `rankface --help` imports none of their modules
# (torch, transformers: seconds).
_OWN_PARSERS = ("train", "demo", "interpolate", "gate", "pool-labels", "convert-mobilefacenet")

# Errors that bad input causes (a file, a folder, a setting): one line and exit status 2, the traceback only with
# --debug. Anything else is a fault in rankface and keeps its traceback.
_USER_ERRORS = (ValueError, KeyError, OSError, FloatingPointError, ImportError)


def _report_error(command: str, err: BaseException) -> int:
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)  # KeyError's str() adds quotes
    message = " ".join(str(message).split()) or type(err).__name__
    print(f"rankface {command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
    return 2


def _first_stage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="Lucene index folder (rankface index)")
    p.add_argument("--topics", required=True, help="queries TSV: qid<TAB>text")
    p.add_argument("--hits", type=int, default=100, help="documents per query")
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    p.add_argument("--threads", type=int, default=None,
                   help="BM25 search threads (default 2); in rerank also torch's threads (default: torch's own)")


def _encoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", choices=("cross", "bi"), default=None,
                   help="model kind, checked against the model folder (default: what the folder holds)")
    p.add_argument("--allow-untrained-head", action="store_true",
                   help="score with a cross-encoder whose scoring head is new and random (never for real results)")


def _index(args, _rest) -> None:
    from rankface.retrieval.lucene import build_index, is_rankface_index

    try:
        print(build_index(args.corpus, args.index, threads=args.threads, overwrite=args.overwrite))
    except FileExistsError:
        if is_rankface_index(args.index):
            raise UserError(f"index folder {args.index} already exists and is not empty; add --overwrite to replace "
                            "it") from None
        raise UserError(f"{args.index} already exists, is not empty and is not an index built by `rankface index`; "
                        "choose a new or empty index folder") from None


def _open_index(index: str, k1: float = 0.9, b: float = 0.4):
    from rankface.retrieval.lucene import Bm25Retriever

    try:
        return Bm25Retriever(index, k1=k1, b=b)
    except FileNotFoundError:
        raise UserError(f"no Lucene index at {index}; build one with `rankface index --corpus CORPUS --index "
                        f"{index}`") from None


def _read_topics(path: str) -> dict[str, str]:
    """The queries of `--topics`; an empty file is an error (it would write an empty run and exit 0)."""
    from rankface.data.ir import read_queries_tsv

    queries = read_queries_tsv(path)
    if not queries:
        raise UserError(f"{path}: no queries (the file is empty); expected `qid<TAB>text` lines")
    return queries


def _read_first_stage_run(path: str, queries: dict[str, str], topics: str) -> dict:
    """`--first-stage-run` as hits: an empty run is an error, a run that ranks only some topics is a warning."""
    from rankface.retrieval.pipeline import run_to_hits
    from rankface.retrieval.trec import RUN_FORMAT, read_run

    run = read_run(path)
    if not any(run.values()):
        raise UserError(f"{path}: the first-stage run is empty; expected lines of {RUN_FORMAT}")
    unknown = [qid for qid in run if qid not in queries]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} of its {len(run)} queries are not in {topics} (e.g. "
                        f"{', '.join(unknown[:5])}); expected the run of these topics")
    missing = [qid for qid in queries if not run.get(qid)]
    if missing:
        print(f"warning: {path}: ranks {len(queries) - len(missing)} of the {len(queries)} queries of {topics}; "
              f"{len(missing)} get an empty ranking (e.g. {', '.join(missing[:5])})", file=sys.stderr)
    hits = run_to_hits(run)
    return {qid: hits.get(qid, []) for qid in queries}


def _bm25_hits(args):
    queries = _read_topics(args.topics)
    retriever = _open_index(args.index, k1=args.k1, b=args.b)
    return queries, retriever, retriever.batch_search(queries, k=args.hits, threads=args.threads or 2)


def _search(args, _rest) -> None:
    from rankface.retrieval.pipeline import hits_to_run
    from rankface.retrieval.trec import write_run

    _, _, hits = _bm25_hits(args)
    write_run(args.output, hits_to_run(hits, first_stage=True), tag="bm25")
    print(f"wrote {args.output}")


def _rerank(args, _rest) -> None:
    from rankface.retrieval.pipeline import hits_to_run, rerank
    from rankface.retrieval.trec import write_run

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)  # the model's threads, not only BM25's
    if args.quiet:
        _silence_progress_bars()
    model = _load_scorer(args)  # first: a wrong --model or --encoder fails before the first stage runs
    engine = _engine_note(args.backend, args.precision, model.device)  # (a contradictory pair fails here too)
    if not args.quiet:
        print(f"scoring with the {type(model).__name__} in {args.model}, {engine}", file=sys.stderr)
    if args.first_stage_run:
        queries = _read_topics(args.topics)
        hits = _read_first_stage_run(args.first_stage_run, queries, args.topics)
        retriever = _open_index(args.index)
    else:
        queries, retriever, hits = _bm25_hits(args)
    reranked = rerank(hits, queries, retriever.doc_text, model, top_k=args.hits, batch_size=args.batch_size,
                      show_progress_bar=not args.quiet,
                      predict_kwargs={"precision": args.precision, "backend": args.backend})
    write_run(args.output, hits_to_run(reranked), tag="rankface")
    print(f"wrote {args.output}")


def _load_scorer(args):
    """The cross- or bi-encoder in `--model` (a CET pair's relevance model), checked against `--encoder` if given."""
    from rankface.models.loader import load_text_scorer

    return load_text_scorer(args.model, args.encoder, allow_untrained_head=args.allow_untrained_head, wording="cli")


def _precision_note(requested: str, device) -> str:
    """`precision bf16 (auto on cpu)`: what `predict(precision=requested)` runs on `device` (auto picks bf16 only
    where the hardware runs it natively, so the scores of two machines can differ by ~1e-3)."""
    from rankface.models._text import resolve_precision

    used = resolve_precision(requested, device)
    return f"precision {used}" + (f" (auto on {device.type})" if requested == "auto" else "")


def _engine_note(backend: str, precision: str, device) -> str:
    """`backend openvino (auto on cpu)` or, on the PyTorch path, its precision note."""
    from rankface.inference.backends import resolve_engine

    try:
        used = resolve_engine(backend, precision, device)
    except (ValueError, ImportError) as error:
        raise UserError(f"--backend {backend} --precision {precision}: {error}") from None
    if used == "torch":
        return "backend torch, " + _precision_note(precision, device)
    return f"backend {used}" + (f" (auto on {device.type})" if backend == "auto" else "")


def _silence_progress_bars() -> None:
    """--quiet: no progress bars from transformers (weight loading), huggingface_hub (downloads) or datasets, in
    this process and in the processes it starts; warnings and errors still show."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # read when datasets is imported (not needed here)
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def _train(_args, rest) -> int | None:
    from rankface.training.arguments import parse_training_args

    settings = parse_training_args(rest, prog="rankface train")  # before the loop's imports: --help stays quick
    if settings.quiet:
        _silence_progress_bars()
    from rankface.training.loop import train
    from rankface.training.steps import TrainingInterrupted

    try:
        train(settings)
    except TrainingInterrupted as stop:  # Ctrl-C: one line saying where the run stands and how to go on
        if stop.main_process:
            print(f"rankface train: {stop.describe(stop.resume_command(['rankface', 'train'], rest))}", file=sys.stderr)
        return 130


def _evaluate(args, _rest) -> None:
    from rankface.evaluation import ranking
    from rankface.retrieval.trec import QRELS_FORMAT, read_qrels, read_run

    if args.significance and len(args.runs) < 2:
        raise UserError("--significance compares runs: give two or more run files")
    measures = list(dict.fromkeys(args.measures))
    qrels = read_qrels(args.qrels)
    if not qrels:
        raise UserError(f"{args.qrels}: no judgments (the file is empty); expected lines of {QRELS_FORMAT}")
    rows = {}
    for label, path in _run_labels(args.runs).items():
        run = read_run(path)
        if not any(docs for qid, docs in run.items() if qid in qrels):
            example = next(iter(run), None)
            raise UserError(f"{path}: no ranking for any query of {args.qrels}" + (
                f" (its first query id is {example!r}; the qrels' is {next(iter(qrels))!r})" if example is not None
                else " (the run is empty)"))
        rows[label] = evaluation = ranking.evaluate(run, qrels, measures, args.rr_min_grade)
        missing = evaluation.missing_queries
        if missing:
            print(f"warning: {path}: {len(missing)} of {evaluation.num_queries} queries of {args.qrels} have no "
                  f"ranking and score 0 (e.g. {', '.join(missing[:5])})", file=sys.stderr)
        unjudged = [qid for qid in run if qid not in qrels]
        if unjudged:  # trec_eval ignores them too; often a sign of the wrong qrels (another split)
            print(f"warning: {path}: {len(unjudged)} of its {len(run)} queries are not in {args.qrels} and are "
                  f"ignored (e.g. {', '.join(unjudged[:5])})", file=sys.stderr)
    comparisons = ranking.compare_runs(rows, measures) if args.significance else []
    if args.json:
        summary = ranking.evaluations_to_json(rows, measures, per_query=args.per_query, comparisons=comparisons)
        print(json.dumps({"qrels": args.qrels, "runs": _run_labels(args.runs), **summary}, indent=2))
        return
    sections = [ranking.format_table(rows, measures)]
    if args.per_query:
        sections.append(ranking.format_per_query(rows, measures))
    if comparisons:
        sections.append(ranking.format_comparisons(comparisons))
    print("\n\n".join(sections))


def _run_labels(paths: Sequence[str]) -> dict[str, str]:
    """`{label: path}`: each run's file name, or as many trailing folders as make the labels distinct."""
    if len(set(map(os.path.normpath, paths))) < len(paths):
        raise UserError(f"a run file is given twice: {' '.join(paths)}")
    parts = [Path(os.path.normpath(p)).parts for p in paths]
    for depth in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(ps[-depth:]) for ps in parts]
        if len(set(labels)) == len(labels):
            return dict(zip(labels, paths, strict=True))
    return {os.path.normpath(p): p for p in paths}


def _demo(_args, rest) -> int:
    from rankface.demo import add_demo_arguments, run_demo

    parser = argparse.ArgumentParser(prog="rankface demo",
                                     description="The main job: index, BM25, train a reranker, rerank, evaluate.")
    add_demo_arguments(parser)
    args = parser.parse_args(rest)
    if args.quiet:
        _silence_progress_bars()
    else:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where the demo's models load
        print(f"reranking with {_precision_note('auto', device)}", file=sys.stderr)
    return run_demo(args)


def _interpolate(_args, rest) -> int:
    from rankface.training.robust import add_interpolate_arguments

    parser = argparse.ArgumentParser(prog="rankface interpolate",
                                     description="WiSE-FT: write (1 - alpha) * start + alpha * fine-tuned weights.")
    add_interpolate_arguments(parser)  # sets the handler
    args = parser.parse_args(rest)
    return args.handler(args, [])


def _gate(_args, rest) -> int:
    from rankface.training.robust import add_gate_arguments

    parser = argparse.ArgumentParser(prog="rankface gate", description=(
        "Write a query-side bi-encoder that uses its trained query tower on queries like its training queries and "
        "its starting tower on the others (models/bi_encoder/domain_gate.py)."))
    add_gate_arguments(parser)  # sets the handler
    args = parser.parse_args(rest)
    return args.handler(args, [])


def _pool_labels(_args, rest) -> int:
    from rankface.data.mining import pooled_labels_main

    return pooled_labels_main(rest)


def _convert_mobilefacenet(_args, rest) -> int:
    from rankface.models.mobilefacenet.convert import main as convert_main

    return convert_main(rest)


def _env(args, _rest) -> int:
    from rankface.env import main as env_main

    return env_main(["--json"] if args.json else [])


if __name__ == "__main__":
    sys.exit(main())
