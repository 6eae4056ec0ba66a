"""utils/io.py: a saved model folder gets the modes an ordinary `open()` would give, weights included."""

from __future__ import annotations

import os
import stat

import pytest

from rankface.utils.io import give_ordinary_modes, save_folder_atomically


def _modes(folder):
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in (folder, *folder.rglob("*"))}


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_a_saved_model_folder_has_no_private_weight_file(tmp_path, umask):
    """safetensors writes its file 0600 (a private temporary file renamed into place); config and tokenizer files
    beside it are 0644. The whole folder must follow the umask."""
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16))
    old = os.umask(umask)
    try:
        save_folder_atomically(model, tmp_path / "model")
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "model")
    assert "model.safetensors" in modes and "config.json" in modes
    assert modes == {name: 0o777 & ~umask if name == "." else 0o666 & ~umask for name in modes}


def test_ordinary_modes_keep_executable_bits(tmp_path):
    (tmp_path / "sub").mkdir(mode=0o700)
    (tmp_path / "sub" / "weights").write_bytes(b"x")
    (tmp_path / "sub" / "weights").chmod(0o600)
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o700)
    old = os.umask(0o022)
    try:
        give_ordinary_modes(tmp_path)
    finally:
        os.umask(old)
    assert _modes(tmp_path) == {".": 0o755, "sub": 0o755, "sub/weights": 0o644, "run.sh": 0o755}
