"""IResNet-18/34/50/100 face encoders (insightface layout)."""

from __future__ import annotations

from rankface.models.iresnet.configuration_iresnet import IResNetConfig
from rankface.models.iresnet.modeling_iresnet import IResNetModel, IResNetPreTrainedModel

__all__ = ["IResNetConfig", "IResNetModel", "IResNetPreTrainedModel"]
