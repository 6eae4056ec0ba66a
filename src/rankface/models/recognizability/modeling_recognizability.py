"""Recognizability (RI) face encoder: backbone + perceptibility attention + RI regressor + UI-centre buffers.

Chai et al., CVPR 2023 (methods.md section 3). One forward gives the embedding v, the regressed RI
(quality, higher = more recognizable) and the spatial attention map. The UI-centre EMA buffers
(`ui_centre.centre`, `.mu_ui`, `.sigma_ui`) are part of the saved model; the class-weight matrix is not
(it belongs to the training state).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from rankface.losses.recognizability import UICentre
from rankface.models.iresnet import IResNetModel
from rankface.models.mobilefacenet import MobileFaceNetModel
from rankface.models.outputs import RecognizabilityOutput
from rankface.models.recognizability.configuration_recognizability import RecognizabilityConfig

BACKBONE_MODELS: dict[str, type[PreTrainedModel]] = {
    "rankface-mobilefacenet": MobileFaceNetModel,
    "rankface-iresnet": IResNetModel,
}


class PerceptibilityAttention(nn.Module):
    """CBAM-style channel then spatial attention over a feature map `[N, C, h, w]`.

    Channel: `sigmoid(MLP(avgpool) + MLP(maxpool))` with a shared MLP `C -> C / r -> C`. Spatial:
    `sigmoid(conv_kxk([mean_c, max_c]))`. Returns the attended map and the spatial map `[N, 1, h, w]`.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        channel = torch.sigmoid(self.mlp(fmap.mean(dim=(2, 3))) + self.mlp(fmap.amax(dim=(2, 3))))
        x = fmap * channel[:, :, None, None]
        spatial = torch.sigmoid(self.spatial(torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], 1)))
        return x * spatial, spatial


class RecognizabilityPreTrainedModel(PreTrainedModel):
    """Weight initialisation and Hugging Face plumbing of the RI encoder."""

    config_class = RecognizabilityConfig
    base_model_prefix = "recognizability"
    main_input_name = "pixel_values"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Only the RI heads: the backbone initialises itself in its own constructor.
        if isinstance(module, PerceptibilityAttention):
            for layer in module.mlp:
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
            nn.init.kaiming_normal_(module.spatial.weight, mode="fan_out", nonlinearity="sigmoid")
        elif isinstance(module, nn.Linear) and getattr(module, "_rankface_ri_head", False):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)


class RecognizabilityModel(RecognizabilityPreTrainedModel):
    """RI face encoder.

    Input `pixel_values` `[N, 3, H, W]` normalised as the backbone config says (use
    `FaceImageProcessor.from_model_config(model.config)`, or `embed_with_quality` for raw images).
    """

    def __init__(self, config: RecognizabilityConfig) -> None:
        super().__init__(config)
        backbone_config = config.backbone_config()
        self.backbone = BACKBONE_MODELS[backbone_config.model_type](backbone_config)
        channels, embedding_size = backbone_config.feature_channels, backbone_config.embedding_size
        if config.attention:
            self.attention = PerceptibilityAttention(channels, config.attention_reduction, config.spatial_kernel)
            self.attention_proj = nn.Linear(channels, embedding_size)
            self.attention_proj._rankface_ri_head = True
        else:
            self.attention = self.attention_proj = None
        self.quality_dropout = nn.Dropout(config.quality_dropout)
        quality_features = channels if config.quality_input == "feature_map" else embedding_size
        self.quality_head = nn.Linear(quality_features, 1)
        self.quality_head._rankface_ri_head = True
        self.ui_centre = UICentre(embedding_size, momentum=config.ui_momentum)
        self.post_init()

    def forward(
        self, pixel_values: Tensor, output_feature_map: bool = False, return_dict: bool = True
    ) -> RecognizabilityOutput | tuple[Tensor | None, ...]:
        """Embed faces and score their recognizability.

        Args:
            pixel_values: `[N, 3, H, W]` normalised faces.
            output_feature_map: also return the backbone's `[N, C, h, w]` map.
            return_dict: return a `RecognizabilityOutput` (else its fields as a tuple, same order).

        Returns:
            `RecognizabilityOutput(embedding [N, E], quality [N], attention_map [N, 1, h, w] | None,
            attended_embedding [N, E] | None, matching_embedding [N, E], feature_map | None)`.
        """
        backbone_out = self.backbone(pixel_values, output_feature_map=True)
        v, fmap = backbone_out.embedding, backbone_out.feature_map
        quality_features = fmap.mean(dim=(2, 3)) if self.config.quality_input == "feature_map" else v
        quality = self.quality_head(self.quality_dropout(quality_features)).squeeze(1)
        attention_map = attended = None
        if self.attention is not None:
            attended_map, attention_map = self.attention(fmap)
            attended = self.attention_proj(attended_map.mean(dim=(2, 3)))
        matching = v if self.config.match_with == "v" else F.normalize(F.normalize(v, dim=1) + attended, dim=1)
        out = RecognizabilityOutput(
            embedding=v,
            quality=quality,
            attention_map=attention_map,
            attended_embedding=attended,
            matching_embedding=matching,
            feature_map=fmap if output_feature_map else None,
        )
        return out if return_dict else out.to_tuple()

    @torch.no_grad()
    def update_ui_centre(self, ui_pixel_values: Tensor, labels: Tensor, class_weights: Tensor) -> Tensor:
        """Embed unrecognizable images and step the UI-centre buffers; returns their RI `[B]`.

        BatchNorm layers run in eval mode for this pass, so the degraded batch does not shift the running
        statistics used at test time; the previous train/eval state is restored afterwards.

        Args:
            ui_pixel_values: `[B, 3, H, W]` normalised UI images (`losses.recognizability.make_unrecognizable`).
            labels: `[B]` labels of the source images.
            class_weights: `[C, E]` classifier weights (prototypes).
        """
        modes = {m: m.training for m in self.backbone.modules()}
        self.backbone.eval()
        try:
            ui_embeddings = self.backbone(ui_pixel_values).embedding
        finally:
            for m, mode in modes.items():
                m.training = mode
        return self.ui_centre.update(ui_embeddings, labels, class_weights, form=self.config.ri_form)

    def _processor(self):
        from rankface.models.face_processor import FaceImageProcessor

        return FaceImageProcessor.from_model_config(self.config)

    @torch.no_grad()
    def embed_with_quality(self, images: Any, batch_size: int = 64, normalize: bool = True) -> tuple[Tensor, Tensor]:
        """Matching embeddings and quality of raw face images, in eval mode.

        Args:
            images: a list of PIL images / uint8 `[H, W, 3]` arrays, or a tensor `[N, 3, H, W]` (uint8 or
                floats in [0, 1]); aligned faces, resized to `config.input_size` when needed.
            batch_size: images per forward pass.
            normalize: L2-normalise the embeddings.

        Returns:
            `(embeddings [N, E], quality [N])` on CPU, fp32.
        """
        if batch_size < 1:
            raise ValueError(f"embed_with_quality: batch_size must be >= 1, got {batch_size}")
        processor = self._processor()
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        items = (
            list(images)
            if not isinstance(images, Tensor)
            else list(images.unbind(0))
            if images.dim() == 4
            else [images]
        )
        embeddings, qualities = [], []
        try:
            for start in range(0, len(items), batch_size):
                pixels = processor(items[start : start + batch_size])["pixel_values"].to(device)
                out = self(pixels)
                emb = out.matching_embedding.float()
                embeddings.append((F.normalize(emb, dim=1) if normalize else emb).cpu())
                qualities.append(out.quality.float().cpu())
        finally:
            self.train(was_training)
        if not embeddings:
            raise ValueError("embed_with_quality: no images given")
        return torch.cat(embeddings), torch.cat(qualities)

    def quality(self, images: Any, batch_size: int = 64) -> Tensor:
        """Quality `[N]` (regressed RI, higher = more recognizable) of raw face images; see `embed_with_quality`."""
        return self.embed_with_quality(images, batch_size=batch_size)[1]
