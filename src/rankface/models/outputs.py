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


@dataclass
class RecognizabilityOutput(ModelOutput):
    """Output of the recognizability (RI) face encoder: embedding and quality from one forward pass.

    Args:
        embedding: `[N, E]` backbone embedding v, **not** L2-normalised.
        quality: `[N]` regressed recognizability index (higher = more recognizable; trained towards the RI
            range [-4, 4] of the product form).
        attention_map: `[N, 1, h, w]` spatial perceptibility attention in (0, 1), or `None` without attention.
        attended_embedding: `[N, E]` attended embedding v_att, or `None` without attention.
        matching_embedding: `[N, E]` the embedding to compare faces with (`config.match_with`).
        feature_map: `[N, C, h, w]` backbone feature map, when `output_feature_map=True`.
    """

    embedding: torch.FloatTensor | None = None
    quality: torch.FloatTensor | None = None
    attention_map: torch.FloatTensor | None = None
    attended_embedding: torch.FloatTensor | None = None
    matching_embedding: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None
