"""Margin heads for face recognition as logit transforms, and the normalised classifier they sit on.

A head maps the cosine matrix `cos [B, C]` between normalised embeddings and normalised class weights
to scaled logits `[B, C]`: the margin changes the target column only, every logit is multiplied by
`head.scale`. The trigonometry runs in fp32 with autocast off, and cos is clamped to
`[-1 + 1e-7, 1 - 1e-7]` before `acos`, so bf16/fp16 training cannot produce NaN at cos = +-1.

Heads (defaults from the papers):
- `ArcFace(s=64, m=0.5)`: `s cos(theta_y + m)` (Deng et al., CVPR 2019).
- `CosFace(s=64, m=0.35)`: `s (cos theta_y - m)` (Wang et al., CVPR 2018); `CosFace.unpg_preset()` uses
  m = 0.5 as in the UNPG authors' configuration.
- `AdaFace(s=64, m=0.4, h=0.333, t_alpha=0.01)`: norm-adaptive angular and additive margin (Kim et al.,
  CVPR 2022); needs the embedding norms.
- `MagFace(s=64, l_a=10, u_a=110, l_m=0.45, u_m=0.8, lambda_g=35)`: norm-dependent ArcFace margin plus
  the regulariser `lambda_g g(a)` (Meng et al., CVPR 2021); needs the embedding norms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COS_EPS = 1e-7  # cos clamp before acos: keeps d acos / d cos finite (about 2e3 at the bound in fp32)


def _check_cos_labels(cos: Tensor, labels: Tensor, where: str) -> None:
    if cos.dim() != 2:
        raise ValueError(f"{where}: `cos` must be [B, C], got shape {tuple(cos.shape)}")
    if labels.dim() != 1 or labels.shape[0] != cos.shape[0]:
        raise ValueError(
            f"{where}: `labels` must be [B] with B = {cos.shape[0]} (rows of `cos`), got shape {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{where}: `labels` must be an integer tensor of class indices, got {labels.dtype}")
    if labels.numel():
        lo, hi = torch.stack([labels.min(), labels.max()]).tolist()
        if lo < 0 or hi >= cos.shape[1]:
            raise ValueError(
                f"{where}: `labels` must lie in [0, {cos.shape[1] - 1}] (C = {cos.shape[1]} classes), "
                f"got values in [{lo}, {hi}]"
            )


def _norms_column(norms: Tensor | None, batch: int, where: str) -> Tensor:
    if norms is None:
        raise ValueError(f"{where} needs the embedding norms: call it with `norms=embeddings.norm(dim=1)` ([B])")
    norms = norms.reshape(-1) if norms.dim() == 2 and norms.shape[1] == 1 else norms
    if norms.dim() != 1 or norms.shape[0] != batch:
        raise ValueError(f"{where}: `norms` must be [B] with B = {batch}, got shape {tuple(norms.shape)}")
    return norms.float()


class MarginHead(nn.Module):
    """Base class: `forward(cos [B, C], labels [B], norms=None) -> logits [B, C]` (scaled by `self.scale`)."""

    needs_norms: bool = False

    def __init__(self, s: float) -> None:
        super().__init__()
        if s <= 0:
            raise ValueError(f"{type(self).__name__}: scale `s` must be > 0, got {s}")
        self.scale = float(s)

    def target_logit(self, cos_y: Tensor, norms: Tensor | None) -> Tensor:
        """Margin-adjusted cosine of the target class, unscaled: `[B] -> [B]` (fp32)."""
        raise NotImplementedError

    def forward(self, cos: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        """Scaled logits with the margin on the target column.

        Args:
            cos: `[B, C]` cosines between normalised embeddings and normalised class weights.
            labels: `[B]` integer class indices.
            norms: `[B]` embedding norms (AdaFace, MagFace only).

        Returns:
            `[B, C]` fp32 logits, already multiplied by `self.scale`.
        """
        _check_cos_labels(cos, labels, type(self).__name__)
        with torch.autocast(device_type=cos.device.type, enabled=False):
            cos = cos.float()
            labels = labels.long()
            if self.needs_norms:
                norms = _norms_column(norms, cos.shape[0], type(self).__name__)
            cos_y = cos.gather(1, labels[:, None]).squeeze(1)
            target = self.target_logit(cos_y, norms)
            # scatter builds a new tensor, so autograd sees the target column replaced, not edited in place
            logits = cos.scatter(1, labels[:, None], target[:, None].to(cos.dtype))
            return logits * self.scale

    def regularizer(self, norms: Tensor | None) -> Tensor | None:
        """Extra loss term depending on the embedding norms (MagFace); `None` for heads without one."""
        return None

    def extra_repr(self) -> str:
        return f"s={self.scale}"


def _cos_plus_margin(cos_y: Tensor, m: Tensor | float, monotonic: bool) -> Tensor:
    """`cos(theta + m)` with theta = acos(clamped cos); `monotonic` applies insightface's fallback past pi."""
    theta = torch.acos(cos_y.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS))
    out = torch.cos(theta + m)
    if monotonic:
        # theta + m > pi makes cos(theta + m) increase again; fall back to cos - m sin(m) (ArcFace paper, App.)
        m_t = torch.as_tensor(m, dtype=cos_y.dtype, device=cos_y.device)
        out = torch.where(theta + m_t <= math.pi, out, cos_y - m_t * torch.sin(m_t))
    return out


class ArcFace(MarginHead):
    """Additive angular margin: target logit `s cos(theta_y + m)`.

    Args:
        s: scale.
        m: angular margin in radians.
        monotonic: when `theta_y + m > pi`, use `cos theta_y - m sin m` instead (keeps the target logit
            decreasing in theta; off by default, as in methods.md and the UNPG authors' code).
    """

    def __init__(self, s: float = 64.0, m: float = 0.5, monotonic: bool = False) -> None:
        super().__init__(s)
        self.m = float(m)
        self.monotonic = bool(monotonic)

    def target_logit(self, cos_y: Tensor, norms: Tensor | None) -> Tensor:
        return _cos_plus_margin(cos_y, self.m, self.monotonic)

    def extra_repr(self) -> str:
        return f"s={self.scale}, m={self.m}, monotonic={self.monotonic}"


class CosFace(MarginHead):
    """Additive cosine margin: target logit `s (cos theta_y - m)`.

    Args:
        s: scale.
        m: cosine margin (0.35 as in the CosFace paper; `unpg_preset()` gives the UNPG authors' 0.5).
    """

    def __init__(self, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__(s)
        self.m = float(m)

    @classmethod
    def unpg_preset(cls) -> CosFace:
        """CosFace with m = 0.5, as in the UNPG authors' configuration."""
        return cls(s=64.0, m=0.5)

    def target_logit(self, cos_y: Tensor, norms: Tensor | None) -> Tensor:
        return cos_y - self.m

    def extra_repr(self) -> str:
        return f"s={self.scale}, m={self.m}"


class AdaFace(MarginHead):
    """Quality-adaptive margin (AdaFace): the embedding norm, standardised by batch statistics, sets the margin.

    With `z = clip(h (|x| - mu) / (sigma + eps), -1, 1)` (norms detached, clipped to [1e-3, 100]):
    target logit `s (cos(clip(theta_y - m z, eps, pi - eps)) - (m + m z))`. `mu` and `sigma` are EMA
    buffers of the batch mean and (unbiased) std of the norms, updated in training mode only:
    `mu <- t_alpha * batch_mean + (1 - t_alpha) * mu` (initial 20 and 100, as in the authors' code).

    Args:
        s: scale.
        m: margin.
        h: concentration of the standardised norm.
        t_alpha: EMA weight of the current batch.
        eps: clip constant of the authors' code.
    """

    needs_norms = True

    def __init__(
        self, s: float = 64.0, m: float = 0.4, h: float = 0.333, t_alpha: float = 0.01, eps: float = 1e-3
    ) -> None:
        super().__init__(s)
        self.m, self.h, self.t_alpha, self.eps = float(m), float(h), float(t_alpha), float(eps)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    @torch.no_grad()
    def _update_stats(self, safe_norms: Tensor) -> None:
        self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * safe_norms.mean())
        if safe_norms.numel() > 1:  # the std of one sample is undefined; keep the previous estimate
            self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * safe_norms.std())

    def margin_scaler(self, norms: Tensor) -> Tensor:
        """`[B]` standardised, clipped norm `z` in [-1, 1] (no gradient), with the current buffers."""
        safe = norms.detach().float().clamp(1e-3, 100.0)
        z = (safe - self.batch_mean) / (self.batch_std + self.eps) * self.h
        return z.clamp(-1.0, 1.0)

    def target_logit(self, cos_y: Tensor, norms: Tensor | None) -> Tensor:
        if self.training:
            self._update_stats(norms.detach().float().clamp(1e-3, 100.0))
        z = self.margin_scaler(norms)
        theta = torch.acos(cos_y.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS))
        theta_m = (theta - self.m * z).clamp(self.eps, math.pi - self.eps)
        return torch.cos(theta_m) - (self.m + self.m * z)

    def extra_repr(self) -> str:
        return f"s={self.scale}, m={self.m}, h={self.h}, t_alpha={self.t_alpha}"


class MagFace(MarginHead):
    """Magnitude-aware margin (MagFace): the margin grows with the clamped norm `a` in [l_a, u_a].

    `m(a) = (u_m - l_m) / (u_a - l_a) (a - l_a) + l_m`, target logit `s cos(theta_y + m(a))`, and the
    regulariser `lambda_g mean(a / u_a^2 + 1 / a)` that pulls norms up (`regularizer(norms)`; add it to
    the loss, as `MarginLoss` and `UNPGLoss` do). Gradients flow into the norms through both.

    Args:
        s: scale.
        l_a, u_a: norm range.
        l_m, u_m: margin range.
        lambda_g: weight of the regulariser.
        monotonic: insightface's fallback `cos theta - m sin m` when `theta + m > pi` (the MagFace code does
            this with its own threshold; off by default to keep the plain form of methods.md).
    """

    needs_norms = True

    def __init__(
        self,
        s: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        lambda_g: float = 35.0,
        monotonic: bool = False,
    ) -> None:
        super().__init__(s)
        if not 0 < l_a < u_a:
            raise ValueError(f"MagFace: need 0 < l_a < u_a, got l_a={l_a}, u_a={u_a}")
        self.l_a, self.u_a, self.l_m, self.u_m = float(l_a), float(u_a), float(l_m), float(u_m)
        self.lambda_g = float(lambda_g)
        self.monotonic = bool(monotonic)

    def clamped_norms(self, norms: Tensor) -> Tensor:
        return norms.float().clamp(self.l_a, self.u_a)

    def margin(self, norms: Tensor) -> Tensor:
        """`[B]` adaptive margin `m(a)`."""
        a = self.clamped_norms(norms)
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def target_logit(self, cos_y: Tensor, norms: Tensor | None) -> Tensor:
        return _cos_plus_margin(cos_y, self.margin(norms), self.monotonic)

    def regularizer(self, norms: Tensor | None) -> Tensor:
        """`lambda_g * mean(a / u_a^2 + 1 / a)` with `a = clamp(norms, l_a, u_a)`; `[B] -> []` fp32."""
        if norms is None:
            raise ValueError("MagFace.regularizer needs the embedding norms `[B]`, got None")
        with torch.autocast(device_type=norms.device.type, enabled=False):
            a = self.clamped_norms(_norms_column(norms, norms.shape[0], "MagFace.regularizer"))
            return self.lambda_g * (a / self.u_a**2 + 1.0 / a).mean()

    def extra_repr(self) -> str:
        return (
            f"s={self.scale}, l_a={self.l_a}, u_a={self.u_a}, l_m={self.l_m}, u_m={self.u_m}, lambda_g={self.lambda_g}"
        )


class NormalizedClassifier(nn.Module):
    """Class-weight matrix `W [C, E]`; returns cosines between normalised embeddings and normalised rows of W.

    Its state belongs to the training state (optimizer checkpoint), not to the encoder checkpoint: an
    encoder is published without it.

    Args:
        embedding_size: E.
        num_classes: C.
    """

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        if embedding_size <= 0 or num_classes <= 0:
            raise ValueError(
                "NormalizedClassifier: embedding_size and num_classes must be > 0, "
                f"got {embedding_size}, {num_classes}"
            )
        self.embedding_size, self.num_classes = int(embedding_size), int(num_classes)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)  # insightface arcface_torch's init; only the direction matters

    def normalized_weight(self) -> Tensor:
        """`[C, E]` fp32 unit-norm class prototypes."""
        return F.normalize(self.weight.float(), dim=1)

    def forward(self, embeddings: Tensor) -> Tensor:
        """`[B, E]` embeddings (any norm) -> `[B, C]` fp32 cosines."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"NormalizedClassifier: embeddings must be [B, {self.embedding_size}], got {tuple(embeddings.shape)}"
            )
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=1), self.normalized_weight())

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}"


def margin_cross_entropy(head: MarginHead, cos: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
    """Cross-entropy of the head's logits plus its regulariser (MagFace): `[B, C], [B] -> []` fp32."""
    logits = head(cos, labels, norms=norms)
    loss = F.cross_entropy(logits, labels.long())
    reg = head.regularizer(norms)
    return loss if reg is None else loss + reg


class MarginLoss(nn.Module):
    """Plain margin-softmax loss: `MarginLoss(head)(embeddings, labels, cos) -> []`.

    Same call signature as `UNPGLoss`, so the two are interchangeable in a recipe. The embeddings are
    used only for their norms (AdaFace, MagFace).

    Args:
        head: a `MarginHead`.
    """

    def __init__(self, head: MarginHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, embeddings: Tensor | None, labels: Tensor, cos: Tensor, norms: Tensor | None = None) -> Tensor:
        """Args: embeddings `[B, E]` (un-normalised; may be None when `norms` is given or unneeded),
        labels `[B]`, cos `[B, C]`, norms `[B]` (default: `embeddings.norm(dim=1)`). Returns a scalar."""
        if norms is None and self.head.needs_norms:
            if embeddings is None:
                raise ValueError(f"MarginLoss({type(self.head).__name__}) needs `embeddings` or `norms`")
            norms = embeddings.float().norm(dim=1)
        return margin_cross_entropy(self.head, cos, labels, norms)


HEADS = {
    "arcface": ArcFace,
    "cosface": CosFace,
    "cosface-unpg": lambda **kw: CosFace(**{"s": 64.0, "m": 0.5, **kw}),
    "adaface": AdaFace,
    "magface": MagFace,
}


def build_head(name: str, **kwargs) -> MarginHead:
    """Head by name (`arcface`, `cosface`, `cosface-unpg` (m = 0.5), `adaface`, `magface`), kwargs override."""
    key = name.lower()
    if key not in HEADS:
        raise ValueError(f"unknown margin head {name!r}; expected one of {sorted(HEADS)}")
    return HEADS[key](**kwargs)
