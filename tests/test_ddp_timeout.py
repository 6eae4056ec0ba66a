"""`ddp_timeout`: a collective that waits on a stalled process stops the run with an error, not a silent hang."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from launch import two_process_command

from rankface.training import parse_training_args
from rankface.training.face_arguments import parse_face_training_args

# Rank 1 stalls (as a process stuck in I/O or killed would) while rank 0 waits for it in an all-reduce.
STALLED_RANK = """
import sys, time
import torch, torch.distributed as dist
from rankface.training.face import make_accelerator
from rankface.training.face_arguments import parse_face_training_args
accelerator = make_accelerator(parse_face_training_args(["--ddp_timeout", sys.argv[1]]))
if accelerator.process_index == 1:
    time.sleep(120)
dist.all_reduce(torch.ones(1))
"""


@pytest.mark.slow
def test_a_stalled_rank_stops_the_run_after_ddp_timeout(tmp_path):
    script = tmp_path / "stalled_rank.py"
    script.write_text(STALLED_RANK)
    started = time.perf_counter()
    done = subprocess.run(two_process_command(script, "3"), env={**os.environ, "ACCELERATE_USE_CPU": "true"},
                          capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode != 0
    assert "timed out" in (done.stdout + done.stderr).lower(), done.stderr[-3000:]
    assert time.perf_counter() - started < 60  # not the 120 s stall: the 3 s timeout ended it


@pytest.mark.parametrize("parse", [parse_training_args, parse_face_training_args], ids=["reranker", "face"])
def test_ddp_timeout_must_be_positive(parse):
    with pytest.raises(ValueError, match="ddp_timeout must be > 0 seconds, got 0"):
        parse(["--ddp_timeout", "0"])
