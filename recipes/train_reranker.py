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


def main(argv: list[str] | None = None) -> None:
    args = parse_training_args(argv)
    metrics = train(args)
    if metrics:
        print(json.dumps({"final_eval": metrics}))


if __name__ == "__main__":
    main(sys.argv[1:])
