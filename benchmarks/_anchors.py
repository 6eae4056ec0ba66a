"""R2's anchors: sentence-transformers' CPU backends, in virtual environments of their own.

sentence-transformers' `onnx` and `openvino` extras do not resolve with rankface's pins (optimum-onnx 0.1.0 needs
transformers < 4.58; optimum-intel 2.2.0 pulls transformers 5.5.4) and not with each other, so each gets its own
venv, built on first use beside this file (`benchmarks/.anchors-<name>/`, git-ignored). torch is installed first
and pinned (`torch==2.13.0` is the local CPU build; an unpinned torch resolves to a multi-GB CUDA build here), then
the extras with the same pin on the command line, so pip keeps that torch. The pins are the versions pip resolved
here for `sentence-transformers[onnx]` + `transformers<4.58` and for `sentence-transformers[openvino]`.

The benchmark writes its settings to a JSON file and starts `_anchor_worker.py` in each venv as a subprocess that
stays alive; it sends each round's pairs over a pipe, so the anchors are interleaved with rankface's systems on the
same pairs, with the same threads, batch and length. Each worker says which anchors it loaded and why any other
failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH_PIN = "torch==2.13.0"
ENVS = {
    "onnx": [
        "sentence-transformers[onnx]==5.7.0", "transformers==4.57.6", "optimum-onnx==0.1.0", "optimum==2.1.0",
        "onnxruntime==1.32.0", "onnx==1.23.2",
    ],
    "openvino": [
        "sentence-transformers[openvino]==6.3.0", "transformers==5.5.4", "optimum-intel==2.2.0", "optimum==2.3.0",
        "openvino==2026.4.1", "nncf==3.4.0",
        # static int8 calibrates on a datasets.Dataset; datasets 5.2 would pull huggingface-hub 2.x, which
        # optimum-intel (< 1.22) and transformers 5.5 (< 2.0) refuse
        "datasets==5.0.1", "huggingface-hub==1.21.0",
    ],
}
# Removed after the install: optimum-intel requires torchvision, and pip takes the PyPI wheel, whose C extension
# does not load with the local CPU torch ("operator torchvision::nms does not exist"); transformers imports it when
# it is present, so `import sentence_transformers` fails. Nothing here needs it (text models only).
REMOVE = {"openvino": ["torchvision"]}
# Which venv runs which anchor (`st-` prefix: a sentence-transformers backend).
ANCHORS = {
    "st-torch": "onnx",
    "st-onnx": "onnx",
    "st-onnx-o3": "onnx",
    "st-onnx-int8": "onnx",
    "st-openvino": "openvino",
    "st-openvino-default": "openvino",
    "st-openvino-int8": "openvino",
}
STAMP = ".anchors-installed"


def env_dir(name: str) -> Path:
    return Path(os.environ.get("RANKFACE_ANCHORS_DIR", HERE)) / f".anchors-{name}"


def env_python(name: str) -> Path:
    return env_dir(name) / "bin" / "python"


def ensure_env(name: str, log=print) -> tuple[Path | None, str | None]:
    """The python of anchor venv `name`, built on first use; `(None, reason)` when it cannot be built.

    The stamp file holds the requirement list, so a change of pins rebuilds the venv.
    """
    folder = env_dir(name)
    wanted = json.dumps([TORCH_PIN, *ENVS[name], {"removed": REMOVE.get(name, [])}])
    stamp = folder / STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        return env_python(name), None
    log(f"building the anchor venv {folder} (first use; pip, several minutes) ...")
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(folder)
        pip = [str(env_python(name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        for step in ([TORCH_PIN], [TORCH_PIN, *ENVS[name]]):
            done = subprocess.run(pip + step, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                return None, f"pip install {' '.join(step)} failed: {' | '.join(tail)}"
        if REMOVE.get(name):
            subprocess.run([str(env_python(name)), "-m", "pip", "uninstall", "--yes", "--quiet", *REMOVE[name]],
                           check=True, capture_output=True)
    except OSError as err:
        return None, f"could not create {folder}: {err}"
    stamp.write_text(wanted, encoding="utf-8")
    return env_python(name), None


class AnchorWorkers:
    """One `_anchor_worker.py` process per anchor venv, kept alive so the benchmark interleaves them with its own
    systems round by round. `loaded` lists the anchors that loaded; `errors` says why each other one did not.

    Args:
        anchors: anchor names (`ANCHORS`).
        job: checkpoint folder, batch size, max length, threads, ISA of the int8 config, calibration texts.
        work: where the workers export their graphs (git-ignored).
    """

    def __init__(self, anchors: list[str], job: dict, work: Path, log=print) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.owner: dict[str, str] = {}
        self.loaded: list[str] = []
        self.errors: dict[str, str] = {}
        self.versions: dict[str, dict] = {}
        work.mkdir(parents=True, exist_ok=True)
        for name in dict.fromkeys(ANCHORS[a] for a in anchors):
            mine = [a for a in anchors if ANCHORS[a] == name]
            python, reason = ensure_env(name, log)
            if python is None:
                self.errors.update({a: reason for a in mine})
                continue
            job_path = work / f"job-{name}.json"
            job_path.write_text(json.dumps({**job, "anchors": mine, "work": str(work / name)}), encoding="utf-8")
            threads = str(job["threads"])
            # Same threads as rankface: torch reads these at start, ONNX Runtime and OpenVINO get them explicitly.
            env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1",
                   "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONNOUSERSITE": "1"}
            env.pop("PYTHONPATH", None)  # the worker imports the venv's packages, never rankface's
            stderr = open(work / f"worker-{name}.log", "w", encoding="utf-8")  # noqa: SIM115 - lives with the process
            proc = subprocess.Popen([str(python), str(HERE / "_anchor_worker.py"), str(job_path)], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
            hello = proc.stdout.readline()
            if not hello:
                proc.wait()
                tail = (work / f"worker-{name}.log").read_text(encoding="utf-8").strip().splitlines()[-3:]
                self.errors.update({a: f"worker ({name} venv) exited {proc.returncode}: {' | '.join(tail)}"
                                    for a in mine})
                continue
            status = json.loads(hello)
            self.loaded += status["loaded"]
            self.errors.update(status["errors"])
            self.versions[name] = status.get("versions", {})
            self.procs[name] = proc
            self.owner.update({a: name for a in status["loaded"]})

    def score(self, anchor: str, pairs: list[tuple[str, str]]) -> tuple[float, list[float]]:
        """`(seconds of predict inside the worker, raw scores)` of `pairs` by `anchor`."""
        proc = self.procs[self.owner[anchor]]
        proc.stdin.write(json.dumps({"anchor": anchor, "pairs": pairs}) + "\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"anchor worker for {anchor} died (see its worker-*.log)")
        reply = json.loads(answer)
        return reply["seconds"], reply["scores"]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.stdin.write(json.dumps({"quit": True}) + "\n")
                proc.stdin.flush()
                proc.wait(timeout=60)


if __name__ == "__main__":  # `python benchmarks/_anchors.py [onnx openvino]`: build the venvs only
    for env_name in sys.argv[1:] or list(ENVS):
        print(env_name, *ensure_env(env_name))
