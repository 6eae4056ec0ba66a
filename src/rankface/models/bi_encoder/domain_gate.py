"""The query-domain gate: a query-side fine-tuned bi-encoder trusts its trained query tower only on queries like
the ones it was trained on, and falls back to its starting model on the others.

Query-side training leaves the document tower at the starting weights, so the starting model's query embedding
`q₀` is the document tower applied to the query, at no cost in weights. The gate mixes it with the trained tower's
`q` per query (an input-dependent WiSE-FT in output space, as DEMix layers weigh their domain experts by the
input's domain posterior, Gururangan et al., 2022):

    s(x) = mean of the k largest cos(q₀(x), q₀(t)) over the training queries t
    α(x) = sigmoid((s(x) − threshold) / temperature)
    embedding(x) = normalize((1 − α(x))·q₀(x) + α(x)·q(x))

Why: training on one collection moves the query tower in a direction that helps there and costs a little on text
from elsewhere (benchmarks/transfer.py), however near the start it stays. The gate keeps the gain on the training
domain and returns the start's ranking off it. Training itself never sees the gate; it is attached to the saved
model (setting `domain_gate_threshold`) and applied by `encode_query`, for every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANK_FILE = "domain_gate_bank.safetensors"


@dataclass
class QueryDomainGate:
    """`bank`: unit-length starting-model embeddings `[M, H]` of the training queries."""

    bank: np.ndarray
    threshold: float
    temperature: float = 0.05
    k: int = 5

    def __post_init__(self):
        self.bank = np.ascontiguousarray(self.bank, dtype=np.float32)
        if self.bank.ndim != 2 or len(self.bank) == 0:
            raise ValueError(f"the domain gate's bank must be a non-empty [queries, dim] matrix, got {self.bank.shape}")
        check_gate_settings(self.threshold, self.temperature, self.k)

    def similarity(self, start_embeddings: np.ndarray) -> np.ndarray:
        """`s(x)`: each query's mean cosine to its `k` nearest training queries (starting-model embeddings)."""
        k = min(self.k, len(self.bank))
        cosines = np.asarray(start_embeddings, dtype=np.float32) @ self.bank.T
        return np.partition(cosines, -k, axis=1)[:, -k:].mean(axis=1)

    def weights(self, start_embeddings: np.ndarray) -> np.ndarray:
        """`α(x)` in [0, 1]: the trained tower's weight for each query."""
        z = (self.similarity(start_embeddings) - self.threshold) / self.temperature
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))

    def mix(self, start_embeddings: np.ndarray, trained_embeddings: np.ndarray) -> np.ndarray:
        """Unit-length `(1 − α)·q₀ + α·q` per query, float32."""
        alpha = self.weights(start_embeddings)[:, None].astype(np.float32)
        mixed = (1.0 - alpha) * start_embeddings + alpha * trained_embeddings
        norms = np.linalg.norm(mixed, axis=1, keepdims=True)
        return (mixed / np.maximum(norms, 1e-12)).astype(np.float32)

    # ------------------------------------------------------------------ files
    def settings(self) -> dict:
        return {"threshold": self.threshold, "temperature": self.temperature, "k": self.k, "queries": len(self.bank)}

    def save(self, folder: Path) -> dict:
        """Write the bank into `folder`; returns the settings to keep beside the model's own."""
        from safetensors.numpy import save_file

        save_file({"bank": self.bank}, str(Path(folder) / BANK_FILE))
        return self.settings()

    @classmethod
    def load(cls, name_or_path, settings: dict) -> QueryDomainGate:
        """The gate saved with a model: its bank from the folder or Hub repo `name_or_path`, `settings` from the
        model's settings file."""
        from safetensors.numpy import load_file
        from transformers.utils import cached_file

        path = cached_file(str(name_or_path), BANK_FILE, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if not path:
            raise FileNotFoundError(f"{name_or_path}: the model's settings name a domain gate, but {BANK_FILE} is "
                                    "missing")
        return cls(load_file(path)["bank"], float(settings["threshold"]), float(settings["temperature"]),
                   int(settings["k"]))


def check_gate_settings(threshold: float, temperature: float, k: int) -> None:
    """The gate's settings, each named in the error: threshold a cosine in [-1, 1], temperature > 0, k >= 1."""
    if not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise ValueError(f"domain_gate_threshold must be a cosine in [-1, 1], got {threshold}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"domain_gate_temperature must be > 0, got {temperature}")
    if int(k) != k or k < 1:
        raise ValueError(f"domain_gate_k must be an integer >= 1, got {k}")
