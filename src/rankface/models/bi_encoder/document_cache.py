"""Document embeddings computed once and reused: what makes query-side fine-tuning cheap.

In query-side fine-tuning (DensePhrases' term) the document tower is frozen, so every document's embedding is
fixed for the whole run: encode the corpus once, keep the matrix, and let each training step encode only the
(short) queries. The cache on disk is keyed by two fingerprints, the document tower's weights and the corpus,
and a cache made for another tower or another corpus is refused: reusing it would train against embeddings the
exported model never produces.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rankface.utils.io import atomic_write, write_json

CACHE_VERSION = 1


class StaleCacheError(ValueError):
    """A document-embedding cache was made for another document tower or another corpus."""


def tower_fingerprint(model: torch.nn.Module, tokenizer, max_length: int) -> str:
    """sha256 over every weight (name, dtype, shape, bytes), the vocabulary size and the truncation length.

    Everything that changes a document's embedding is in it; nothing else is (the device, the run).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(f"vocab={len(tokenizer)}|max_length={max_length}".encode())
    return digest.hexdigest()


def corpus_fingerprint(corpus: Mapping[str, str]) -> str:
    """sha256 over the (docid, text) pairs in docid order: the same documents give the same key in any order."""
    digest = hashlib.sha256()
    for doc_id in sorted(corpus):
        digest.update(doc_id.encode())
        digest.update(b"\x00")
        digest.update(corpus[doc_id].encode())
        digest.update(b"\x01")
    return digest.hexdigest()


@dataclass
class DocumentEmbeddings:
    """Unit-length document embeddings `float32 [N, H]`, addressable by document id and by text."""

    doc_ids: list[str]
    embeddings: torch.Tensor
    tower: str  # tower_fingerprint of the model that made them
    corpus: str  # corpus_fingerprint of the documents
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        if self.embeddings.shape[0] != len(self.doc_ids):
            raise ValueError(f"{self.embeddings.shape[0]} embeddings for {len(self.doc_ids)} document ids")
        self.row_of_id = {d: i for i, d in enumerate(self.doc_ids)}
        # A text maps to one row: equal texts have equal embeddings, whichever id carries them.
        self.row_of_text = {t: i for i, t in enumerate(self.texts)} if self.texts is not None else {}

    def rows_for_texts(self, texts: list[str]) -> torch.Tensor:
        """Row indices `int64 [N]` of `texts`; every text must be a cached document."""
        try:
            return torch.tensor([self.row_of_text[t] for t in texts], dtype=torch.long)
        except KeyError as err:
            text = str(err.args[0])
            raise KeyError(
                f"a document is not in the document-embedding cache (text starts {text[:60]!r}); query-side "
                "training reads only documents of the corpus the cache was made from"
            ) from None

    def check(self, tower: str, corpus: str, where: str) -> None:
        """Refuse embeddings made by another document tower or from another corpus."""
        if self.tower != tower:
            raise StaleCacheError(
                f"{where}: document embeddings were made by another document tower (fingerprint {self.tower[:12]}, "
                f"this model's is {tower[:12]}); delete the file or point document_cache elsewhere to re-encode"
            )
        if self.corpus != corpus:
            raise StaleCacheError(
                f"{where}: document embeddings were made for another corpus (fingerprint {self.corpus[:12]}, this "
                f"corpus's is {corpus[:12]}); delete the file or point document_cache elsewhere to re-encode"
            )

    # ------------------------------------------------------------------------------------------ disk
    def save(self, path: str | os.PathLike) -> None:
        """`path` (.npy, the matrix) and `path.json` (ids and fingerprints), each written atomically."""
        path = Path(path)
        with atomic_write(path, "wb") as handle:
            np.save(handle, self.embeddings.cpu().numpy().astype(np.float32))
        write_json(path.with_suffix(".json"), {
            "version": CACHE_VERSION, "tower": self.tower, "corpus": self.corpus, "doc_ids": self.doc_ids,
        })

    @classmethod
    def load(cls, path: str | os.PathLike, corpus: Mapping[str, str]) -> DocumentEmbeddings:
        path = Path(path)
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise StaleCacheError(f"{meta_path}: unreadable document-cache index ({err})") from None
        if meta.get("version") != CACHE_VERSION or not {"tower", "corpus", "doc_ids"} <= set(meta):
            raise StaleCacheError(f"{meta_path}: not a rankface document cache of version {CACHE_VERSION}")
        matrix = torch.from_numpy(np.load(path))
        missing = [d for d in meta["doc_ids"] if d not in corpus]
        if missing:
            raise StaleCacheError(f"{meta_path}: cached document {missing[0]!r} is not in this corpus")
        return cls(meta["doc_ids"], matrix, meta["tower"], meta["corpus"], [corpus[d] for d in meta["doc_ids"]])


def cached_document_embeddings(encoder, corpus: Mapping[str, str], cache_dir: str | os.PathLike | None,
                               batch_size: int = 64, show_progress_bar: bool | None = None) -> DocumentEmbeddings:
    """The embeddings of `corpus` by `encoder`'s document tower: read from `cache_dir` when a matching cache is
    there, else encoded (in fp32, so that training sees the exported tower's own numbers) and saved.

    The file name holds both fingerprints, so a changed tower or corpus gets a new file; a file found under the
    right name whose index disagrees (copied or edited by hand) is refused.
    """
    tower = tower_fingerprint(encoder.document_model, encoder.tokenizer, encoder.max_length)
    corpus_key = corpus_fingerprint(corpus)
    path = Path(cache_dir).expanduser() / "document_embeddings" / f"{tower[:16]}-{corpus_key[:16]}.npy" if cache_dir else None
    if path is not None and path.exists() and path.with_suffix(".json").exists():
        cached = DocumentEmbeddings.load(path, corpus)
        cached.check(tower, corpus_key, str(path))
        return cached
    doc_ids = sorted(corpus)
    texts = [corpus[d] for d in doc_ids]
    matrix = encoder.encode_document(texts, batch_size=batch_size, show_progress_bar=show_progress_bar, precision="fp32")
    made = DocumentEmbeddings(doc_ids, torch.from_numpy(matrix), tower, corpus_key, texts)
    if path is not None:
        made.save(path)
    return made


__all__ = ["DocumentEmbeddings", "StaleCacheError", "cached_document_embeddings", "corpus_fingerprint",
           "tower_fingerprint"]
