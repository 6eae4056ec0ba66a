"""Train a reranker (plain or CET) from a YAML config; runs under `python` or `accelerate launch`.

    python recipes/train_reranker.py --config recipes/configs/nfcorpus_plain.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/train_reranker.py \
        --config recipes/configs/nfcorpus_cet.yaml
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 recipes/train_reranker.py --config ...

Any setting of the config can be overridden on the command line (`--max_steps 100`); `--help` lists them.
"""

from __future__ import annotations

import json
import sys

from rankface.training import parse_training_args, train
from rankface.training.steps import TrainingInterrupted


def main(argv: list[str] | None = None) -> None:
    args = parse_training_args(argv)
    try:
        metrics = train(args)
    except TrainingInterrupted as stop:  # Ctrl-C: one line saying where the run stands and how to go on
        if stop.main_process:
            print(stop.describe(stop.resume_command(["python", sys.argv[0]], sys.argv[1:] if argv is None else argv)),
                  file=sys.stderr)
        sys.exit(130)
    if metrics:
        print(json.dumps({"final_eval": metrics}))


if __name__ == "__main__":
    main(sys.argv[1:])
