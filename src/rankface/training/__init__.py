"""Reranker training: run settings and the Accelerate loop (`recipes/train_reranker.py` is the entry point).

The names are resolved on first use, so that reading the settings (`rankface train --help`) does not import the
training loop (torch, peft, accelerate).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RerankerTrainingArguments": "rankface.training.arguments",
    "parse_training_args": "rankface.training.arguments",
    "train": "rankface.training.loop",
}

__all__ = ["RerankerTrainingArguments", "parse_training_args", "train"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
