"""Reranker training: run settings and the Accelerate loop (`recipes/train_reranker.py` is the entry point)."""

from rankface.training.arguments import RerankerTrainingArguments, parse_training_args
from rankface.training.loop import train

__all__ = ["RerankerTrainingArguments", "parse_training_args", "train"]
