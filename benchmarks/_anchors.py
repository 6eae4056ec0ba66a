"""R2's anchors: sentence-transformers' CPU backends, in virtual environments of their own.

sentence-transformers' `onnx` and `openvino` extras do not resolve with rankface's pins (optimum-onnx 0.1.0 needs
transformers < 4.58; optimum-intel 2.2.0 pulls transformers 5.5.4) and not with each other, so each gets its own
venv, built on first use beside this file (`benchmarks/.anchors-<name>/`, git-ignored). torch is installed first
and pinned (`torch==2.13.0` is the local CPU build; an unpinned torch resolves to a multi-GB CUDA build here), then
the extras with the same pin on the command line, so pip keeps that torch. The pins are the versions pip resolved
here for `sentence-transformers[onnx]` + `transformers<4.58` and for `sentence-transformers[openvino]`.

The benchmark saves its pairs and settings to a JSON file and runs `_anchor_worker.py` in each venv as a
subprocess: same pairs, same threads, same batch and length. The worker prints nothing the benchmark parses but
writes a JSON result (scores and per-round timings of each backend it could load, and the reason for each it could
not).
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
    ],
}
# Which venv runs which anchor (`st-` prefix: a sentence-transformers backend).
ANCHORS = {
    "st-torch": "onnx",
    "st-onnx": "onnx",
    "st-onnx-o3": "onnx",
    "st-onnx-int8": "onnx",
    "st-openvino": "openvino",
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
    wanted = json.dumps([TORCH_PIN, *ENVS[name]])
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
    except OSError as err:
        return None, f"could not create {folder}: {err}"
    stamp.write_text(wanted, encoding="utf-8")
    return env_python(name), None


def run_anchors(anchors: list[str], job: dict, work: Path, log=print) -> dict:
    """Run `anchors` on the job's pairs, each venv once; `{anchor: result or {"error": reason}}`.

    `job` (pairs, checkpoint folder, batch size, max length, threads, rounds, ISA of the int8 config) is written
    to `work/job.json`; each venv's worker writes `work/result-<venv>.json`.
    """
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    for name in dict.fromkeys(ANCHORS[a] for a in anchors):
        mine = [a for a in anchors if ANCHORS[a] == name]
        python, reason = ensure_env(name, log)
        if python is None:
            out.update({a: {"error": reason} for a in mine})
            continue
        job_path, result_path = work / f"job-{name}.json", work / f"result-{name}.json"
        job_path.write_text(json.dumps({**job, "anchors": mine}), encoding="utf-8")
        result_path.unlink(missing_ok=True)
        threads = str(job["threads"])
        # Same threads as rankface: torch reads these at start, ONNX Runtime and OpenVINO get them explicitly.
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)  # the worker must import the venv's packages, never rankface's
        done = subprocess.run([str(python), str(HERE / "_anchor_worker.py"), str(job_path), str(result_path)],
                              env=env, check=False, text=True, capture_output=True)
        if done.stdout:
            log(done.stdout.rstrip())
        if done.returncode != 0 or not result_path.is_file():
            tail = done.stderr.strip().splitlines()[-5:]
            out.update({a: {"error": f"anchor worker ({name} venv) exited {done.returncode}: {' | '.join(tail)}"}
                        for a in mine})
            continue
        out.update(json.loads(result_path.read_text(encoding="utf-8")))
    return out


if __name__ == "__main__":  # `python benchmarks/_anchors.py [onnx openvino]`: build the venvs only
    for env_name in sys.argv[1:] or list(ENVS):
        print(env_name, *ensure_env(env_name))
