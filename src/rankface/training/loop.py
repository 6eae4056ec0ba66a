"""The reranker training loop: Accelerate from one CPU process to many GPUs, plain or CET objective.

Read top to bottom: build the model(s), the data, the optimizers; resume if asked; loop over groups of
(query, positive, K negatives); evaluate on the dev split; save resumable checkpoints and the final model.
Nothing here names a device or a precision: Accelerate decides from its launch configuration.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from rankface.evaluation.ranking import evaluate
from rankface.losses.ranking import graded_listwise_loss, ranking_loss
from rankface.models.cet.modeling_cet import rank_table
from rankface.paths import minilm_path
from rankface.retrieval.pipeline import hits_to_run, rerank, run_to_hits
from rankface.training.arguments import RESUMABLE_SETTINGS, RerankerTrainingArguments
from rankface.training.data import TrainingData, prepare_training_data
from rankface.training.modes import apply_training_mode, resolve_mixed_precision
from rankface.training.robust import apply_domain_gate, apply_wise_ft, make_l2sp, with_l2sp
from rankface.training.steps import (
    Learner,
    TrainingInterrupted,
    check_ranks_agree,
    check_resumed_settings,
    discard_previous_runs,
    exclude_frozen_weights,
    find_checkpoint,
    isolated_rng,
    load_checkpoint,
    prepare_output_dir,
    process_group_timeout,
    run_settings,
    run_steps,
)
from rankface.utils.io import atomic_write, save_folder_atomically, write_json


def train(args: RerankerTrainingArguments) -> dict:
    """Train a reranker as `args` says; returns the final evaluation (empty without an eval split).

    Raises:
        TrainingInterrupted: Ctrl-C during the run; it names the last checkpoint and how to resume.
    """
    try:
        return _train(args)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        AcceleratorState._reset_state()  # as at a normal end: a later `train` in this process may start afresh
        raise TrainingInterrupted(Path(args.output_dir), args.overwrite_output_dir) from None


def _train(args: RerankerTrainingArguments) -> dict:
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[process_group_timeout(args.ddp_timeout)],
    )
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    prepare_output_dir(accelerator, output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    # Before anything is written: a refused resume leaves the run's training_args.json as it was.
    check_resumed_settings(find_checkpoint(output_dir, args.resume_from_checkpoint), output_dir,
                           run_settings(accelerator, args), RESUMABLE_SETTINGS, accelerator.print)
    with accelerator.main_process_first():
        data = prepare_training_data(args)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "training_args.json", asdict(args))
        write_json(output_dir / "training_groups_report.json", data.group_report)

    models = build_models(args, data)
    l2sp = make_l2sp(models[0], args)  # anchored at the starting weights, before a checkpoint is loaded
    collate = GroupCollator(models[0], data, with_rank_features=args.method == "cet" and args.cet_selection in (
                                "mlp", "oracle_pool"),
                            corpus_negatives=args.corpus_negatives, corpus_positives=args.corpus_positives,
                            min_positive_grade=args.min_positive_grade)
    loader = DataLoader(list(range(len(data.groups))), batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    optimizers = [make_optimizer(m, args) for m in models]
    prepared = accelerator.prepare(*models, *optimizers, loader)
    models, optimizers, loader = list(prepared[: len(models)]), list(prepared[len(models) : -1]), prepared[-1]

    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps or math.ceil(steps_per_epoch * args.epochs)
    names = ["relevance", "selection"] if args.method == "cet" else ["model"]
    learners = []
    for name, model, optimizer in zip(names, models, optimizers):
        scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
        accelerator.register_for_checkpointing(scheduler)
        learners.append(Learner(name, model, optimizer, scheduler))

    # Checkpoints hold the trainable weights and their optimizer state; frozen ones (a query-side run's document
    # tower, LoRA's base) are rebuilt from the starting model at resume, checked against a fingerprint.
    exclude_frozen_weights(accelerator, source=args.model_name_or_path)
    state = {"step": 0, "epoch": 0, "batches_done_in_epoch": 0, "log": []}
    checkpoint = find_checkpoint(output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        load_checkpoint(accelerator, checkpoint, [learner.model for learner in learners])
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        accelerator.print(f"resumed from {checkpoint} at step {state['step']}")

    if args.eval_split and args.eval_steps and state["step"] == 0:
        record_evaluation(accelerator, learners[0].model, data, args, state)  # the learning curve's starting point
    step_fn = with_l2sp(make_step_function(args, accelerator), l2sp, accelerator)
    run_steps(accelerator, learners, loader, state, total_steps, lambda features: step_fn(learners, features), args,
              output_dir, evaluate=lambda st: record_evaluation(accelerator, learners[0].model, data, args, st),
              start_epoch=data.start_epoch)

    state["world_size"] = accelerator.num_processes
    state["rank_fingerprints"] = check_ranks_agree(accelerator, learners)
    apply_wise_ft(accelerator.unwrap_model(learners[0].model), args)  # no-op unless wise_ft_alpha is set
    apply_domain_gate(accelerator.unwrap_model(learners[0].model), args, data.train_queries)  # likewise
    final = record_evaluation(accelerator, learners[0].model, data, args, state) if args.eval_split else {}
    if accelerator.is_main_process:
        save_final_models(accelerator, learners, output_dir)
        write_json(output_dir / "trainer_state.json", state)
        write_model_card(output_dir / "model", args, data, final, state["step"])
        discard_previous_runs(output_dir)  # a run without checkpoints: the overwritten run goes once this one is whole
    accelerator.wait_for_everyone()
    # The DDP wrappers go before their process group (torch's shutdown order; see train_face, where a rank hung in
    # this frame's teardown): drop every reference here, then the accelerator's.
    models = optimizers = learners = prepared = model = optimizer = loader = None
    accelerator.free_memory()
    accelerator.end_training()
    # Accelerate keeps one precision per process; forget it, so that a later `train` here (a sweep, a notebook) can
    # ask for another. The process group (PartialState) stays.
    AcceleratorState._reset_state()
    return final


# ---------------------------------------------------------------------------------------------- models
def build_models(args: RerankerTrainingArguments, data: TrainingData) -> list[torch.nn.Module]:
    """The relevance model; for CET also the selection model: a second text model of the same kind (own head),
    or the light MLP on first-stage (rank, score) features."""
    models = [load_text_model(args, data.docs)]
    if args.method == "cet":
        if args.cet_selection == "mlp":
            from rankface.models.cet import RankFeatureSelector

            selector = RankFeatureSelector()
            table = rank_table(data.selection_features_run)
            selector.fit_normalization(torch.tensor([[math.log1p(r), s] for d in table.values() for r, s in d.values()]))
            models.append(selector)
        elif args.cet_selection == "oracle_pool":  # a fixed propensity from the pool's ranks (cet_step): no model
            pass
        elif args.cet_selection == "indep":  # its own random query head: g != f from step 0, as the authors' pair
            from rankface.models.cet.selection_head import independent_selection_model

            models.append(independent_selection_model(load_text_model(args, data.docs), args.seed))
        else:
            models.append(load_text_model(args, data.docs))
    return models


def load_text_model(
    args: RerankerTrainingArguments, corpus: dict[str, str] | None = None, allow_untrained_head: bool = True
) -> torch.nn.Module:
    """The model `args` describes, frozen and cached as `args.training_mode` says (with `corpus` for the
    query-side document cache), with LoRA adapters when `args.lora_rank` is set.

    Training starts a cross-encoder from a plain encoder (MiniLM) with a new head, hence `allow_untrained_head`;
    loading a trained model to score with passes False, so a model saved without its head is an error."""
    from rankface.models.bi_encoder import BiEncoder
    from rankface.models.cross_encoder import CrossEncoder

    path = minilm_path() if args.model_name_or_path == "minilm" else args.model_name_or_path
    # Models are built on the CPU; `accelerator.prepare` moves them where the launch configuration says.
    if args.encoder == "cross":
        model = CrossEncoder.from_pretrained(path, max_length=args.max_length, num_layers=args.num_layers, device="cpu",
                                             allow_untrained_head=allow_untrained_head)
    else:
        model = BiEncoder.from_pretrained(
            path, max_length=args.max_length, scale=args.bi_scale, num_layers=args.num_layers, device="cpu"
        )
    apply_training_mode(model, args, corpus)
    if args.lora_rank:
        model.model = apply_lora(model.model, args)
    return model


def apply_lora(hf_model, args: RerankerTrainingArguments):
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_CLS if args.encoder == "cross" else TaskType.FEATURE_EXTRACTION
    config = LoraConfig(
        task_type=task, r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.1, target_modules=["query", "value"]
    )
    return get_peft_model(hf_model, config)


def make_optimizer(model: torch.nn.Module, args: RerankerTrainingArguments) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm; the new head may get its own learning rate, and the light
    MLP selection model (trained from scratch) gets `cet_mlp_learning_rate` throughout."""
    from rankface.models.cet import RankFeatureSelector

    if isinstance(model, RankFeatureSelector):
        return torch.optim.AdamW(model.parameters(), lr=args.cet_mlp_learning_rate, weight_decay=args.weight_decay)
    head_lr = args.head_learning_rate or args.learning_rate
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
        is_head = "classifier" in name or "pooler" in name
        key = (head_lr if is_head else args.learning_rate, 0.0 if no_decay else args.weight_decay)
        groups.setdefault(key, []).append(param)
    return torch.optim.AdamW([{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()], eps=1e-8)


class GroupCollator:
    """Turns a list of group indices into the model's tokenized `[Q, 1 + K]` batch.

    With `with_rank_features`, the batch is `{"relevance": text features, "selection": rank features}` for CET's
    light selection model (first-stage rank and score of every document of each group). With `corpus_negatives`
    (a query-side bi-encoder), it also holds `corpus_exclude`, `bool [Q, N]` over the cached corpus: the documents
    that must not count as a query's negatives, i.e. those its qrels judge relevant and those already in its group.
    With `corpus_positives`, the relevant ones stay in and `grades` `[Q, 1 + K + N]` holds every column's qrels grade
    (the group's positive, 0 for its negatives, the corpus documents'), for the graded listwise loss.
    """

    def __init__(self, model, data: TrainingData, with_rank_features: bool = False, corpus_negatives: bool = False,
                 corpus_positives: bool = False, min_positive_grade: int = 1):
        self.model = model
        self.data = data
        self.rank_table = rank_table(data.selection_features_run) if with_rank_features else None
        self.corpus_negatives = corpus_negatives
        self.corpus_positives = corpus_positives
        self.min_positive_grade = min_positive_grade
        if corpus_negatives and getattr(model, "document_cache", None) is None:
            raise ValueError("corpus_negatives needs a bi-encoder with a document cache (training_mode 'query_side')")

    def __call__(self, indices: list[int]) -> dict:
        groups = [self.data.groups[i] for i in indices]
        features = self.model.collate_groups(*self.data.group_texts(groups))
        if hasattr(groups[0], "grades"):  # graded candidate lists: the loss reads every document's grade
            features["grades"] = torch.tensor([g.grades for g in groups], dtype=torch.float32)
        if self.corpus_negatives:
            features["corpus_exclude"] = self.corpus_exclusions(groups)
        if self.corpus_positives:
            features["grades"] = self.corpus_grades(groups, features["corpus_exclude"])
        if self.rank_table is None:
            return features
        from rankface.models.cet import RankFeatureSelector

        doc_ids = [[g.positive_docid, *g.negative_docids] for g in groups]
        rank_features = RankFeatureSelector.collate_groups([g.qid for g in groups], doc_ids, self.rank_table)
        return {"relevance": features, "selection": rank_features}

    def corpus_exclusions(self, groups: list) -> torch.Tensor:
        cache = self.model.document_cache
        exclude = torch.zeros(len(groups), len(cache.doc_ids), dtype=torch.bool)
        for i, group in enumerate(groups):
            relevant = [d for d, grade in self.data.train_qrels.get(group.qid, {}).items() if grade > 0]
            if self.corpus_positives:  # the targets: only those below min_positive_grade stay out of the softmax
                relevant = [d for d in relevant if self.data.train_qrels[group.qid][d] < self.min_positive_grade]
            for docid in (*relevant, group.positive_docid, *group.negative_docids):
                row = cache.row_of_id.get(docid)
                if row is not None:
                    exclude[i, row] = True
        return exclude


    def corpus_grades(self, groups: list, exclude: torch.Tensor) -> torch.Tensor:
        """`[Q, 1 + K + N]`: the group's positive's grade, 0 for its K negatives, and each corpus document's grade
        where it is in the softmax (0 where excluded: the group's own documents, grades below the threshold)."""
        cache = self.model.document_cache
        size = 1 + len(groups[0].negative_docids)
        grades = torch.zeros(len(groups), size + len(cache.doc_ids))
        for i, group in enumerate(groups):
            judged = self.data.train_qrels.get(group.qid, {})
            grades[i, 0] = max(judged.get(group.positive_docid, 0), 1)  # a mined positive is at least grade 1
            for docid, grade in judged.items():
                row = cache.row_of_id.get(docid)
                if row is not None and grade >= self.min_positive_grade and not exclude[i, row]:
                    grades[i, size + row] = grade
        return grades


# ---------------------------------------------------------------------------------------------- steps
def make_step_function(args: RerankerTrainingArguments, accelerator: Accelerator):
    """The forward/backward of one micro-batch; returns the loss values to log."""
    if args.method == "cet":
        from rankface.training.cet_step import make_cet_step

        return make_cet_step(args, accelerator)

    def plain_step(learners: list[Learner], features: dict) -> dict[str, float]:
        scores = learners[0].model(features)
        if args.loss == "graded_listwise" or args.corpus_positives:
            loss = graded_listwise_loss(scores.float(), features["grades"])
        else:
            loss = ranking_loss(args.loss, scores.float())
        accelerator.backward(loss)
        return {"loss": loss.item()}

    return plain_step


# ---------------------------------------------------------------------------------------------- evaluation
def rerank_candidates(model, queries: dict, candidates: dict, docs: dict, batch_size: int, quiet: bool) -> dict:
    """Rescore every query's candidates with `model`; returns a run `{qid: {docid: score}}`."""
    hits = run_to_hits(candidates)
    depth = max((len(h) for h in hits.values()), default=1) or 1
    reranked = rerank(hits, queries, docs.__getitem__, model, top_k=depth, batch_size=batch_size,
                      show_progress_bar=not quiet)
    return hits_to_run(reranked)


def record_evaluation(accelerator: Accelerator, model, data: TrainingData, args, state: dict) -> dict:
    """Rerank the eval split's candidates on the main process and log the metrics.

    Runs under `isolated_rng()` and gives the model back in the mode it came in: an evaluation (the step-0 one
    included) must leave the training that follows it exactly as it would have been without it."""
    metrics: dict = {}
    if accelerator.is_main_process and data.eval_queries:
        unwrapped = accelerator.unwrap_model(model)
        was_training = unwrapped.training
        with isolated_rng():
            run = rerank_candidates(unwrapped, data.eval_queries, data.eval_candidates, data.docs,
                                    args.eval_batch_size, args.quiet)
        unwrapped.train(was_training)
        metrics = evaluate(run, data.eval_qrels).aggregate
        state["log"].append({"step": state["step"], "eval": metrics})
        accelerator.print(f"step {state['step']} {args.eval_split}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    accelerator.wait_for_everyone()
    return metrics


GATE_LIMITATION = ("The query-domain gate lives in rankface's `BiEncoder.encode_query`: sentence-transformers loads "
                   "the trained query tower alone, as if every query were like the training queries.")


def robust_settings(args: RerankerTrainingArguments) -> dict:
    """The robust fine-tuning settings a run used (for its model card); those left unset are not listed."""
    found = {}
    if args.l2sp_weight:
        found["l2sp_weight"] = args.l2sp_weight
    if args.wise_ft_alpha is not None:
        found["wise_ft_alpha"] = args.wise_ft_alpha
    if args.domain_gate_threshold is not None:
        found["domain_gate"] = (f"threshold {args.domain_gate_threshold:g}, temperature "
                                f"{args.domain_gate_temperature:g}, k {args.domain_gate_k}")
    return found


def write_model_card(folder: Path, args: RerankerTrainingArguments, data: TrainingData, metrics: dict,
                     steps: int) -> None:
    """`folder/README.md`: the model card (rankface.hub's reranker template) of the model this run trained, from
    its settings and final evaluation, so that a trained folder says what it is before anyone pushes it."""
    from rankface.hub import render_model_card

    def name_of(value: str) -> str:  # a local folder or file is named, not given by its machine-specific path
        return Path(value).name if Path(value).exists() else value

    negatives = f"{args.num_negatives} negatives per query from ranks {args.negatives_from_rank}-" \
                f"{args.negatives_to_rank} of {name_of(args.negatives_run) if args.negatives_run else 'BM25'}"
    groups = data.group_report.get("groups", len(data.groups))
    loss = {"name": "CET" if args.method == "cet" else args.loss}
    if args.method == "cet":
        loss |= {"ranking_loss": args.loss, "temperature": args.cet_temperature, "selection": args.cet_selection}
    rows = [{"name": key, "type": key.lower().replace("@", "_at_"), "value": round(float(value), 4),
             "dataset": name_of(args.collection), "dataset_type": name_of(args.collection), "split": args.eval_split,
             "config": f"top-{args.eval_depth} candidates"} for key, value in metrics.items()]
    card = render_model_card(
        "reranker", model_name=folder.parent.name, base_model=name_of(args.model_name_or_path), license="other",
        datasets=[name_of(args.collection)], encoder=args.encoder, max_length=args.max_length,
        training_data=f"The {args.train_split!r} split of {name_of(args.collection)}: {groups} training groups, "
                      f"each one positive and {negatives}.",
        label_protocol=(f"Training labels from {name_of(args.train_qrels)} (given in place of the collection's)."
                        if args.train_qrels else f"The collection's {args.train_split!r} qrels."),
        loss=loss, metrics=rows,
        training={"steps": steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                  "training_mode": args.training_mode, "lora_rank": args.lora_rank, "seed": args.seed,
                  **robust_settings(args)},
        limitations=["The license is `other` until you set it: it follows the base model's and the training data's.",
                     *([GATE_LIMITATION] if args.domain_gate_threshold is not None else [])],
    )
    with atomic_write(folder / "README.md") as handle:
        handle.write(card)


def save_final_models(accelerator: Accelerator, learners: list[Learner], output_dir: Path) -> None:
    """`output_dir/model`: the relevance model as a standard checkpoint; for CET also `output_dir/cet_pair`
    (relevance + selection, `CETModel.from_pretrained`)."""
    models = [accelerator.unwrap_model(learner.model) for learner in learners]
    for model in models:
        if hasattr(getattr(model, "model", None), "merge_and_unload"):  # LoRA: export plain, PEFT-free weights
            model.model = model.model.merge_and_unload()
    save_folder_atomically(models[0], output_dir / "model")
    if len(models) == 2 and getattr(models[0], "doc_model", None) is not None:
        # CETModel holds one transformer per member; a two-tower (query-side) relevance model does not fit it.
        # `output_dir/model` is the complete relevance model; the selection model is saved beside it, as a two-tower
        # bi-encoder of its own or the MLP selector, for diagnostics (its propensity of known false negatives).
        save_folder_atomically(models[1], output_dir / "selection_model")
        accelerator.print("query-side CET: the pair is not exported as cet_pair (one tower per member); the "
                          f"relevance model is in {output_dir / 'model'}, the selection model in "
                          f"{output_dir / 'selection_model'}")
    elif len(models) == 2:
        from rankface.models.cet import CETModel

        save_folder_atomically(CETModel.from_scorers(models[0], models[1]), output_dir / "cet_pair")
