"""R1's runs: train one (system, seed) with `rankface.training.train`, score test and dev, diagnose CET, save the record.

A sibling module of `pooling_bias.py` (the script's folder is on `sys.path`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from _r1_settings import BM25_WINDOW, MEASURES, ORACLE_POOL_QRELS, POOL_DEPTH, Store, log, training_settings
from _r1_sources import Context, clean_bm25_run, clean_strong_run
from _r1_systems import BY_NAME

from rankface.utils.ties import top_k


def load_model(args: argparse.Namespace, path: str = "minilm", encoder: str | None = None,
               corpus: Mapping[str, str] | None = None):
    """A saved (or the starting) model for scoring; a query-side bi-encoder reads its documents from the cache."""
    from rankface.training.arguments import RerankerTrainingArguments
    from rankface.training.loop import load_text_model

    encoder = encoder or args.encoder
    query_side = encoder == "bi" and args.training_mode == "query_side"
    settings = RerankerTrainingArguments(
        encoder=encoder, model_name_or_path=path, num_layers=args.num_layers,
        max_length=args.max_length, training_mode="query_side" if query_side else "full", cache_dir=args.cache_dir,
    )
    model = load_text_model(settings, corpus if query_side else None)
    import torch

    if torch.cuda.is_available():  # score where training ran (the models are built on the CPU)
        model.to("cuda")
    model.eval()
    return model


def score_splits(model, ctx: Context, splits: Sequence[str], train_run_depth: int = 0) -> dict[str, dict]:
    """Rerank each split's BM25 candidates with `model`: `{split: run}`; with `train_run_depth`, also a dense run
    (`"train_dense"`) of every judged train query over the whole corpus (bi-encoders only).

    A bi-encoder embeds the whole corpus once and every split is scored from those embeddings (the same cosines
    `BiEncoder.predict` computes, without re-encoding a document per split); a cross-encoder scores the pairs.
    """
    from rankface.training.loop import rerank_candidates

    out: dict[str, dict] = {}
    if not hasattr(model, "encode_query"):
        for split in splits:
            out[split] = rerank_candidates(model, ctx.queries[split], ctx.candidates[split], ctx.docs,
                                           ctx.args.eval_batch_size, quiet=True)
        return out
    doc_ids = list(ctx.docs)
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    doc_emb = model.encode_document([ctx.docs[d] for d in doc_ids], batch_size=ctx.args.eval_batch_size,
                                    show_progress_bar=False)
    for split in splits:
        qids = list(ctx.candidates[split])
        q_emb = model.encode_query([ctx.queries[split][q] for q in qids], batch_size=ctx.args.eval_batch_size,
                                   show_progress_bar=False)
        run = {}
        for row, q in enumerate(qids):
            cands = list(ctx.candidates[split][q])
            scores = doc_emb[[doc_index[d] for d in cands]] @ q_emb[row] if cands else np.zeros(0)
            run[q] = {d: float(s) for d, s in zip(cands, scores)}
        out[split] = run
    if train_run_depth:
        q_emb = model.encode_query([ctx.queries["train"][q] for q in ctx.all_train_qids],
                                   batch_size=ctx.args.eval_batch_size, show_progress_bar=False)
        sims = q_emb @ doc_emb.T
        out["train_dense"] = {
            q: {doc_ids[j]: float(sims[row, j]) for j in top_k(doc_ids, sims[row], train_run_depth)}
            for row, q in enumerate(ctx.all_train_qids)
        }
    return out


def evaluation_record(run: Mapping, qrels: Mapping) -> dict:
    from rankface.evaluation.ranking import evaluate

    ev = evaluate(run, qrels, measures=MEASURES, rr_min_grade=2)
    return {"aggregate": ev.aggregate, "per_query": ev.per_query, "num_queries": ev.num_queries,
            "missing_queries": ev.missing_queries}


def evaluate_runs(ctx: Context, runs: Mapping[str, Mapping]) -> dict:
    return {
        split: evaluation_record(run, {q: ctx.full_qrels[split][q] for q in ctx.candidates[split]})
        for split, run in runs.items() if split in ("test", "dev")
    }


def training_arguments(args: argparse.Namespace, ctx: Context, system: str, seed: int, output_dir: Path,
                       temperature: float | None = None, source: dict | None = None, num_negatives: int | None = None):
    from rankface.training.arguments import RerankerTrainingArguments

    spec = BY_NAME[system]
    method, negatives = spec.method, spec.negatives
    if negatives == "strong":
        run_path, window = args.out / source["run_file"], source["window"]  # relative to the results folder
    elif negatives == "clean-strong":
        run_path, window = args.out / clean_strong_run(ctx, source), source["window"]
    elif negatives == "clean-bm25":
        run_path, window = clean_bm25_run(ctx), BM25_WINDOW
    else:
        run_path, window = ctx.runs[negatives], BM25_WINDOW
    settings = training_settings(args)
    return RerankerTrainingArguments(
        collection=str(args.collection),
        train_split="train",
        # Test and dev are scored here after training, with per-query values; the dev points during training are
        # the learning curve (nothing is selected on them).
        eval_split="dev" if args.eval_steps else None,
        eval_steps=args.eval_steps,
        eval_max_queries=args.dev_max_queries,
        train_qrels=str({"oracle": ctx.oracle_qrels_path, "oracle-pool": ctx.oracle_qrels_path.parent / ORACLE_POOL_QRELS
                         }.get(negatives, ctx.pooled_qrels_path)),
        negatives_run=str(run_path),
        num_negatives=num_negatives or args.num_negatives,
        negatives_from_rank=1,
        negatives_to_rank=window,
        positives="all" if negatives.startswith("oracle") else "top",
        exclude_queries_in=["test", "dev"],
        encoder=args.encoder,
        num_layers=args.num_layers,
        max_length=args.max_length,
        training_mode=args.training_mode,
        freeze_embeddings=args.freeze_embeddings,
        method=method,
        loss=settings["loss"],
        cet_temperature=temperature if temperature is not None else args.cet_temperature,
        cet_weights_from=spec.weights_from or args.cet_weights_from,
        cet_selection=spec.selection or args.cet_selection,
        cet_selection_run=str(ctx.runs["bm25"]) if spec.selection_reads_pool else None,
        cet_normalize_weights=spec.normalize_weights,
        cet_oracle_propensity=spec.oracle_propensity or 0.9,
        cet_oracle_pool_depth=POOL_DEPTH,
        learning_rate=args.learning_rate,
        head_learning_rate=settings["head_learning_rate"],
        warmup_ratio=settings["warmup_ratio"],
        max_steps=args.steps,
        batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        seed=seed,
        output_dir=str(output_dir),
        overwrite_output_dir=True,  # a system without a saved record is trained afresh, over any interrupted attempt
        cache_dir=args.cache_dir,
        quiet=True,
    )


def diagnose_cet(ctx: Context, targs, relevance, selection_folder: Path) -> dict:
    """What the trained CET pair makes of its own mined negatives: the coupled weights and the selection model's
    propensity, split into known false negatives (full qrels grade >= 1, unseen in training) and the others.

    A query-side CET pair is two two-tower bi-encoders, scored like the training logits (`scale * cosine`)."""
    from rankface.evaluation.cet_diagnostics import cet_diagnostics
    from rankface.retrieval.trec import read_qrels
    from rankface.training.data import prepare_training_data

    groups = prepare_training_data(targs).groups
    pairs = list(dict.fromkeys((g.qid, d) for g in groups for d in g.negative_docids))
    texts = [(ctx.queries["train"][q], ctx.docs[d]) for q, d in pairs]
    rel = relevance.predict(texts, batch_size=64, show_progress_bar=False) * relevance.scale
    if targs.cet_selection == "mlp":
        sel = mlp_selection_logits(selection_folder, targs, pairs)
    elif targs.cet_selection == "oracle_pool":
        sel = oracle_selection_logits(targs, pairs)
    else:
        from rankface.models.cet.selection_head import ProjectedQueryBiEncoder

        selection = load_model(ctx.args, str(selection_folder), corpus=ctx.docs)
        if ProjectedQueryBiEncoder.has_projection(selection_folder):  # cet-indep: the towers plus its own head
            selection = ProjectedQueryBiEncoder.load_projection(selection_folder, selection).eval()
        sel = selection.predict(texts, batch_size=64, show_progress_bar=False) * selection.scale
    report = cet_diagnostics([q for q, _ in pairs], [d for _, d in pairs], rel, sel, targs.cet_temperature,
                             full_qrels=ctx.full_qrels["train"], labelled_qrels=read_qrels(targs.train_qrels))
    return {k: v for k, v in report.items() if k != "top_propensity_unlabelled"} | {
        "top_propensity_unlabelled": report.get("top_propensity_unlabelled", [])[:10]}


def oracle_selection_logits(targs, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The oracle propensity's logits `[P]`: pooled = ranked within the pool depth of the pooling run."""
    import torch

    from rankface.losses.cet import fixed_propensity_logits
    from rankface.models.cet import rank_table
    from rankface.retrieval.trec import read_run

    table = rank_table(read_run(targs.cet_selection_run))
    pooled = torch.tensor([table.get(q, {}).get(d, (math.inf, 0.0))[0] <= targs.cet_oracle_pool_depth
                           for q, d in pairs])
    return fixed_propensity_logits(pooled, targs.cet_oracle_propensity, targs.cet_temperature).numpy()


def mlp_selection_logits(selection_folder: Path, targs, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The MLP selection model's logits `[P]` for (query id, doc id) pairs, from the run it was trained on."""
    import torch

    from rankface.models.cet import RankFeatureSelector, rank_table
    from rankface.retrieval.trec import read_run

    selector = RankFeatureSelector.from_pretrained(selection_folder).eval()
    table = rank_table(read_run(targs.cet_selection_run or targs.negatives_run))
    features = RankFeatureSelector.collate_groups([q for q, _ in pairs], [[d] for _, d in pairs], table)["features"]
    with torch.no_grad():
        return selector(features)[:, 0].numpy()


def run_trained(ctx: Context, store: Store, system: str, seed: int, temperature: float | None = None,
                key: str | None = None, source: dict | None = None, keep_model: bool = False,
                num_negatives: int | None = None) -> dict:
    """Train one system with `rankface.training.train`, score test and dev, save the record."""
    from rankface.training import train

    key = key or system
    done = store.load(key, seed)
    if done is not None:
        return done
    args = ctx.args
    if BY_NAME[system].needs_judged_pools and args.pool_labels != "judged":
        raise SystemExit(f"{system} needs --pool-labels judged: with one labelled positive per query, 'pooled' does "
                         "not mean 'judged', and a propensity of being pooled is not CET's")
    output_dir = args.out / "models" / f"{key.replace('/', '__')}__seed{seed}"
    targs = training_arguments(args, ctx, system, seed, output_dir, temperature, source, num_negatives)
    log(f"training {key} seed {seed}: {targs.method}, negatives {targs.negatives_run} ranks 1-{targs.negatives_to_rank}"
        f", {args.steps} steps x {args.batch_size} queries x (1 + {targs.num_negatives}) docs, {targs.training_mode}")
    started = time.perf_counter()
    train(targs)
    train_seconds = time.perf_counter() - started
    model = load_model(args, str(output_dir / "model"), corpus=ctx.docs)
    runs = score_splits(model, ctx, ("test", "dev"), train_run_depth=100 if keep_model else 0)
    if "train_dense" in runs:
        from rankface.retrieval.trec import write_run

        write_run(args.out / "data" / f"dense-ft.{key.replace('/', '__')}.seed{seed}.train.top100.trec",
                  runs["train_dense"], tag="dense-ft")
    state = json.loads((output_dir / "trainer_state.json").read_text())
    correlations = correlation_curves(state["log"])
    losses = [e["loss"] for e in state["log"] if "loss" in e]
    weights = [e["weight_mean"] for e in state["log"] if "weight_mean" in e]
    tail = max(1, len(losses) // 5)
    record = {
        **evaluate_runs(ctx, runs),
        "train": {
            "seconds": train_seconds,
            "steps": state["step"],
            "loss_first": statistics.fmean(losses[:tail]) if losses else None,
            "loss_last": statistics.fmean(losses[-tail:]) if losses else None,
            "cet_weight_mean": statistics.fmean(weights) if weights else None,
            "cet_weight_max_batch_mean": max(weights) if weights else None,
            "temperature": targs.cet_temperature if targs.method == "cet" else None,
            "num_negatives": targs.num_negatives,
            "curve": learning_curve(state["log"]),
            **({"cet_correlations": correlations} if correlations else {}),
            "negatives_run": targs.negatives_run,
            "window": [targs.negatives_from_rank, targs.negatives_to_rank],
            "group_report": {k: v for k, v in json.loads((output_dir / "training_groups_report.json").read_text()
                                                         ).items() if k != "examples"},
        },
    }
    if (output_dir / "selection_model").is_dir() or targs.cet_selection == "oracle_pool":
        record["cet_diagnostics"] = diagnose_cet(ctx, targs, model, output_dir / "selection_model")
    if not keep_model:
        shutil.rmtree(output_dir, ignore_errors=True)
    else:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    record = store.save(key, seed, record)
    log(f"done {key} seed {seed} in {train_seconds:.0f} s train + {time.perf_counter() - started - train_seconds:.0f}"
        f" s eval: test nDCG@10 {record['test']['aggregate']['nDCG@10']:.4f}, dev "
        f"{record['dev']['aggregate']['nDCG@10']:.4f} (loss {record['train']['loss_first']:.3f} -> "
        f"{record['train']['loss_last']:.3f})")
    return record


def learning_curve(log_entries: list[dict], every: int = 25) -> dict:
    """A compact learning curve for the saved record: every dev evaluation, and the loss averaged per `every` steps."""
    evaluations = [[e["step"], e["eval"]["nDCG@10"]] for e in log_entries if "eval" in e]
    losses = [(e["step"], e["loss"]) for e in log_entries if "loss" in e and "eval" not in e]
    buckets: dict[int, list[float]] = {}
    for step, loss in losses:
        buckets.setdefault((step - 1) // every, []).append(loss)
    return {"dev_ndcg10": evaluations,
            "loss": [[(b + 1) * every, round(statistics.fmean(v), 5)] for b, v in sorted(buckets.items())]}


def correlation_curves(log_entries: list[dict], every: int = 50) -> dict:
    """corr(g, f) and corr(w_f, f) over training (CET logs them per step over each batch's negatives): means per
    `every` steps, and the first and last step's values (step 1 is the models before any update)."""
    out = {}
    for key in ("corr_g_f", "corr_wf_f"):
        points = [(e["step"], e[key]) for e in log_entries if key in e]
        if not points:
            continue
        buckets: dict[int, list[float]] = {}
        for step, value in points:
            buckets.setdefault((step - 1) // every, []).append(value)
        out[key] = {"first": points[0][1], "last": points[-1][1], "mean": statistics.fmean(v for _, v in points),
                    "curve": [[(b + 1) * every, round(statistics.fmean(v), 5)] for b, v in sorted(buckets.items())]}
    return out


def run_baseline(ctx: Context, store: Store, system: str) -> dict:
    done = store.load(system, 0)
    if done is not None:
        return done
    started = time.perf_counter()
    if system == "bm25":
        runs = {split: ctx.candidates[split] for split in ("test", "dev")}
    else:  # the zero-shot bi-encoder every trained bi-encoder starts from (same layers and length)
        runs = score_splits(load_model(ctx.args, "minilm", encoder="bi", corpus=ctx.docs), ctx, ("test", "dev"))
    record = store.save(system, 0, {**evaluate_runs(ctx, runs), "seconds": time.perf_counter() - started})
    log(f"done {system}: test nDCG@10 {record['test']['aggregate']['nDCG@10']:.4f}, dev "
        f"{record['dev']['aggregate']['nDCG@10']:.4f}")
    return record


def sweep_key(args: argparse.Namespace, t: float) -> str:
    return "cet/strong-neg" if t == args.cet_temperature else f"sweep/cet-strong-neg-T{t:g}"


def k_sweep_key(k: int) -> str:
    return f"sweep/cet-strong-neg-K{k}"
