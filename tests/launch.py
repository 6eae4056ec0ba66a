"""Run a recipe under `accelerate launch` with 2 real CPU processes (gloo DDP), and make a hang say where it hung."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest


def launch_two_processes(recipe: Path, config: Path, timeout: float = 300.0) -> None:
    """Run `recipe --config config` in 2 processes; fail with the output when it fails.

    Should it still run at `timeout`, the worker processes get SIGABRT: with `PYTHONFAULTHANDLER` set, each prints
    the Python stack of every thread, so the failure shows which call each rank waited in, not only that the run
    hung. Then the launcher and every process under it are killed (torch's launcher starts each worker in a session
    of its own, so killing the launcher's process group would leave them running).
    """
    env = os.environ | {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(recipe), "--config", str(config),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        workers = psutil.Process(process.pid).children(recursive=True)
        for worker in workers:
            worker.send_signal(signal.SIGABRT)
        psutil.wait_procs(workers, timeout=20)
        _kill_tree(process)
        output, _ = process.communicate()
        pytest.fail(f"the two-process run was still going after {timeout:.0f} s; the workers' stacks at SIGABRT:\n"
                    + output[-12000:])
    finally:
        _kill_tree(process)
    assert process.returncode == 0, output[-6000:]


def _kill_tree(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait()
