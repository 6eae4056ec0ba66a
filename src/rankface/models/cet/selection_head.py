"""CET's selection model with a scoring head of its own: a bi-encoder whose query embedding passes through a
separately seeded, randomly initialised linear projection before the cosine.

Why: with dual encoders, CET's `same` selection model is an exact copy of the relevance model at step 0 (both load
the same weights and a bi-encoder has no new head to initialise), and both see the same batches, so `g ~ f` all the
way through training and CET reduces to weighting each negative by the model's own relevance. In the authors' code
the two models have separately, randomly initialised scoring heads; that is the only asymmetry their method has.
This class gives the selection tower that asymmetry: `g(q, d) = scale * cos(W e_q, e_d)` with
`W = I + noise * R / sqrt(H)`, `R` standard normal from its own generator seed (so `g != f` at step 0 for any
`noise > 0`; `noise` large makes `W` close to a random projection).

The projection is saved beside the bi-encoder's own files (`query_projection.safetensors` +
`query_projection.json`); sentence-transformers loading such a folder ignores it (it is a diagnostic artefact:
the reranker kept for inference is the relevance model).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rankface.models.bi_encoder import BiEncoder
from rankface.utils.io import write_json

PROJECTION_WEIGHTS = "query_projection.safetensors"
PROJECTION_CONFIG = "query_projection.json"
# The selection head's generator seed is the run's seed plus this, so that it never shares a stream with anything
# seeded by the run's seed itself (data order, dropout).
SELECTION_SEED_OFFSET = 7919
# The random part's size against the identity's. `R e_q / sqrt(H)` has about e_q's norm, and its dot product with a
# unit document vector varies ~ noise / sqrt(H) ~ 0.05 * noise, against ~0.1 for the cosines themselves across a
# query's negatives: noise 1 leaves corr(g, f) ~ 0.9 at step 0 (measured 0.92 in R1's quick mode), noise 4 ~ 0.5, so
# the selection model starts apart without starting as pure noise (the authors' two heads are both random).
DEFAULT_NOISE = 4.0


class ProjectedQueryBiEncoder(BiEncoder):
    """A `BiEncoder` whose query embeddings are `normalize(W e_q)`; documents are embedded as before.

    Args:
        model, tokenizer, max_length, scale, doc_model: as `BiEncoder`.
        noise: size of the random part of `W` (0 gives the identity: the plain bi-encoder).
        seed: the projection's own generator seed.
    """

    def __init__(self, model, tokenizer, max_length: int = 256, scale: float = 20.0, doc_model=None,
                 noise: float = DEFAULT_NOISE, seed: int = 0):
        super().__init__(model, tokenizer, max_length=max_length, scale=scale, doc_model=doc_model)
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        hidden = model.config.hidden_size
        self.noise, self.seed = float(noise), int(seed)
        self.query_projection = nn.Linear(hidden, hidden, bias=False)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            random_part = torch.randn(hidden, hidden, generator=generator) / math.sqrt(hidden)
            self.query_projection.weight.copy_(torch.eye(hidden) + self.noise * random_part)

    @classmethod
    def from_bi_encoder(cls, encoder: BiEncoder, noise: float = DEFAULT_NOISE, seed: int = 0
                        ) -> ProjectedQueryBiEncoder:
        """Wrap `encoder`'s towers (shared, not copied) and its document cache with a new projection."""
        projected = cls(encoder.model, encoder.tokenizer, max_length=encoder.max_length, scale=encoder.scale,
                        doc_model=encoder.doc_model, noise=noise, seed=seed)
        if encoder.document_cache is not None:
            projected.use_document_cache(encoder.document_cache)
        return projected.to(encoder.device)

    @staticmethod
    def has_projection(folder: str | os.PathLike) -> bool:
        return (Path(folder) / PROJECTION_WEIGHTS).is_file()

    @classmethod
    def load_projection(cls, folder: str | os.PathLike, encoder: BiEncoder) -> ProjectedQueryBiEncoder:
        """`encoder` (the folder's towers, loaded as a `BiEncoder`) with the folder's saved projection."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / PROJECTION_CONFIG).read_text())
        projected = cls.from_bi_encoder(encoder, noise=config["noise"], seed=config["seed"])
        weight = load_file(str(folder / PROJECTION_WEIGHTS))["weight"]
        with torch.no_grad():
            projected.query_projection.weight.copy_(weight)
        return projected

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        super().save_pretrained(save_directory)
        save_file({"weight": self.query_projection.weight.detach().cpu().contiguous()},
                  str(Path(save_directory) / PROJECTION_WEIGHTS))
        write_json(Path(save_directory) / PROJECTION_CONFIG, {"noise": self.noise, "seed": self.seed})

    def embed(self, features: Mapping[str, torch.Tensor], tower: str = "query",
              model: nn.Module | None = None) -> torch.Tensor:
        embeddings = super().embed(features, tower, model)
        if tower != "query":
            return embeddings
        projected = self.query_projection(embeddings.to(self.query_projection.weight.dtype))
        return F.normalize(projected.float(), dim=-1)


def independent_selection_model(encoder: BiEncoder, run_seed: int, noise: float = DEFAULT_NOISE
                                 ) -> ProjectedQueryBiEncoder:
    """CET's `indep` selection model: `encoder` (a fresh copy of the starting bi-encoder) with its own head, seeded
    by the run's seed + `SELECTION_SEED_OFFSET`."""
    if not isinstance(encoder, BiEncoder):
        raise TypeError("cet_selection 'indep' needs encoder 'bi' (the head projects the query embedding); got "
                         f"{type(encoder).__name__}")
    return ProjectedQueryBiEncoder.from_bi_encoder(encoder, noise=noise, seed=run_seed + SELECTION_SEED_OFFSET)
