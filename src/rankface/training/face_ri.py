"""The face recipe's RI set-up (methods.md section 3; issue 21): the RI model around the backbone, one RI training
step, the prototypes the RI target is measured against, and the log of the target xi and the regressed xi_hat per
resolution bucket.

Why other prototypes than the classifier's: ArcFace fits its class rows to the very (degraded) training images the
target is computed on (LFW classes hold 2-6 images), driving `cos(v, w_y) - max_j cos(v, w_j)` towards a saturated
margin at every resolution, so an in-sample target flattens. `ri_target_prototypes: initial` measures the target
against frozen clean prototypes instead: every training image embedded once at 112 px by the starting encoder;
the positive prototype of image i is the mean of its class's *other* images (leave-one-out; a class with one image
keeps that image, as no other exists), the negatives the full centroids of the other classes. ArcFace's classifier
stays for the margin loss alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn

from rankface.evaluation.verification import pixel_values_from_uint8

RI_LOG_RESOLUTIONS = (8, 12, 16, 24, 32, 112)


def wrap_recognizability(backbone: nn.Module, args: Any) -> nn.Module:
    """A `RecognizabilityModel` around `backbone` (its weights copied in); an RI checkpoint is returned as is."""
    from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel

    if isinstance(backbone, RecognizabilityModel):
        return backbone
    # the model's config knows the forms a saved model may hold; the clamped product is a training-time choice
    # (the loss and the UI statistics get it from the recipe), so the saved config says "product" for it
    form = "product" if args.ri_form == "product_clamped" else args.ri_form
    config = RecognizabilityConfig(backbone=backbone.config, attention=args.ri_attention, ri_form=form,
                                   match_with=args.ri_match_with, quality_input=args.ri_quality_input)
    model = RecognizabilityModel(config)
    model.backbone.load_state_dict(backbone.state_dict(), strict=True)
    return model.train()


def ri_warmup_steps(args: Any, total_steps: int) -> int:
    """Optimizer steps before the RI's index diversion and attention losses switch on: `ri_warmup_steps` when given,
    else `round(ri_warmup_ratio * total_steps)` (0: on from the first step; 1: never on in this run)."""
    if args.ri_warmup_steps is not None:
        return int(args.ri_warmup_steps)
    return round(args.ri_warmup_ratio * total_steps)


# ---------------------------------------------------------------------------------------------- prototypes
class TargetPrototypes(nn.Module):
    """Frozen clean prototypes for the RI target: `embeddings [N, E]` unit rows (one per training image) and their
    `labels [N]`; buffers, so they are saved in checkpoints (a resumed run measures against the same ones)."""

    def __init__(self, embeddings: Tensor, labels: Tensor, num_classes: int) -> None:
        super().__init__()
        if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],):
            raise ValueError(f"TargetPrototypes: embeddings [N, E] and labels [N] expected, got "
                             f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
        self.register_buffer("embeddings", F.normalize(embeddings.detach().float(), dim=1))
        self.register_buffer("labels", labels.detach().long())
        self.num_classes = int(num_classes)

    def class_sums(self) -> tuple[Tensor, Tensor]:
        """`([C, E] sums of the unit rows, [C] image counts)`."""
        sums = torch.zeros(self.num_classes, self.embeddings.shape[1], device=self.embeddings.device)
        sums.index_add_(0, self.labels, self.embeddings)
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        return sums, counts

    def centroids(self) -> Tensor:
        """`[C, E]` normalised class means (a class without images is a zero row: cosine 0)."""
        return F.normalize(self.class_sums()[0], dim=1)

    def target_cos(self, embeddings: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        """`[B, C]` cosines of `embeddings [B, E]` (gradient kept) to the class centroids, the true class's column
        replaced by the cosine to the leave-one-out centroid of image `index [B]` (its class without it)."""
        if index.shape != labels.shape:
            raise ValueError(f"TargetPrototypes.target_cos: index {tuple(index.shape)} and labels "
                             f"{tuple(labels.shape)} differ")
        stored = self.labels[index.long()]
        if not torch.equal(stored, labels.long()):
            raise ValueError("TargetPrototypes.target_cos: the batch's labels are not those of its image indices")
        sums, counts = self.class_sums()
        v = F.normalize(embeddings.float(), dim=1)
        cos = v @ F.normalize(sums, dim=1).T
        own = sums[labels.long()]
        loo = torch.where((counts[labels.long()] > 1)[:, None], own - self.embeddings[index.long()], own)
        positive = (v * F.normalize(loo, dim=1)).sum(1)
        return cos.scatter(1, labels.long()[:, None], positive[:, None])


@torch.no_grad()
def build_target_prototypes(encoder: nn.Module, train_set: Any, num_classes: int, batch_size: int = 64
                            ) -> TargetPrototypes:
    """Embed every training image once, as stored (112 px, no flip), with the encoder in eval mode."""
    backbone = getattr(encoder, "backbone", encoder)  # the RI model's backbone gives the same embedding
    was_training = backbone.training
    backbone.eval()
    out = []
    try:
        for start in range(0, len(train_set), batch_size):
            idx = range(start, min(len(train_set), start + batch_size))
            images = np.stack([train_set.raw_image(i) for i in idx])
            pixel_values = pixel_values_from_uint8(images, backbone.config).to(next(backbone.parameters()).device)
            out.append(backbone(pixel_values.contiguous(memory_format=torch.channels_last)).embedding.float().cpu())
    finally:
        backbone.train(was_training)
    return TargetPrototypes(torch.cat(out), torch.as_tensor(train_set.labels), num_classes)


# ---------------------------------------------------------------------------------------------- the step
def ri_step(accelerator: Accelerator, model, ri_loss, pixel_values: Tensor, labels: Tensor, args: Any, step: int,
            prototypes: TargetPrototypes | None = None, index: Tensor | None = None) -> tuple[Tensor, dict]:
    """One RI forward: step the UI-centre buffers with unrecognizable versions of the batch (no gradient, BN in eval
    mode), then the total RI objective on the batch. The UI sizes are drawn from `(seed, step, rank)`, so a resumed
    run draws the same ones. With `prototypes` (and the batch's image `index`), the RI target and the UI statistics
    are measured against them instead of the classifier's rows."""
    from rankface.losses.recognizability import make_unrecognizable

    unwrapped = accelerator.unwrap_model(model)
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 101 + accelerator.process_index)
    ui = make_unrecognizable(pixel_values, size_range=(args.ri_ui_size_min, args.ri_ui_size_max), generator=generator)
    if args.channels_last:
        ui = ui.contiguous(memory_format=torch.channels_last)
    reference = unwrapped.classifier.weight if prototypes is None else prototypes.centroids()
    with torch.no_grad():
        update_ui_centre(unwrapped.encoder, ui, labels, reference, args.ri_form)
    embedding, cos, out = model(pixel_values, full_output=True)
    target_cos = None
    if prototypes is not None:
        if index is None:
            raise ValueError("ri_step: prototypes need the batch's image indices")
        target_cos = prototypes.target_cos(embedding, labels, index)
    result = ri_loss(embedding, labels, cos, unwrapped.classifier.weight, out.quality.float(),
                     unwrapped.encoder.ui_centre, attended=out.attended_embedding, step=step, target_cos=target_cos)
    parts = {"margin": float(result.margin), "ri_regression": float(result.regression),
             "ri_diversion": float(result.diversion), "ri_attention": float(result.attention),
             "ri_xi": float(result.xi.mean()), "ri_xi_hat": float(out.quality.detach().float().mean())}
    return result.loss, parts


@torch.no_grad()
def update_ui_centre(model: nn.Module, ui_pixel_values: Tensor, labels: Tensor, class_weights: Tensor,
                     form: str) -> Tensor:
    """`RecognizabilityModel.update_ui_centre` with the recipe's RI form (the model's config holds only the forms a
    saved model may have): embed the UI images with BatchNorm in eval mode, step the UI-centre buffers."""
    modes = {m: m.training for m in model.backbone.modules()}
    model.backbone.eval()
    try:
        ui_embeddings = model.backbone(ui_pixel_values).embedding
    finally:
        for m, mode in modes.items():
            m.training = mode
    return model.ui_centre.update(ui_embeddings, labels, class_weights, form=form)


# ---------------------------------------------------------------------------------------------- the xi log
def ri_probe_indices(num_images: int, count: int, seed: int) -> np.ndarray:
    """A fixed sample of training images for the xi / xi_hat log (the same at every logged step)."""
    rng = np.random.default_rng([seed, 21])
    return np.sort(rng.choice(num_images, size=min(count, num_images), replace=False))


@torch.no_grad()
def ri_bucket_log(model: nn.Module, classifier_weight: Tensor, train_set: Any, args: Any,
                  prototypes: TargetPrototypes | None, resolutions=RI_LOG_RESOLUTIONS) -> dict:
    """Mean target xi and regressed xi_hat per resolution over a fixed sample of training images, degraded exactly as
    in evaluation (`degrade_exact`), the model in eval mode; xi against the prototypes the recipe trains with.

    Returns:
        `{"images": n, "buckets": {r: {"xi": mean, "xi_hat": mean, "xi_std", "xi_hat_std"}}, "auc_24_8": {"xi",
        "xi_hat"}}` (AUC: probability that a 24 px image's value exceeds an 8 px one's, ties 1/2).
    """
    from rankface.data.faces import degrade_exact
    from rankface.evaluation.verification import roc_auc
    from rankface.losses.recognizability import recognizability_index

    index = ri_probe_indices(len(train_set), args.ri_log_images, args.seed)
    raw = [train_set.raw_image(int(i)) for i in index]
    labels = torch.as_tensor(train_set.labels[index])
    was_training = model.training
    model.eval()
    values: dict[int, dict[str, np.ndarray]] = {}
    try:
        for r in resolutions:
            images = np.stack([img if r >= img.shape[0] else degrade_exact(img, r) for img in raw])
            xi, xi_hat = [], []
            for start in range(0, len(images), args.eval_batch_size):
                part = slice(start, start + args.eval_batch_size)
                pixel_values = pixel_values_from_uint8(images[part], model.config)
                out = model(pixel_values.to(next(model.parameters()).device))
                v = out.embedding.float().cpu()
                if prototypes is None:
                    cos = F.normalize(v, dim=1) @ F.normalize(classifier_weight.detach().float().cpu(), dim=1).T
                else:
                    cos = prototypes.target_cos(v, labels[part], torch.as_tensor(index[part]))
                xi.append(recognizability_index(v, model.ui_centre.direction.cpu(), class_cos=cos, labels=labels[part],
                                                form=args.ri_form))
                xi_hat.append(out.quality.float().cpu())
            values[r] = {"xi": torch.cat(xi).numpy(), "xi_hat": torch.cat(xi_hat).numpy()}
    finally:
        model.train(was_training)
    out = {"images": len(index), "buckets": {
        str(r): {"xi": float(v["xi"].mean()), "xi_hat": float(v["xi_hat"].mean()), "xi_std": float(v["xi"].std()),
                 "xi_hat_std": float(v["xi_hat"].std())} for r, v in values.items()}}
    if 24 in values and 8 in values:
        out["auc_24_8"] = {k: roc_auc(np.concatenate([values[24][k], values[8][k]]),
                                      np.concatenate([np.ones(len(index), bool), np.zeros(len(index), bool)]))
                           for k in ("xi", "xi_hat")}
    return out
