"""rankface: rerankers (CET) and very-low-resolution face encoders (UNPG, RI) that learn from the right negatives.

The main classes are attributes of the package, imported on first use (so `rankface --help` stays fast); the
first such access, or `import rankface.models.auto`, registers rankface's architectures with the transformers
Auto classes.
"""

from __future__ import annotations

import importlib

from rankface.retrieval import java_hook

__version__ = "0.1.0"

# pyserini imported anywhere in this process gets rankface's Java 21 (costs nothing until pyserini is imported).
java_hook.install()

_EXPORTS = {
    "AutoRanker": "rankface.models.loader",
    "load_ranker": "rankface.models.loader",
    "detect_model_kind": "rankface.models.loader",
    "CrossEncoder": "rankface.models.cross_encoder",
    "BiEncoder": "rankface.models.bi_encoder",
    "CETConfig": "rankface.models.cet",
    "CETModel": "rankface.models.cet",
    "MobileFaceNetConfig": "rankface.models.mobilefacenet",
    "MobileFaceNetModel": "rankface.models.mobilefacenet",
    "IResNetConfig": "rankface.models.iresnet",
    "IResNetModel": "rankface.models.iresnet",
    "RecognizabilityConfig": "rankface.models.recognizability",
    "RecognizabilityModel": "rankface.models.recognizability",
    "FaceImageProcessor": "rankface.models.face_processor",
    "UNPGLoss": "rankface.losses.unpg",
    "load_collection": "rankface.data.ir",
    "evaluate": "rankface.evaluation.ranking",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        importlib.import_module("rankface.models.auto")  # the Auto classes know rankface's models from here on
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rankface' has no attribute {name!r}")


__all__ = list(_EXPORTS)
