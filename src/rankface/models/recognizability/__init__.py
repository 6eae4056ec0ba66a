"""Recognizability (RI) face encoder: embedding + quality in one model (methods.md section 3)."""

from __future__ import annotations

from rankface.models.recognizability.configuration_recognizability import RecognizabilityConfig
from rankface.models.recognizability.modeling_recognizability import (
    PerceptibilityAttention,
    RecognizabilityModel,
    RecognizabilityPreTrainedModel,
)

__all__ = [
    "PerceptibilityAttention",
    "RecognizabilityConfig",
    "RecognizabilityModel",
    "RecognizabilityPreTrainedModel",
]
