"""Load a script of benchmarks/ as a module for its tests (the scripts are not a package)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path


def load_benchmark(path: Path, name: str) -> Iterator:
    """Yield the module of `path`, registered as `name` while it is used (dataclasses look their module up while
    the file executes); its sibling modules (`_common`, `_plots`) are importable."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
