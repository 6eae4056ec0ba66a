"""Run a recipe under `accelerate launch` with 2 real CPU processes (gloo DDP), and make a hang say where it hung."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import psutil
import pytest


def launch_two_processes(recipe: Path, config: Path, timeout: float = 300.0, output_dir: Path | None = None) -> None:
    """Run `recipe --config config` in 2 processes; fail with the output when it fails.

    Should it still run at `timeout`, the worker processes get SIGABRT: with `PYTHONFAULTHANDLER` set, each prints
    the Python stack of every thread, so the report shows which call each rank waited in, not only that the run
    hung. Then the launcher and every process under it are killed (torch's launcher starts each worker in a session
    of its own, so killing the launcher's process group would leave them running).

    A hang, or a collective that timed out (the config's `ddp_timeout`), is tried once more, from an emptied
    `output_dir`, with the first try's stacks as a warning: CI once hung here for 300 s (2026-12-03) and the hang
    did not recur in about 20 runs on the same kind of machine, idle or loaded. Any other failure, or a second hang,
    fails the test.
    """
    for attempt in (1, 2):
        hung, output = _run_once(recipe, config, timeout)
        if not hung or attempt == 2:
            break
        warnings.warn(f"the two-process run {'hung' if hung == 'hang' else 'timed out in a collective'} "
                      f"(try 1 of 2); its output and stacks:\n{output[-12000:]}", stacklevel=2)
        if output_dir is not None:
            shutil.rmtree(output_dir, ignore_errors=True)
    if hung == "hang":
        pytest.fail(f"the two-process run was still going after {timeout:.0f} s, twice; the workers' stacks at "
                    f"SIGABRT:\n{output[-12000:]}")
    assert not hung, output[-6000:]


def two_process_command(script: Path, *args: str) -> list[str]:
    """`accelerate launch` of `script args` as 2 CPU processes (gloo), on a free port."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(script), *args,
    ]


def _run_once(recipe: Path, config: Path, timeout: float) -> tuple[str | None, str]:
    """One launch: (`None` on success, `"hang"`, or `"collective timeout"`; its output). Fails on other errors."""
    env = os.environ | {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(two_process_command(recipe, "--config", str(config)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        workers = psutil.Process(process.pid).children(recursive=True)
        for worker in workers:
            worker.send_signal(signal.SIGABRT)
        psutil.wait_procs(workers, timeout=20)
        _kill_tree(process)
        output, _ = process.communicate()
        return "hang", output
    finally:
        _kill_tree(process)
    if process.returncode == 0:
        return None, output
    # gloo's words for a collective that waited longer than the process group's timeout
    lowered = output.lower()
    if "timed out" in lowered or ("timeout" in lowered and "gloo" in lowered):
        return "collective timeout", output
    raise AssertionError(output[-6000:])


def _kill_tree(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait()
