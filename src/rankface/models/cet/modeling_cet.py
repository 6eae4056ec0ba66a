"""CET pair: relevance model + selection model, saved and loaded together (Cai et al., CIKM 2022).

The relevance model `f(q, d)` is the reranker kept for inference; the selection model `g(q, d)` estimates how likely
an unlabelled document was pooled and judged. Training weights each model's loss by the other's belief (see
`rankface.losses.cet`). This module holds the architecture only: scoring, saving the pair, and exporting the
relevance model as a standard checkpoint. Members are plain Hugging Face models, scored through rankface's
`CrossEncoder` / `BiEncoder` wrappers, so the exported relevance model is byte-for-byte what those classes save.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from rankface.models.bi_encoder import BiEncoder
from rankface.models.cet.configuration_cet import SELECTOR_DEFAULTS, CETConfig
from rankface.models.cross_encoder import CrossEncoder
from rankface.models.outputs import CETOutput
from rankface.utils.io import save_folder_atomically
from rankface.utils.ties import ranked

SELECTION_TOKENIZER_DIR = "selection_tokenizer"


# ---------------------------------------------------------------------------------------------- light selector
class RankFeatureSelector(nn.Module, PyTorchModelHubMixin):
    """Light selection model: an MLP on first-stage features of each (query, document) pair.

    Saved on its own with `save_pretrained` / `from_pretrained` (huggingface_hub's mixin: `config.json` holds the
    constructor arguments, `model.safetensors` the weights and standardisation buffers), e.g. beside a query-side
    relevance model, which a `CETModel` pair cannot hold.

    Features per pair are `[log(1 + rank), score]` of the document in the first-stage run (rank 1 = best), the
    signals that decide whether a pooled judgment exists. They are standardised with buffers set by
    `fit_normalization` (saved with the weights), because BM25 scores (0-40) and cosine scores (0-1) differ in scale.

    Args:
        num_features: `F` (2).
        hidden_size: width of the hidden layers.
        num_hidden_layers: number of hidden layers (0 gives a linear model).
        dropout: dropout after each hidden layer (off in eval mode).
    """

    def __init__(self, num_features: int = 2, hidden_size: int = 32, num_hidden_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_size), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.num_features = num_features
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Kaiming-uniform weights (torch's Linear default), optionally from a seeded generator."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                with torch.no_grad():
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)

    @torch.no_grad()
    def fit_normalization(self, features: torch.Tensor) -> None:
        """Set the standardisation buffers from example features `[N, F]` (e.g. every pair of the training run)."""
        features = features.reshape(-1, self.num_features).float()
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0, unbiased=False).clamp(min=1e-6))

    def forward(self, features: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Selection logits `[Q, D]` from `features["features"]` (or a tensor) of shape `[Q, D, F]`."""
        x = features["features"] if isinstance(features, Mapping) else features
        if x.dim() != 3 or x.shape[-1] != self.num_features:
            raise ValueError(f"RankFeatureSelector expects features [Q, D, {self.num_features}], got {tuple(x.shape)}")
        x = (x.float() - self.feature_mean) / self.feature_std
        return self.net(x).squeeze(-1)

    @staticmethod
    def collate_groups(
        query_ids: Sequence[str], doc_id_groups: Sequence[Sequence[str]], table: Mapping[str, Mapping[str, tuple]]
    ) -> dict:
        """Features `[Q, D, 2]` for groups of document ids, from a `rank_table(run)`.

        A document the run does not hold for its query (typically a labelled positive the first stage missed) gets
        rank `depth + 1` and the query's lowest run score: it sits just below the pool. Such lookups are counted in
        `features["num_missing"]` so callers can report them.
        """
        if len(query_ids) != len(doc_id_groups):
            raise ValueError(f"{len(query_ids)} query ids but {len(doc_id_groups)} document groups")
        sizes = {len(g) for g in doc_id_groups}
        if len(sizes) != 1:
            raise ValueError(f"every query needs the same number of documents; got group sizes {sorted(sizes)}")
        rows, missing = [], 0
        for qid, group in zip(query_ids, doc_id_groups):
            entries = table.get(qid, {})
            depth = len(entries)
            floor = min((s for _, s in entries.values()), default=0.0)
            row = []
            for did in group:
                rank, score = entries.get(did, (depth + 1, floor))
                missing += did not in entries
                row.append([math.log1p(rank), float(score)])
            rows.append(row)
        return {"features": torch.tensor(rows, dtype=torch.float32), "num_missing": missing}


def rank_table(run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, tuple[int, float]]]:
    """`{qid: {docid: (rank, score)}}` from a run `{qid: {docid: score}}`; rank 1 = highest score, ties by
    `rankface.utils.ties` (docid descending, as in the run file and its evaluation)."""
    table = {}
    for qid, docs in run.items():
        order = ranked(docs)
        table[qid] = {did: (rank, float(score)) for rank, (did, score) in enumerate(order, start=1)}
    return table


# ---------------------------------------------------------------------------------------------- the pair
class CETPreTrainedModel(PreTrainedModel):
    config_class = CETConfig
    base_model_prefix = "cet"
    main_input_name = "relevance_features"

    def _init_weights(self, module: nn.Module) -> None:
        # The text members are PreTrainedModels that initialise themselves; only the MLP selector is ours.
        if isinstance(module, RankFeatureSelector):
            module.reset_parameters()


class CETModel(CETPreTrainedModel):
    """A relevance model and a selection model trained together with CET; inference uses only `relevance`.

    Args:
        config: the pair's `CETConfig`.
        relevance: an already built relevance model (used by `from_encoders`); built from `config` when None.
        selection: likewise for the selection model.
        relevance_tokenizer: tokenizer of the relevance model (loaded by `from_pretrained` when saved).
        selection_tokenizer: tokenizer of a text selection model.
    """

    def __init__(
        self,
        config: CETConfig,
        relevance: nn.Module | None = None,
        selection: nn.Module | None = None,
        relevance_tokenizer=None,
        selection_tokenizer=None,
    ) -> None:
        super().__init__(config)
        self.relevance = relevance if relevance is not None else _build_member(config, "relevance")
        self.selection = selection if selection is not None else _build_member(config, "selection")
        self.relevance_tokenizer = relevance_tokenizer
        self.selection_tokenizer = selection_tokenizer
        self.post_init()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_encoders(
        cls,
        relevance_path: str | os.PathLike,
        selection_path: str | os.PathLike | None = None,
        relevance: str = "cross",
        selection: str = "cross",
        num_layers: int | None = None,
        max_length: int = 256,
        bi_scale: float = 20.0,
        selector_kwargs: dict | None = None,
        head_seed: int = 0,
    ) -> CETModel:
        """Start a CET pair from pretrained checkpoints.

        Cross-encoder members load through `CrossEncoder.from_pretrained` (a plain encoder gets a new one-logit head
        and an identity pooler); when a head is new, relevance and selection heads are re-drawn from two different
        seeded generators (`head_seed`, `head_seed + 1`), so the two models share encoder weights but never their
        head. A head already trained (a reranker checkpoint) is kept.

        Args:
            relevance_path: checkpoint of the relevance model (folder or Hub id).
            selection_path: checkpoint of a text selection model; defaults to `relevance_path`. Ignored for `mlp`.
            relevance: `"cross"` or `"bi"`.
            selection: `"cross"`, `"bi"` or `"mlp"` (`RankFeatureSelector`).
            num_layers: keep only the first transformer layers of the text members.
            max_length: maximum input length in tokens.
            bi_scale: scale of dual-encoder cosine scores.
            selector_kwargs: `RankFeatureSelector` arguments for `selection="mlp"`.
            head_seed: seed of the new heads.
        """
        rel_model, rel_tok = _load_member(relevance, relevance_path, num_layers, head_seed)
        if selection == "mlp":
            sel_config = {**SELECTOR_DEFAULTS, **(selector_kwargs or {})}
            sel_model = RankFeatureSelector(**sel_config)
            sel_model.reset_parameters(torch.Generator().manual_seed(head_seed + 1))
            sel_tok = None
        else:
            sel_model, sel_tok = _load_member(selection, selection_path or relevance_path, num_layers, head_seed + 1)
            sel_config = sel_model.config.to_dict()
        config = CETConfig(
            relevance_config=rel_model.config.to_dict(),
            relevance_kind=relevance,
            selection_config=sel_config,
            selection_kind=selection,
            max_seq_length=max_length,
            bi_scale=bi_scale,
        )
        return cls(config, rel_model, sel_model, rel_tok, sel_tok)

    @classmethod
    def from_scorers(cls, relevance, selection, bi_scale: float | None = None) -> CETModel:
        """Pair two trained rankface models (e.g. the recipe's two `Learner` models) without copying weights.

        Args:
            relevance: a `CrossEncoder` or `BiEncoder`.
            selection: a `CrossEncoder`, `BiEncoder` or `RankFeatureSelector`.
            bi_scale: dual-encoder score scale; default the `BiEncoder`'s own.
        """
        kinds = []
        for which, scorer in (("relevance", relevance), ("selection", selection)):
            if isinstance(scorer, CrossEncoder):
                kinds.append("cross")
            elif isinstance(scorer, BiEncoder):
                kinds.append("bi")
            elif isinstance(scorer, RankFeatureSelector) and which == "selection":
                kinds.append("mlp")
            else:
                raise TypeError(
                    f"{which} must be a rankface CrossEncoder or BiEncoder (or, for selection, a "
                    f"RankFeatureSelector), got {type(scorer).__name__}"
                )
        if kinds[1] == "mlp":
            sel_module, sel_tok = selection, None
            first = next(m for m in selection.net if isinstance(m, nn.Linear))
            sel_config = {
                "num_features": selection.num_features,
                "hidden_size": first.out_features if len(selection.net) > 1 else SELECTOR_DEFAULTS["hidden_size"],
                "num_hidden_layers": sum(isinstance(m, nn.Linear) for m in selection.net) - 1,
                "dropout": next((m.p for m in selection.net if isinstance(m, nn.Dropout)), 0.0),
            }
        else:
            sel_module, sel_tok, sel_config = selection.model, selection.tokenizer, selection.model.config.to_dict()
        scale = bi_scale if bi_scale is not None else getattr(relevance, "scale", getattr(selection, "scale", 20.0))
        config = CETConfig(
            relevance_config=relevance.model.config.to_dict(),
            relevance_kind=kinds[0],
            selection_config=sel_config,
            selection_kind=kinds[1],
            max_seq_length=relevance.max_length,
            bi_scale=scale,
        )
        return cls(config, relevance.model, sel_module, relevance.tokenizer, sel_tok)

    # ------------------------------------------------------------------ scoring
    def relevance_scorer(self) -> CrossEncoder | BiEncoder:
        """The relevance model in its rankface wrapper (shares parameters): `predict`, `rank`, `collate_groups`."""
        return self._scorer("relevance")

    def selection_scorer(self) -> CrossEncoder | BiEncoder | RankFeatureSelector:
        """The selection model in its rankface wrapper; the `RankFeatureSelector` itself for `mlp`."""
        return self._scorer("selection")

    def _scorer(self, which: str):
        kind = getattr(self.config, f"{which}_kind")
        module = getattr(self, which)
        if kind == "mlp":
            return module
        tokenizer = getattr(self, f"{which}_tokenizer")
        if tokenizer is None:
            raise ValueError(
                f"the {which} model has no tokenizer: load the pair with CETModel.from_pretrained from a folder saved "
                f"by save_pretrained, or set model.{which}_tokenizer"
            )
        if kind == "cross":
            return CrossEncoder(module, tokenizer, max_length=self.config.max_seq_length)
        return BiEncoder(module, tokenizer, max_length=self.config.max_seq_length, scale=self.config.bi_scale)

    def forward(self, relevance_features: dict | None = None, selection_features: dict | None = None) -> CETOutput:
        """Scores `[Q, D]` of each member for batches built by their scorers' `collate_groups`.

        Args:
            relevance_features: from `relevance_scorer().collate_groups(queries, groups)`, or None.
            selection_features: from `selection_scorer().collate_groups(...)`, or None.
        """
        rel = self.relevance_scorer()(relevance_features) if relevance_features is not None else None
        sel = self.selection_scorer()(selection_features) if selection_features is not None else None
        return CETOutput(relevance_scores=rel, selection_scores=sel)

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save the pair (one safetensors file, `config.json`) and the members' tokenizers."""
        super().save_pretrained(save_directory, **kwargs)
        save_directory = Path(save_directory)
        if self.relevance_tokenizer is not None:
            self.relevance_tokenizer.save_pretrained(save_directory)
        if self.selection_tokenizer is not None:
            self.selection_tokenizer.save_pretrained(save_directory / SELECTION_TOKENIZER_DIR)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs) -> CETModel:
        """Load a pair saved by `save_pretrained` (also reached through `AutoModel.from_pretrained`)."""
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        path = pretrained_model_name_or_path
        model.relevance_tokenizer = _maybe_tokenizer(path)
        if model.config.selection_kind != "mlp":
            model.selection_tokenizer = _maybe_tokenizer(path, subfolder=SELECTION_TOKENIZER_DIR)
        return model

    def export_relevance(self, save_directory: str | os.PathLike) -> None:
        """Write the relevance model alone as a standard checkpoint (+ tokenizer).

        A cross-encoder relevance model becomes a `*ForSequenceClassification` checkpoint that loads in
        `rankface.models.cross_encoder.CrossEncoder`, `AutoModelForSequenceClassification` and
        `sentence_transformers.CrossEncoder`; a dual encoder becomes a `BiEncoder` / sentence-transformers folder.
        The folder is written beside the target and renamed into place, so it is whole or absent.
        """
        save_folder_atomically(self.relevance_scorer(), save_directory)

    def export_selection(self, save_directory: str | os.PathLike) -> None:
        """Write a text selection model alone (for analysis of false-negative propensity)."""
        if self.config.selection_kind == "mlp":
            raise ValueError("the MLP selection model has no standalone format; it is saved inside the CET pair")
        save_folder_atomically(self.selection_scorer(), save_directory)


def _build_member(config: CETConfig, which: str) -> nn.Module:
    kind = getattr(config, f"{which}_kind")
    sub = config.sub_config(which)
    if kind == "mlp":
        return RankFeatureSelector(**sub)
    if kind == "cross":
        return AutoModelForSequenceClassification.from_config(sub)
    # Dual encoders mean-pool: BERT's pooler is left out, as BiEncoder.from_pretrained does.
    extra = {"add_pooling_layer": False} if sub.model_type == "bert" else {}
    return AutoModel.from_config(sub, **extra)


def _load_member(kind: str, path, num_layers: int | None, seed: int):
    if kind == "cross":
        # A plain encoder gets a new head (re-drawn below from the seed): this is where training starts.
        encoder = CrossEncoder.from_pretrained(path, num_layers=num_layers, device="cpu", allow_untrained_head=True)
        trained = any(a.endswith("ForSequenceClassification") for a in (_architectures(path) or []))
        if not trained:
            _reinit_head(encoder.model, torch.Generator().manual_seed(seed))
        return encoder.model, encoder.tokenizer
    if kind == "bi":
        encoder = BiEncoder.from_pretrained(path, num_layers=num_layers, device="cpu")
        return encoder.model, encoder.tokenizer
    raise ValueError(f"model kind must be 'cross', 'bi' or 'mlp', got {kind!r}")


def _architectures(path) -> list[str] | None:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path).architectures


def _reinit_head(model: PreTrainedModel, generator: torch.Generator) -> None:
    """Re-draw the classification head from `generator` (normal(0, initializer_range), zero bias)."""
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no `classifier`/`score` head to initialise")
    std = getattr(model.config, "initializer_range", 0.02)
    for layer in head.modules() if isinstance(head, nn.Module) else []:
        if isinstance(layer, nn.Linear):
            with torch.no_grad():
                layer.weight.normal_(0.0, std, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()


def _maybe_tokenizer(path, subfolder: str | None = None):
    """The tokenizer saved with the pair, or None when the folder holds none (weights-only checkpoints)."""
    local = Path(path) / (subfolder or "")
    if Path(path).is_dir() and not (local / "tokenizer_config.json").is_file():
        return None
    kwargs = {"subfolder": subfolder} if subfolder else {}
    return AutoTokenizer.from_pretrained(path, **kwargs)
