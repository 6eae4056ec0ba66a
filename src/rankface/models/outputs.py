"""`ModelOutput` dataclasses returned by rankface models (one per model family output)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class FaceEncoderOutput(ModelOutput):
    """Output of a face encoder backbone (MobileFaceNet, IResNet).

    Args:
        embedding: `[N, E]` face embedding, **not** L2-normalised (compare with cosine similarity).
        feature_map: `[N, C, h, w]` last spatial feature map before the global pooling, when
            `output_feature_map=True` was asked for; else `None`.
    """

    embedding: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None


@dataclass
class CETOutput(ModelOutput):
    """Output of a CET pair (`rankface.models.cet.CETModel`).

    Args:
        relevance_scores: `[Q, D]` relevance-model logits, when relevance features were given.
        selection_scores: `[Q, D]` selection-model logits, when selection features were given.
    """

    relevance_scores: torch.FloatTensor | None = None
    selection_scores: torch.FloatTensor | None = None
