"""Train a face encoder (any margin head, +- UNPG, very-low-resolution augmentation) from a YAML config.

    python recipes/train_face.py --config recipes/configs/lfw_vlr_arcface.yaml
    python recipes/train_face.py --config recipes/configs/lfw_vlr_arcface.yaml --heldout_folds 5 6 7 8 9  # model B
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/train_face.py \
        --config recipes/configs/lfw_vlr_arcface_unpg.yaml
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 recipes/train_face.py --config ...

Any setting of the config can be overridden on the command line (`--max_steps 100`); `--help` lists them. Resume an
interrupted run with `--resume_from_checkpoint latest`. The encoder ends up in `<output_dir>/model`
(`AutoModel.from_pretrained`), the class weights only in the checkpoints. The `precision` setting (default `auto`:
bf16 autocast where the hardware runs bf16 natively, fp32 elsewhere) decides the precision, not accelerate's
`--mixed_precision`; with `eval_sets: [validation]` the learning curve is logged in `<output_dir>/trainer_state.json`.
"""

from __future__ import annotations

import json
import sys

from rankface.training.face import train_face
from rankface.training.face_arguments import parse_face_training_args


def main(argv: list[str] | None = None) -> None:
    args = parse_face_training_args(argv)
    metrics = train_face(args)
    if metrics:
        print(json.dumps({"final_eval": {k: round(v["accuracy"], 4) for k, v in metrics.items()}}))


if __name__ == "__main__":
    main(sys.argv[1:])
