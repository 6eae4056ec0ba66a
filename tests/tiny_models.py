"""Tiny random text models for fast tests: BERT with hidden 32, 2 layers, a 99-token vocabulary."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

WORDS = [
    "aspirin", "heart", "disease", "cancer", "diet", "fish", "oil", "vitamin", "sugar", "coffee", "tea", "milk",
    "risk", "study", "trial", "blood", "pressure", "fruit", "meat", "eggs", "soy", "fiber", "salt", "fat",
]


def make_tiny_bert(path: Path, seed: int = 0) -> Path:
    """Save a randomly initialised `BertModel` (a plain encoder, no task head) with a word-level vocabulary."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("a") + 99 - len(vocab))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    return path
