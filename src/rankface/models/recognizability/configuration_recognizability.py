"""Configuration of the recognizability (RI) face encoder: a backbone config plus the RI heads' settings."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from rankface.models.iresnet import IResNetConfig
from rankface.models.mobilefacenet import MobileFaceNetConfig

BACKBONE_CONFIGS: dict[str, type[PretrainedConfig]] = {
    MobileFaceNetConfig.model_type: MobileFaceNetConfig,
    IResNetConfig.model_type: IResNetConfig,
}
QUALITY_INPUTS = ("embedding", "feature_map")


def _backbone_field(name: str) -> property:
    """A read-only property giving the backbone config's `name` (a field of the input contract)."""
    return property(lambda self: getattr(self.backbone_config(), name), doc=f"The backbone config's `{name}`.")


class RecognizabilityConfig(PretrainedConfig):
    """Architecture of a recognizability face encoder (methods.md section 3).

    Args:
        backbone: the backbone's config as a dict with its `model_type` ("rankface-mobilefacenet" or
            "rankface-iresnet"), or a config object; default: a 112 px MobileFaceNet.
        attention: build the perceptibility attention branch (off for the "regressor only" ablations).
        attention_reduction: channel-attention MLP reduction (16, CBAM).
        spatial_kernel: spatial-attention convolution size (7, CBAM).
        quality_dropout: dropout before the RI regressor's linear layer (0.4).
        quality_input: what the RI regressor reads: "embedding" (the backbone embedding v, default) or
            "feature_map" (the backbone's last feature map, averaged over space). Why the second: ArcFace
            normalises v, so training is free to remove any direction of v that tells a blurred face from a sharp
            one, and a linear read-out of v loses the resolution signal the target holds (issue 21, F1 half A: the
            head on v told 24 px from 8 px with AUC 0.68 at step 600 while its target stayed at 0.95; read from the
            feature map, 0.996); the pooled activations keep how much detail the face showed, which the margin
            loss does not normalise away.
        match_with: embedding used for matching: "v" (the backbone embedding, default) or "v+att"
            (`normalise(normalise(v) + v_att)`).
        ri_form: RI form used for the UI statistics and by the training loss ("product" or "ratio").
        ui_momentum: EMA momentum of the UI-centre buffers (0.99).
    """

    model_type = "rankface-recognizability"

    def __init__(
        self,
        backbone: dict[str, Any] | PretrainedConfig | None = None,
        attention: bool = True,
        attention_reduction: int = 16,
        spatial_kernel: int = 7,
        quality_dropout: float = 0.4,
        quality_input: str = "embedding",
        match_with: str = "v",
        ri_form: str = "product",
        ui_momentum: float = 0.99,
        **kwargs,
    ) -> None:
        if backbone is None:
            backbone = MobileFaceNetConfig()
        if not isinstance(backbone, PretrainedConfig):
            backbone = dict(backbone)
            model_type = backbone.pop("model_type", None)
            if model_type not in BACKBONE_CONFIGS:
                raise ValueError(
                    f"RecognizabilityConfig.backbone['model_type'] = {model_type!r}: expected one of "
                    f"{sorted(BACKBONE_CONFIGS)}"
                )
            backbone.pop("transformers_version", None)
            backbone = BACKBONE_CONFIGS[model_type](**backbone)  # validates the backbone settings
        elif backbone.model_type not in BACKBONE_CONFIGS:
            raise ValueError(f"RecognizabilityConfig.backbone: unsupported backbone {backbone.model_type!r}")
        # only the non-default settings, so the saved config.json round-trips exactly
        backbone_dict = backbone.to_diff_dict()
        backbone_dict.pop("transformers_version", None)
        backbone = {"model_type": backbone.model_type, **backbone_dict}
        if match_with not in ("v", "v+att"):
            raise ValueError(f"RecognizabilityConfig.match_with = {match_with!r}: expected 'v' or 'v+att'")
        if match_with == "v+att" and not attention:
            raise ValueError("RecognizabilityConfig.match_with = 'v+att' needs attention=True")
        if ri_form not in ("product", "ratio"):
            raise ValueError(f"RecognizabilityConfig.ri_form = {ri_form!r}: expected 'product' or 'ratio'")
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f"RecognizabilityConfig.spatial_kernel = {spatial_kernel}: expected an odd size >= 1")
        if attention_reduction < 1:
            raise ValueError(f"RecognizabilityConfig.attention_reduction = {attention_reduction}: expected >= 1")
        if not 0.0 <= quality_dropout < 1.0:
            raise ValueError(f"RecognizabilityConfig.quality_dropout = {quality_dropout}: expected a probability")
        self.backbone = backbone
        self.attention = bool(attention)
        self.attention_reduction = int(attention_reduction)
        self.spatial_kernel = int(spatial_kernel)
        if quality_input not in QUALITY_INPUTS:
            raise ValueError(f"RecognizabilityConfig.quality_input = {quality_input!r}: expected one of {QUALITY_INPUTS}")
        self.quality_dropout = float(quality_dropout)
        self.quality_input = quality_input
        self.match_with = match_with
        self.ri_form = ri_form
        self.ui_momentum = float(ui_momentum)
        super().__init__(**kwargs)

    def backbone_config(self) -> PretrainedConfig:
        """The backbone's config object."""
        kwargs = {k: v for k, v in self.backbone.items() if k != "model_type"}
        return BACKBONE_CONFIGS[self.backbone["model_type"]](**kwargs)

    # The input contract lives in the backbone config; exposing it here lets
    # `FaceImageProcessor.from_model_config(config)` work for the RI encoder too.
    input_size = _backbone_field("input_size")
    embedding_size = _backbone_field("embedding_size")
    color_order = _backbone_field("color_order")
    image_mean = _backbone_field("image_mean")
    image_std = _backbone_field("image_std")
