"""Tiny random text models for fast tests: BERT with hidden 32, 2 layers, and a 99-token WordPiece vocabulary
(special tokens, the test's words, the letters a-z and their `##` continuations), so that any lowercase word is
tokenised into real pieces and texts differ by content, not only by length."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

VOCAB_SIZE = 99
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "aspirin", "heart", "disease", "cancer", "diet", "fish", "oil", "vitamin", "sugar", "coffee", "tea", "milk",
    "risk", "study", "trial", "blood", "pressure", "fruit", "meat", "eggs", "soy", "fiber", "salt", "fat",
]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def tiny_vocab(words: Sequence[str] = (), size: int = VOCAB_SIZE) -> list[str]:
    """Special tokens, then `words`, the letters and `##` letters (so every lowercase word has pieces), padded to
    `size` with `[unusedN]` tokens (as BERT's own vocabulary does)."""
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *words, *LETTERS, *(f"##{c}" for c in LETTERS)]))
    if len(vocab) > size:
        raise ValueError(f"{len(vocab)} tokens do not fit a vocabulary of {size}")
    return vocab + [f"[unused{i}]" for i in range(size - len(vocab))]


def tiny_tokenizer(words: Sequence[str] = (), size: int = VOCAB_SIZE) -> BertTokenizer:
    """A BERT WordPiece tokenizer over `tiny_vocab(words, size)`.

    transformers 5 ignores `BertTokenizer(vocab_file=...)` (it keeps only the 5 special tokens, so every word
    becomes `[UNK]`): the vocabulary is passed as a mapping, and its size is checked.
    """
    vocab = tiny_vocab(words, size)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    assert len(tokenizer) == size, f"the tokenizer has {len(tokenizer)} tokens, not the {size} given"
    assert all(tokenizer.tokenize(w) == [w] for w in words if not w.startswith("##")), "a word is not one token"
    return tokenizer


def save_tiny_tokenizer(path: Path, words: Sequence[str] = (), size: int = VOCAB_SIZE) -> BertTokenizer:
    """Save `tiny_tokenizer(words, size)` in `path` and check that `AutoTokenizer` loads it back whole."""
    tokenizer = tiny_tokenizer(words, size)
    tokenizer.save_pretrained(path)
    loaded = AutoTokenizer.from_pretrained(path)
    assert len(loaded) == size and loaded.get_vocab() == tokenizer.get_vocab(), f"{path}: tokenizer not saved whole"
    return tokenizer


def tiny_bert_config(**extra) -> BertConfig:
    return BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=128, **extra)


def make_tiny_bert(path: Path, seed: int = 0, words: Sequence[str] = WORDS) -> Path:
    """Save a randomly initialised `BertModel` (a plain encoder, no task head) with its tiny WordPiece tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    save_tiny_tokenizer(path, words)
    torch.manual_seed(seed)
    BertModel(tiny_bert_config()).save_pretrained(path)
    return path
