"""Shared test setup: offline Hub, a private ir_datasets home, and the `shared_data` marker."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from hub_server import local_hub  # noqa: F401 - the local Hub-compatible server fixture (tests/hub_server.py)

from rankface.paths import minilm_path, shared_dir

KERNEL_SWITCHES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OMP_NUM_THREADS")


def pytest_report_header(config):
    """Which kernels the float results come from (see tests/numerics.py and .ci/run's second pass)."""
    import torch

    switches = " ".join(f"{name}={os.environ[name]}" for name in KERNEL_SWITCHES if name in os.environ)
    return (f"kernels: ATen {torch.backends.cpu.get_cpu_capability()}, threads: {torch.get_num_threads()}"
            + (f" ({switches})" if switches else ""))


@pytest.fixture(scope="session", autouse=True)
def _ir_datasets_home(tmp_path_factory):
    """ir_datasets creates ~25 folders in its home at import: keep them out of the user's home."""
    os.environ.setdefault("IR_DATASETS_HOME", str(tmp_path_factory.mktemp("ir_datasets_home")))


@pytest.fixture(scope="session")
def shared():
    """Path of ../shared; skips the test with the reason when it is absent (it is present in CI)."""
    path = shared_dir()
    if not (path / "data").is_dir():
        pytest.skip(f"needs the shared data folder at {path} (set RANKFACE_SHARED to point elsewhere)")
    return path


@pytest.fixture(scope="module")
def unit_head_cross(tiny_bert_dir):
    """A tiny random cross-encoder whose head has unit-scale weights (the inference backends' tests)."""
    import torch

    from rankface.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_pretrained(tiny_bert_dir, device="cpu", allow_untrained_head=True, max_length=64)
    # A new head's small random weights make near-constant scores (std ~1e-4): give it unit-scale weights, so
    # the scores spread as a trained head's do and the tests' tolerances are relative to a real spread.
    with torch.no_grad():
        model.model.classifier.weight.normal_(0.0, 1.0)
    return model


@pytest.fixture(scope="session")
def minilm_dir():
    return minilm_path()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A saved random tiny `BertModel` + tokenizer (see tests/tiny_models.py)."""
    from tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
