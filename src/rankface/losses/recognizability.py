"""Recognizability index (RI), index diversion and perceptibility-attention losses (methods.md section 3).

Chai, Ng, Low, Park, Teoh. "Recognizability Embedding Enhancement for Very Low-Resolution Face
Recognition and Quality Estimation". CVPR 2023, arXiv 2304.10066. The paper's equations are not public;
this is rankface's reading, with every open choice an argument (defaults from methods.md):

- UI images: extreme degradation of training images (`make_unrecognizable`: 4-6 px and back, blur).
- `UICentre`: EMA buffers (momentum 0.99, never back-propagated, saved with the model) of the UI centre
  `u` (mean of normalised UI embeddings; `direction` is its normalisation), of `mu_UI` (mean RI of UI
  samples) and `sigma_UI` (their std).
- RI, with `v` the normalised embedding, `w_y` the true class prototype, `w_j` the nearest other one:
  product form `xi = (1 - cos(v, u)) (cos(v, w_y) - max_{j != y} cos(v, w_j))` (range [-4, 4]),
  ratio form `xi = (1 - cos(v, u)) cos(v, w_y) / (max_{j != y} cos(v, w_j) + 1 + eps)`,
  clamped product `xi = (1 - cos(v, u)) max(0, cos(v, w_y) - max_{j != y} cos(v, w_j))` (issue 21: the product's
  derivative in cos(v, u) is `-(pos - neg)`, positive for a misclassified face, so the index-diversion hinge pulled
  such a face *towards* the UI centre; clamped, it never does).
- Target prototypes: by default the live classifier rows (the old, in-sample target); the trainer may pass other
  cosines (`target_cos`), e.g. to frozen clean class centroids that leave the sample's own image out.
- `L_reg = SmoothL1_beta(xi_hat, xi.detach())`, beta = 0.75.
- `L_ID = mean max(0, mu_UI + tau - xi)`, tau = sigma_UI by default, gradient into v only.
- `L_att = || v_att - normalise(v - (v.u) u) ||^2` (target detached), mean over the batch.
- `L = L_margin + alpha L_reg + beta L_ID + gamma L_att`, L_ID and L_att off during a warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

RIForm = Literal["product", "ratio", "product_clamped"]
RI_FORMS = ("product", "ratio", "product_clamped")


# ---------------------------------------------------------------------------------------------- UI images
def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    # replicate padding: no dark frame from zero padding; separable row then column pass, one group per channel
    out = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_unrecognizable(
    images: Tensor,
    size_range: tuple[int, int] = (4, 6),
    blur: bool = True,
    blur_sigma: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unrecognizable versions of face images: down-sample to r x r px (r uniform in `size_range`,
    inclusive, per image, antialiased) and back up (bilinear), then optionally Gaussian-blur.

    Args:
        images: `[B, C, H, W]` float images (any normalisation).
        size_range: inclusive (min, max) side in pixels of the intermediate image.
        blur: apply a Gaussian blur after the up-sampling.
        blur_sigma: blur standard deviation in output pixels.
        generator: CPU generator for r (seeded, deterministic).

    Returns:
        `[B, C, H, W]` tensor of the same dtype and device.
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(
            f"make_unrecognizable: `images` must be a float [B, C, H, W] tensor, got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    lo, hi = size_range
    if not 1 <= lo <= hi:
        raise ValueError(
            f"make_unrecognizable: `size_range` must be (min, max) with 1 <= min <= max, got {size_range}"
        )
    if blur and blur_sigma <= 0:
        raise ValueError(f"make_unrecognizable: `blur_sigma` must be > 0 when blur=True, got {blur_sigma}")
    b, _, h, w = images.shape
    sizes = torch.randint(lo, hi + 1, (b,), generator=generator)
    source = images.float()  # antialiased resizing has no bf16/fp16 kernel on CPU; fp32 then cast back
    out = torch.empty_like(source)
    for r in sizes.unique().tolist():
        idx = (sizes == r).nonzero().squeeze(1).to(images.device)
        small = F.interpolate(source[idx], size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        out[idx] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return (_gaussian_blur(out, blur_sigma) if blur else out).to(images.dtype)


# ---------------------------------------------------------------------------------------------- RI
def ri_from_cosines(
    ui_cos: Tensor, pos_cos: Tensor, neg_cos: Tensor, form: RIForm = "product", eps: float = 1e-6
) -> Tensor:
    """RI from its three inputs, all `[B]`: cos(v, u), cos(v, w_y), max_{j != y} cos(v, w_j) -> `[B]`.

    Product form `(1 - ui)(pos - neg)`: increasing in pos and decreasing in neg everywhere; decreasing in
    ui where pos > neg (for a misclassified face, pos < neg, moving away from the UI centre makes xi more
    negative). Ratio form `(1 - ui) pos / (neg + 1 + eps)`: increasing in pos; decreasing in ui and neg
    where pos >= 0. Clamped product `(1 - ui) max(0, pos - neg)`: never increasing in ui; 0 (and flat) for a
    misclassified face.
    """
    if form == "product":
        return (1.0 - ui_cos) * (pos_cos - neg_cos)
    if form == "product_clamped":
        return (1.0 - ui_cos) * (pos_cos - neg_cos).clamp_min(0.0)
    if form == "ratio":
        return (1.0 - ui_cos) * pos_cos / (neg_cos + 1.0 + eps)
    raise ValueError(f"RI `form` must be one of {RI_FORMS}, got {form!r}")


def _pos_neg_from_cos(class_cos: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if class_cos.shape[1] < 2:
        raise ValueError(f"RI needs at least 2 classes (a negative prototype), got C = {class_cos.shape[1]}")
    labels = labels.long()[:, None]
    pos = class_cos.gather(1, labels).squeeze(1)
    neg = class_cos.scatter(1, labels, float("-inf")).amax(dim=1)
    return pos, neg


def recognizability_index(
    v: Tensor,
    ui_direction: Tensor,
    *,
    class_weights: Tensor | None = None,
    labels: Tensor | None = None,
    class_cos: Tensor | None = None,
    w_pos: Tensor | None = None,
    w_neg_max: Tensor | None = None,
    form: RIForm = "product",
    eps: float = 1e-6,
) -> Tensor:
    """Recognizability index of embeddings; gradients flow into every tensor given (detach what must not learn).

    Give the prototypes one of three ways: `class_weights [C, E]` + `labels [B]`; `class_cos [B, C]`
    (cosines to the normalised class weights, e.g. the classifier output) + `labels`; or the prototypes
    themselves, `w_pos [B, E]` and `w_neg_max [B, E]`.

    Args:
        v: `[B, E]` embeddings (normalised here).
        ui_direction: `[E]` UI centre (normalised here; a zero vector means cos(v, u) = 0).
        form: "product" (default) or "ratio".
        eps: ratio-form denominator guard.

    Returns:
        `[B]` fp32 RI, higher = more recognizable.
    """
    if v.dim() != 2:
        raise ValueError(f"recognizability_index: `v` must be [B, E], got {tuple(v.shape)}")
    if ui_direction.shape != (v.shape[1],):
        raise ValueError(
            f"recognizability_index: `ui_direction` must be [{v.shape[1]}], got {tuple(ui_direction.shape)}"
        )
    with torch.autocast(device_type=v.device.type, enabled=False):
        vn = F.normalize(v.float(), dim=1)
        ui_cos = vn @ F.normalize(ui_direction.float(), dim=0)
        if class_weights is not None or class_cos is not None:
            if labels is None or labels.shape != (v.shape[0],):
                raise ValueError(f"recognizability_index: `labels` must be [{v.shape[0]}] with class weights/cosines")
            if class_cos is None:
                if class_weights.dim() != 2 or class_weights.shape[1] != v.shape[1]:
                    raise ValueError(
                        f"recognizability_index: `class_weights` must be [C, {v.shape[1]}], "
                        f"got {tuple(class_weights.shape)}"
                    )
                class_cos = vn @ F.normalize(class_weights.float(), dim=1).T
            elif class_cos.shape[0] != v.shape[0]:
                raise ValueError(
                    f"recognizability_index: `class_cos` must be [{v.shape[0]}, C], got {tuple(class_cos.shape)}"
                )
            pos, neg = _pos_neg_from_cos(class_cos.float(), labels)
        elif w_pos is not None and w_neg_max is not None:
            if w_pos.shape != v.shape or w_neg_max.shape != v.shape:
                raise ValueError(f"recognizability_index: `w_pos` and `w_neg_max` must be {tuple(v.shape)} like `v`")
            pos = (vn * F.normalize(w_pos.float(), dim=1)).sum(1)
            neg = (vn * F.normalize(w_neg_max.float(), dim=1)).sum(1)
        else:
            raise ValueError(
                "recognizability_index: give `class_weights`+`labels`, `class_cos`+`labels`, or `w_pos`+`w_neg_max`"
            )
        return ri_from_cosines(ui_cos, pos, neg, form=form, eps=eps)


# ---------------------------------------------------------------------------------------------- UI centre
class UICentre(nn.Module):
    """EMA buffers of the unrecognizable-image cluster: `centre [E]`, `mu_ui []`, `sigma_ui []`.

    Updated under `no_grad` (never back-propagated), saved in `state_dict`. The first update copies the
    batch value; later ones do `buf <- momentum * buf + (1 - momentum) * batch`. Under multi-process
    training the batch statistics are averaged over all processes (`sync=True`), so every rank holds
    the same buffers.

    Args:
        embedding_size: E.
        momentum: EMA momentum (0.99).
        sync: all-reduce the batch statistics when `torch.distributed` runs more than one process.
    """

    def __init__(self, embedding_size: int, momentum: float = 0.99, sync: bool = True) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"UICentre: `momentum` must be in [0, 1), got {momentum}")
        self.embedding_size, self.momentum, self.sync = int(embedding_size), float(momentum), bool(sync)
        self.register_buffer("centre", torch.zeros(embedding_size))
        self.register_buffer("mu_ui", torch.zeros(()))
        self.register_buffer("sigma_ui", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @property
    def direction(self) -> Tensor:
        """`[E]` normalised UI centre (zero before the first update), detached."""
        return F.normalize(self.centre.detach().float(), dim=0)

    def _global_sums(self, *tensors: Tensor) -> list[Tensor]:
        if self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flat = torch.cat([t.reshape(-1) for t in tensors])
            dist.all_reduce(flat)
            return list(flat.split([t.numel() for t in tensors]))
        return [t.reshape(-1) for t in tensors]

    def _ema(self, buf: Tensor, value: Tensor, first: bool) -> None:
        if first:
            buf.copy_(value.reshape(buf.shape))
        else:
            buf.mul_(self.momentum).add_((1.0 - self.momentum) * value.reshape(buf.shape))

    @torch.no_grad()
    def update_centre(self, ui_embeddings: Tensor) -> None:
        """EMA step of the centre with the mean of the normalised `ui_embeddings [B, E]`."""
        if ui_embeddings.dim() != 2 or ui_embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"UICentre.update_centre: `ui_embeddings` must be [B, {self.embedding_size}], "
                f"got {tuple(ui_embeddings.shape)}"
            )
        x = F.normalize(ui_embeddings.detach().float(), dim=1)
        total, count = self._global_sums(x.sum(0), x.new_tensor([x.shape[0]]))
        self._ema(self.centre, total / count.clamp_min(1), bool(self.num_updates == 0))

    @torch.no_grad()
    def update_stats(self, ui_ri: Tensor) -> None:
        """EMA step of `mu_ui` and `sigma_ui` with the mean and (population) std of `ui_ri [B]`."""
        r = ui_ri.detach().float().reshape(-1)
        total, sq, count = self._global_sums(r.sum(), (r * r).sum(), r.new_tensor(float(r.numel())))
        count = count.clamp_min(1)
        mean = total / count
        std = (sq / count - mean * mean).clamp_min(0).sqrt()
        first = bool(self.num_updates == 0)
        self._ema(self.mu_ui, mean, first)
        self._ema(self.sigma_ui, std, first)

    @torch.no_grad()
    def update(self, ui_embeddings: Tensor, labels: Tensor, class_weights: Tensor, form: RIForm = "product") -> Tensor:
        """One step: centre from `ui_embeddings [B, E]`, then the RI of the UI samples (labels of their
        source images, `class_weights [C, E]`) with the new centre for `mu_ui`/`sigma_ui`. Returns that RI `[B]`."""
        self.update_centre(ui_embeddings)
        ri = recognizability_index(
            ui_embeddings.detach(), self.direction, class_weights=class_weights.detach(), labels=labels, form=form
        )
        self.update_stats(ri)
        self.num_updates += 1
        return ri

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, momentum={self.momentum}"


# ---------------------------------------------------------------------------------------------- losses
def ri_regression_loss(quality: Tensor, target: Tensor, beta: float = 0.75) -> Tensor:
    """Smooth-L1 (`beta`) of the regressed RI `quality [B]` against `target [B]` (detached here) -> `[]`."""
    if quality.shape != target.shape:
        raise ValueError(
            f"ri_regression_loss: `quality` {tuple(quality.shape)} and `target` {tuple(target.shape)} "
            "must have the same shape [B]"
        )
    return F.smooth_l1_loss(quality.float(), target.detach().float(), beta=beta)


def index_diversion_loss(xi: Tensor, mu_ui: Tensor | float, tau: Tensor | float) -> Tensor:
    """Hinge `mean max(0, mu_ui + tau - xi)` over `xi [B]` -> `[]`; `mu_ui` and `tau` are detached."""
    margin = (
        torch.as_tensor(mu_ui, device=xi.device).detach().float()
        + torch.as_tensor(tau, device=xi.device).detach().float()
    )
    return F.relu(margin - xi.float()).mean()


def attention_target(v: Tensor, ui_direction: Tensor) -> Tensor:
    """`normalise(v - (v.u) u)` with v and u normalised: `[B, E]` unit vectors orthogonal to u, detached."""
    with torch.autocast(device_type=v.device.type, enabled=False):
        vn = F.normalize(v.detach().float(), dim=1)
        u = F.normalize(ui_direction.detach().float(), dim=0)
        return F.normalize(vn - (vn @ u)[:, None] * u[None, :], dim=1)


def attention_loss(
    attended: Tensor, v: Tensor, ui_direction: Tensor, reduction: Literal["batch", "elements"] = "batch"
) -> Tensor:
    """MSE of the attended embedding `attended [B, E]` towards `attention_target(v, u)`.

    `reduction="batch"`: squared distance summed over E, averaged over B (default, so the term does not
    shrink with E); `"elements"`: `F.mse_loss` mean over all elements.
    """
    if attended.shape != v.shape:
        raise ValueError(f"attention_loss: `attended` {tuple(attended.shape)} must match `v` {tuple(v.shape)}")
    diff = attended.float() - attention_target(v, ui_direction)
    if reduction == "batch":
        return (diff * diff).sum(1).mean()
    if reduction == "elements":
        return (diff * diff).mean()
    raise ValueError(f"attention_loss: `reduction` must be 'batch' or 'elements', got {reduction!r}")


@dataclass
class RecognizabilityLossOutput:
    """Total loss and its parts (parts detached, for logging); `xi` is the detached RI target `[B]`."""

    loss: Tensor
    margin: Tensor
    regression: Tensor
    diversion: Tensor
    attention: Tensor
    xi: Tensor
    active: bool


class RecognizabilityLoss(nn.Module):
    """`L = L_margin + alpha L_reg + beta L_ID + gamma L_att`, with L_ID and L_att gated by a warm-up.

    A training step (the model holds the `UICentre`; this loss only reads it)::

        ui = make_unrecognizable(images, generator=g)
        with torch.no_grad():
            ui_centre.update(encoder(ui).embedding, labels, classifier.weight)
        out = encoder(images)                           # embedding, quality, attended embedding
        cos = classifier(out.embedding)
        loss = ri_loss(out.embedding, labels, cos, classifier.weight, out.quality, ui_centre,
                       attended=out.attended, step=step).loss

    Args:
        margin_loss: `MarginLoss(head)` or `UNPGLoss(head)` (called as `(embeddings, labels, cos, norms=)`).
        alpha, beta, gamma: weights of regression, index diversion and attention (1, 1, 1).
        warmup_steps: L_ID and L_att are 0 while `step < warmup_steps` (methods.md: about one epoch;
            recipes set it from the epoch length).
        regression_beta: Smooth-L1 beta (0.75).
        tau: hinge margin over mu_UI; None uses the current `sigma_ui` buffer.
        diversion_on: "xi" (RI of the current embedding, gradient into v; default) or "xi_hat" (the
            regressed quality).
        form: RI form, "product" or "ratio".
        attention_reduction: see `attention_loss`.
    """

    def __init__(
        self,
        margin_loss: nn.Module,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        warmup_steps: int = 0,
        regression_beta: float = 0.75,
        tau: float | None = None,
        diversion_on: Literal["xi", "xi_hat"] = "xi",
        form: RIForm = "product",
        attention_reduction: Literal["batch", "elements"] = "batch",
    ) -> None:
        super().__init__()
        if diversion_on not in ("xi", "xi_hat"):
            raise ValueError(f"RecognizabilityLoss: `diversion_on` must be 'xi' or 'xi_hat', got {diversion_on!r}")
        if form not in RI_FORMS:
            raise ValueError(f"RecognizabilityLoss: `form` must be one of {RI_FORMS}, got {form!r}")
        if warmup_steps < 0:
            raise ValueError(f"RecognizabilityLoss: `warmup_steps` must be >= 0, got {warmup_steps}")
        self.margin_loss = margin_loss
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.warmup_steps, self.regression_beta, self.tau = int(warmup_steps), float(regression_beta), tau
        self.diversion_on, self.form, self.attention_reduction = diversion_on, form, attention_reduction

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        cos: Tensor,
        class_weights: Tensor,
        quality: Tensor,
        ui_centre: UICentre,
        attended: Tensor | None = None,
        step: int = 0,
        norms: Tensor | None = None,
        target_cos: Tensor | None = None,
    ) -> RecognizabilityLossOutput:
        """Args:
        embeddings: `[B, E]` un-normalised embeddings v.
        labels: `[B]` class indices.
        cos: `[B, C]` classifier cosines (margin loss input; also the detached RI target's prototypes).
        class_weights: `[C, E]` classifier weights (detached for L_ID).
        quality: `[B]` regressed RI xi_hat.
        ui_centre: the model's `UICentre` (read only).
        attended: `[B, E]` attended embedding v_att, or None (no attention branch: L_att = 0).
        step: global optimisation step, for the warm-up.
        norms: `[B]` embedding norms for AdaFace/MagFace (default from `embeddings`).
        target_cos: `[B, C]` cosines of `embeddings` to the prototypes the RI is measured against, with gradient
            into the embeddings (the regression target uses them detached, the index diversion as they are).
            None: the classifier's (`cos` for the target, `class_weights` for the diversion), the old behaviour.
        """
        if quality.shape != labels.shape:
            raise ValueError(
                f"RecognizabilityLoss: `quality` must be [B] = {tuple(labels.shape)}, got {tuple(quality.shape)}"
            )
        margin = self.margin_loss(embeddings, labels, cos, norms=norms)
        u = ui_centre.direction
        xi_target = recognizability_index(
            embeddings.detach(), u, class_cos=(cos if target_cos is None else target_cos).detach(), labels=labels,
            form=self.form,
        )
        regression = ri_regression_loss(quality, xi_target, self.regression_beta)
        zero = margin.new_zeros(())
        active = step >= self.warmup_steps
        diversion = attention = zero
        if active and self.beta != 0:
            if self.diversion_on == "xi" and target_cos is not None:
                xi = recognizability_index(embeddings, u, class_cos=target_cos, labels=labels, form=self.form)
            elif self.diversion_on == "xi":
                xi = recognizability_index(
                    embeddings, u, class_weights=class_weights.detach(), labels=labels, form=self.form
                )
            else:
                xi = quality
            tau = ui_centre.sigma_ui if self.tau is None else self.tau
            diversion = index_diversion_loss(xi, ui_centre.mu_ui, tau)
        if active and self.gamma != 0 and attended is not None:
            attention = attention_loss(attended, embeddings, u, self.attention_reduction)
        loss = margin + self.alpha * regression + self.beta * diversion + self.gamma * attention
        return RecognizabilityLossOutput(
            loss=loss,
            margin=margin.detach(),
            regression=regression.detach(),
            diversion=diversion.detach(),
            attention=attention.detach(),
            xi=xi_target,
            active=active,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, warmup_steps={self.warmup_steps}, "
            f"diversion_on={self.diversion_on!r}, form={self.form!r}"
        )
