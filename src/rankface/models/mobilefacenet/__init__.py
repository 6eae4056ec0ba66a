"""MobileFaceNet face encoder (config, model, conversion of the public pretrained weights)."""

from __future__ import annotations

from rankface.models.mobilefacenet.configuration_mobilefacenet import MobileFaceNetConfig
from rankface.models.mobilefacenet.modeling_mobilefacenet import MobileFaceNetModel, MobileFaceNetPreTrainedModel

__all__ = ["MobileFaceNetConfig", "MobileFaceNetModel", "MobileFaceNetPreTrainedModel"]
