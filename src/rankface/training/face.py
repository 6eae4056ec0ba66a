"""Face-encoder training: a margin head (+- UNPG) over MobileFaceNet / IResNet with very-low-resolution augmentation.

Read top to bottom: load the face data (`face_data`: the held-out View-2 folds' identities (protocol F1) and, when
asked, the validation identities left out); build the encoder (the pretrained MobileFaceNet converted on the fly, a rankface
checkpoint, or a fresh one) and the normalised classifier (class weights, initialised at the class centroids); train
with Accelerate (one CPU process to many GPUs); evaluate LR-LR verification on the validation and/or held-out pairs
during training (the learning curve) and on the held-out pairs at the end; save resumable checkpoints (encoder + class
weights + optimizer + schedule) and, at the end, the encoder alone with `save_pretrained`.

A step is made cheap three ways, each a setting: bf16 autocast where the hardware runs bf16 natively
(`precision: auto`), channels-last memory order (`channels_last`), and the images decoded and degraded by DataLoader
worker processes (`num_workers`) while the model steps. Accelerate decides the device from its launch configuration.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader
from transformers import get_scheduler

from rankface.evaluation.verification import evaluate_pairs_at_resolution, pixel_values_from_uint8
from rankface.losses.margins import MarginLoss, NormalizedClassifier, build_head
from rankface.losses.unpg import UNPGLoss
from rankface.paths import shared_dir
from rankface.training.face_arguments import PRETRAINED_MOBILEFACENET, FaceTrainingArguments
from rankface.training.face_data import (
    FaceData,
    FaceTrainSet,
    HeldOutPairs,
    encoder_config,
    prepare_face_data,
)
from rankface.training.face_ri import (
    build_target_prototypes,
    ri_bucket_log,
    ri_step,
    ri_warmup_steps,
    wrap_recognizability,
)
from rankface.training.steps import (
    Learner,
    check_ranks_agree,
    discard_previous_runs,
    find_checkpoint,
    prepare_output_dir,
    process_group_timeout,
    run_steps,
)
from rankface.utils.io import save_folder_atomically, write_json


def train_face(args: FaceTrainingArguments) -> dict:
    """Train a face encoder as `args` says.

    Returns:
        The final held-out evaluation `{"lr-lr@<r>": {"accuracy", "accuracy_std", "auc", "tar@far=..."}}` (empty
        without held-out pairs or with `eval_at_end=False`).
    """
    accelerator = make_accelerator(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    prepare_output_dir(accelerator, output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    with accelerator.main_process_first():  # the first process builds the `datasets` cache, the others reuse it
        data = prepare_face_data(args)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "training_args.json", asdict(args))
        write_json(output_dir / "data_report.json", data.report)
        accelerator.print(data.report["summary"])

    encoder = build_encoder(args)
    if args.ri:
        encoder = wrap_recognizability(encoder, args)
    model = FaceRecognitionModule(encoder, data.num_classes, freeze_batchnorm=args.freeze_batchnorm)
    checkpoint = find_checkpoint(output_dir, args.resume_from_checkpoint)
    if args.head_init == "centroids" and checkpoint is None:  # a resumed run loads its class weights instead
        init_class_weights_at_centroids(accelerator, model, data, args)
    prototypes = None
    if args.ri and args.ri_target_prototypes == "initial":
        # from the starting encoder, also on resume (the encoder is the start until load_state): the same prototypes
        prototypes = build_target_prototypes(model.encoder, data.train_set, data.num_classes, args.eval_batch_size)
        data.train_set.return_index = True  # the leave-one-out prototype needs each image's index
    if args.channels_last:
        use_channels_last(accelerator, model)
    head_kwargs = {k: v for k, v in (("s", args.margin_scale), ("m", args.margin)) if v is not None}
    head = build_head(args.head, **head_kwargs)
    loss_fn: nn.Module = (UNPGLoss(head, wisk=args.unpg_wisk if args.unpg_filter else None) if args.unpg
                          else MarginLoss(head))

    train_set = data.train_set
    # Workers are started afresh for each epoch (not persistent), so each gets the epoch set by `set_epoch`.
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.num_workers, persistent_workers=False)
    optimizer = make_face_optimizer(model, args)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise ValueError(f"{args.dataset}: {len(train_set)} training images make no batch of {args.batch_size}")
    total_steps = args.max_steps or math.ceil(steps_per_epoch * args.epochs)
    scheduler = make_scheduler(optimizer, args, total_steps)
    ri_loss = None
    if args.ri:
        from rankface.losses.recognizability import RecognizabilityLoss

        ri_loss = RecognizabilityLoss(loss_fn, alpha=args.ri_alpha, beta=args.ri_beta,
                                      gamma=args.ri_gamma if args.ri_attention else 0.0,
                                      warmup_steps=ri_warmup_steps(args, total_steps),
                                      diversion_on=args.ri_diversion_on, form=args.ri_form)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(head)  # AdaFace's norm statistics are buffers of the head
    learner = Learner("face", model, optimizer, scheduler)

    state: dict[str, Any] = {"step": 0, "epoch": 0, "batches_done_in_epoch": 0, "log": [],
                             "num_classes": data.num_classes, "num_train_images": len(train_set),
                             "precision": "bf16" if accelerator.mixed_precision == "bf16" else "fp32"}
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        accelerator.print(f"resumed from {checkpoint} at step {state['step']}")
    elif args.resume_from_checkpoint == "latest":
        accelerator.print(f"no checkpoint under {output_dir / 'checkpoints'}: starting from step 0")

    def micro_step(batch: tuple[Tensor, ...]) -> dict[str, float]:
        pixel_values, labels = batch[0], batch[1]
        index = batch[2] if len(batch) > 2 else None
        if args.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        if ri_loss is None:
            embedding, cos = model(pixel_values)
            loss, parts = loss_fn(embedding, labels, cos), {}
        else:
            loss, parts = ri_step(accelerator, model, ri_loss, pixel_values, labels, args, state["step"],
                                  prototypes=prototypes, index=index)
        accelerator.backward(loss)
        values = {"loss": float(loss.item()), **parts}
        if args.unpg:  # what UNPG adds on this batch (pairs kept, bounds, share of the mass, hardest class cosine)
            values.update(loss_fn.last_stats)
        return values

    def log_ri(st: dict) -> None:
        if args.ri and args.ri_log_steps and st["step"] % args.ri_log_steps == 0 and accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            st["log"].append({"step": st["step"], "ri_buckets": ri_bucket_log(
                unwrapped.encoder, unwrapped.classifier.weight, data.train_set, args, prototypes)})

    def evaluate(st: dict) -> None:
        log_ri(st)
        if "validation" in args.eval_sets:
            record_validation(accelerator, model, data, args, st)
        if "heldout" in args.eval_sets:
            record_face_evaluation(accelerator, model, data, args, st)

    if state["step"] == 0 and args.eval_steps:
        evaluate(state)  # step 0: the starting model, the first point of the learning curve
    run_steps(accelerator, [learner], loader, state, total_steps, micro_step, args, output_dir,
              evaluate=evaluate, start_epoch=train_set.set_epoch)
    state["world_size"] = accelerator.num_processes
    broadcast_buffers(accelerator, model)
    state["rank_fingerprints"] = check_ranks_agree(accelerator, [learner])
    if "validation" in args.eval_sets and args.eval_steps:
        record_validation(accelerator, model, data, args, state)  # the last point of the learning curve
    if not any(e.get("ri_buckets") and e["step"] == state["step"] for e in state["log"]):
        log_ri(state)  # the end, when no evaluation fell on it
    final = record_face_evaluation(accelerator, model, data, args, state) if args.eval_at_end else {}
    state["final_eval"] = final
    if accelerator.is_main_process:
        with contiguous_weights(accelerator.unwrap_model(model)):  # safetensors stores contiguous tensors only
            save_folder_atomically(_EncoderWithProcessor(accelerator.unwrap_model(model).encoder),
                                   output_dir / "model")
        write_json(output_dir / "trainer_state.json", state)
        discard_previous_runs(output_dir)  # an overwritten run goes once this one is whole
    accelerator.wait_for_everyone()
    # The DDP wrapper goes before its process group, as torch's shutdown order asks: a reducer left to this frame's
    # teardown, after `end_training` destroyed the gloo group, is where a rank of the two-process test hung under
    # load (its stack ended at this function's return).
    model = learner = optimizer = loader = None  # not `del`: the step closures above hold `model` as a cell
    accelerator.free_memory()  # the accelerator's own references to them, then a garbage collection
    accelerator.end_training()
    return final


def make_accelerator(args: FaceTrainingArguments) -> Accelerator:
    """The Accelerator of a face run: bf16 autocast exactly when `resolve_face_precision` says so."""
    # RI: the attention branch gets no gradient while its loss is in warm-up; DDP must not wait for it.
    ddp_kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if args.ri else []
    return Accelerator(
        mixed_precision="bf16" if resolve_face_precision(args.precision) == "bf16" else "no",
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[*ddp_kwargs, process_group_timeout(args.ddp_timeout)],
    )


# ---------------------------------------------------------------------------------------------- models
def build_encoder(args: FaceTrainingArguments) -> nn.Module:
    """The encoder to train: fresh (`from_scratch`), the public pretrained MobileFaceNet, or a saved checkpoint."""
    if args.from_scratch:
        if args.architecture == "iresnet":
            from rankface.models.iresnet import IResNetModel

            return IResNetModel(encoder_config(args))
        from rankface.models.mobilefacenet import MobileFaceNetModel

        return MobileFaceNetModel(encoder_config(args))
    if args.model_name_or_path == PRETRAINED_MOBILEFACENET:
        from rankface.models.mobilefacenet.convert import load_mobilefacenet_state_dict

        return load_mobilefacenet_state_dict(shared_dir() / "models" / "mobilefacenet" / "mobilefacenet.pt").train()
    from transformers import AutoModel

    import rankface.models.auto  # noqa: F401

    return AutoModel.from_pretrained(args.model_name_or_path).train()


class FaceRecognitionModule(nn.Module):
    """Encoder + normalised classifier, the one module Accelerate/DDP wraps.

    `forward(pixel_values [B, 3, S, S]) -> (embedding [B, E] un-normalised, cos [B, C] fp32)`. The classifier's
    class weights are part of the training state (checkpoints), never of the saved encoder.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, freeze_batchnorm: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = NormalizedClassifier(encoder.config.embedding_size, num_classes)
        self.freeze_batchnorm = freeze_batchnorm
        if freeze_batchnorm:
            for module in self._batchnorms():
                for param in module.parameters():
                    param.requires_grad_(False)

    def _batchnorms(self) -> list[nn.Module]:
        return [m for m in self.encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> FaceRecognitionModule:
        super().train(mode)
        if self.freeze_batchnorm:  # running statistics stay those of the starting encoder
            for module in self._batchnorms():
                module.eval()
        return self

    def forward(self, pixel_values: Tensor, full_output: bool = False):
        """`(embedding, cos)`; with `full_output` also the encoder's whole output (RI: quality, attended)."""
        out = self.encoder(pixel_values)
        cos = self.classifier(out.embedding)
        return (out.embedding, cos, out) if full_output else (out.embedding, cos)


@torch.no_grad()
def class_centroids(encoder: nn.Module, train_set: FaceTrainSet, num_classes: int, per_class: int,
                    batch_size: int = 64) -> Tensor:
    """Mean normalised embedding of the first `per_class` un-augmented images of each class -> `[C, E]` unit rows."""
    chosen: list[int] = []
    seen = np.zeros(num_classes, dtype=np.int64)
    for i, label in enumerate(train_set.labels.tolist()):
        if seen[label] < per_class:
            seen[label] += 1
            chosen.append(i)
    was_training = encoder.training
    encoder.eval()
    # channels-last inference is several times faster for MobileFaceNet's depthwise convolutions on CPU (oneDNN);
    # the layout is restored before training starts.
    encoder.to(memory_format=torch.channels_last)
    sums = torch.zeros(num_classes, encoder.config.embedding_size)
    try:
        for start in range(0, len(chosen), batch_size):
            idx = chosen[start:start + batch_size]
            images = np.stack([train_set.raw_image(i) for i in idx])
            pixel_values = pixel_values_from_uint8(images, encoder.config).to(next(encoder.parameters()).device)
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
            emb = torch.nn.functional.normalize(encoder(pixel_values).embedding.float().cpu(), dim=1)
            sums.index_add_(0, torch.as_tensor(train_set.labels[idx]), emb)
    finally:
        encoder.to(memory_format=torch.contiguous_format)
        encoder.train(was_training)
    return torch.nn.functional.normalize(sums, dim=1)


def init_class_weights_at_centroids(accelerator: Accelerator, model: FaceRecognitionModule, data: FaceData,
                                    args: FaceTrainingArguments) -> None:
    """Set the class weights to the class centroids; computed once on the main process and broadcast, so every
    rank starts from the same weights."""
    weight = model.classifier.weight
    if accelerator.is_main_process:
        weight.data.copy_(class_centroids(model.encoder, data.train_set, data.num_classes,
                                          args.head_init_images_per_class, args.eval_batch_size))
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        buffer = weight.data.to(accelerator.device)
        dist.broadcast(buffer, src=0)
        weight.data.copy_(buffer.cpu())


def broadcast_buffers(accelerator: Accelerator, model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP does this at the start of every forward, so during training the ranks agree; but the last forward leaves
    each rank with statistics updated on its own shard. Rank 0's are the ones DDP would have used next.
    """
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    for buffer in accelerator.unwrap_model(model).buffers():
        dist.broadcast(buffer.data, src=0)


def resolve_face_precision(setting: str) -> str:
    """`"bf16"` or `"fp32"` for the `precision` setting: `auto` is bf16 only where the hardware runs it natively (CUDA
    with bf16; a CPU with AVX-512 bf16 or AMX, instruction-set caps included); a forced `bf16` on a CPU without it
    warns once (emulated bf16 is several times slower than fp32 there)."""
    from rankface.models._text import resolve_precision

    if setting not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {setting!r}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_precision(setting, device)


def use_channels_last(accelerator: Accelerator, model: nn.Module) -> None:
    """Put the model's 4-D weights in channels-last order (in place: the Parameter objects stay the ones the optimizer
    holds) and make the checkpoints store contiguous copies, as safetensors requires."""
    model.to(memory_format=torch.channels_last)

    def contiguous_state(models, weights, output_dir) -> None:
        for state in weights:
            for key, tensor in state.items():
                if isinstance(tensor, Tensor) and not tensor.is_contiguous():
                    state[key] = tensor.contiguous()

    accelerator.register_save_state_pre_hook(contiguous_state)


@contextlib.contextmanager
def contiguous_weights(model: nn.Module):
    """Inside: the model's weights in the default (contiguous) order, for `save_pretrained`; restored after."""
    was_channels_last = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                            and not p.is_contiguous() for p in model.parameters())
    model.to(memory_format=torch.contiguous_format)
    try:
        yield model
    finally:
        if was_channels_last:
            model.to(memory_format=torch.channels_last)


def make_face_optimizer(model: FaceRecognitionModule, args: FaceTrainingArguments) -> torch.optim.Optimizer:
    """SGD (momentum 0.9) or AdamW; no weight decay on BatchNorm and biases; class weights at the head rate, an RI
    model's own modules (outside its backbone) at `ri_head_learning_rate`."""
    head_lr = args.head_learning_rate or args.learning_rate
    ri_head_lr = args.ri_head_learning_rate or args.learning_rate
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.dim() <= 1
        if name.startswith("classifier."):
            lr = head_lr
        elif args.ri and not name.startswith("encoder.backbone."):
            lr = ri_head_lr
        else:
            lr = args.learning_rate
        groups.setdefault((lr, 0.0 if no_decay else args.weight_decay), []).append(param)
    param_groups = [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]
    if args.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=args.learning_rate, momentum=0.9)
    return torch.optim.AdamW(param_groups, lr=args.learning_rate)


def make_scheduler(optimizer: torch.optim.Optimizer, args: FaceTrainingArguments, total_steps: int):
    name = "constant_with_warmup" if args.lr_scheduler == "constant" else args.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


class _EncoderWithProcessor:
    """`save_pretrained` of the encoder plus its `FaceImageProcessor` (the input contract) in one folder."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder

    def save_pretrained(self, path) -> None:
        from rankface.models.face_processor import FaceImageProcessor

        self.encoder.save_pretrained(path)
        FaceImageProcessor.from_model_config(self.encoder.config).save_pretrained(path)


# ---------------------------------------------------------------------------------------------- evaluation
def record_validation(accelerator: Accelerator, model, data: FaceData, args: FaceTrainingArguments,
                      state: dict) -> dict:
    """LR-LR 10-fold accuracy of the validation pairs at each `val_resolutions`, logged in `state` as
    `{"step", "val": {"lr-lr@<r>": {"accuracy", "auc", ...}}}`: the points of the learning curve."""
    return _record_lr_lr(accelerator, model, data.validation, args.val_resolutions, args, state, "val",
                         "validation pairs")


def record_face_evaluation(accelerator: Accelerator, model, data: FaceData, args: FaceTrainingArguments,
                           state: dict) -> dict:
    """LR-LR verification of the held-out pairs at each `eval_resolutions` on the main process; logged in `state`."""
    return _record_lr_lr(accelerator, model, data.pairs, args.eval_resolutions, args, state, "eval",
                         "held-out pairs")


def _record_lr_lr(accelerator: Accelerator, model, pairs: HeldOutPairs | None, resolutions, args, state: dict,
                  key: str, label: str) -> dict:
    """LR-LR verification of `pairs` at each of `resolutions` on the main process, logged under `key`."""
    metrics: dict = {}
    if accelerator.is_main_process and pairs is not None:
        encoder = accelerator.unwrap_model(model).encoder
        for r in resolutions:
            result = evaluate_pairs_at_resolution(encoder, pairs.images, pairs.pair_index, pairs.same, int(r),
                                                  setting="lr-lr", folds=pairs.folds,
                                                  batch_size=args.eval_batch_size)
            metrics[f"lr-lr@{r}"] = result.as_dict()
        state["log"].append({"step": state["step"], key: metrics})
        accelerator.print(f"step {state['step']} {label}: " + " ".join(
            f"{k}={v['accuracy']:.4f}" for k, v in metrics.items()))
        model.train()
    accelerator.wait_for_everyone()
    return metrics
