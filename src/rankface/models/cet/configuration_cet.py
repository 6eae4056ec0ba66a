"""Configuration of a CET pair: a relevance model and a selection model (Cai et al., CIKM 2022)."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

MODEL_KINDS = ("cross", "bi", "mlp")
SELECTOR_DEFAULTS: dict[str, Any] = {"num_features": 2, "hidden_size": 32, "num_hidden_layers": 2, "dropout": 0.1}


class CETConfig(PretrainedConfig):
    """Architecture of a CET pair.

    Each member is described by a *kind* and a sub-config dict:

    - `"cross"`: a cross-encoder, the dict of a `*ForSequenceClassification` config with `num_labels=1`;
    - `"bi"`: a mean-pooled dual encoder, the dict of a bare encoder (`AutoModel`) config;
    - `"mlp"` (selection only): `RankFeatureSelector`, an MLP on (first-stage rank, first-stage score); the dict
      holds `num_features`, `hidden_size`, `num_hidden_layers`, `dropout`.

    Args:
        relevance_config: sub-config dict of the relevance model (the model kept for inference).
        relevance_kind: `"cross"` or `"bi"`.
        selection_config: sub-config dict of the selection model.
        selection_kind: `"cross"`, `"bi"` or `"mlp"`.
        max_seq_length: maximum input length in tokens of the text models (not `max_length`, which transformers
            reserves for generation).
        bi_scale: dual encoders score `bi_scale * cos(q, d)` (a softmax temperature of `1 / bi_scale`).
    """

    model_type = "rankface-cet"

    def __init__(
        self,
        relevance_config: dict | None = None,
        relevance_kind: str = "cross",
        selection_config: dict | None = None,
        selection_kind: str = "cross",
        max_seq_length: int = 256,
        bi_scale: float = 20.0,
        **kwargs,
    ) -> None:
        if relevance_kind not in ("cross", "bi"):
            raise ValueError(f"CETConfig.relevance_kind must be 'cross' or 'bi', got {relevance_kind!r}")
        if selection_kind not in MODEL_KINDS:
            raise ValueError(f"CETConfig.selection_kind must be one of {MODEL_KINDS}, got {selection_kind!r}")
        if max_seq_length < 8:
            raise ValueError(f"CETConfig.max_seq_length must be >= 8 tokens, got {max_seq_length}")
        self.relevance_config = _as_dict(relevance_config, "relevance_config")
        self.relevance_kind = relevance_kind
        self.selection_config = _as_dict(selection_config, "selection_config")
        self.selection_kind = selection_kind
        if selection_kind == "mlp":
            self.selection_config = {**SELECTOR_DEFAULTS, **self.selection_config}
        self.max_seq_length = max_seq_length
        self.bi_scale = bi_scale
        super().__init__(**kwargs)

    def sub_config(self, which: str) -> PretrainedConfig | dict:
        """The member's config: a `PretrainedConfig` for text models, the plain dict for the MLP selector."""
        if which not in ("relevance", "selection"):
            raise ValueError(f"which must be 'relevance' or 'selection', got {which!r}")
        kind = getattr(self, f"{which}_kind")
        data = dict(getattr(self, f"{which}_config"))
        if kind == "mlp":
            return data
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise ValueError(
                f"CETConfig.{which}_config has no 'model_type'; expected the dict of a transformers config"
            )
        config = AutoConfig.for_model(model_type, **data)
        if kind == "cross" and config.num_labels != 1:
            raise ValueError(f"CETConfig.{which}_config: a cross-encoder needs num_labels=1, got {config.num_labels}")
        return config


def _as_dict(value: dict | PretrainedConfig | None, name: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, PretrainedConfig):
        return value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(f"CETConfig.{name} must be a dict or a PretrainedConfig, got {type(value).__name__}")
    return dict(value)
