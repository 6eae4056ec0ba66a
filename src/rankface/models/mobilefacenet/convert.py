"""Convert the public MobileFaceNet `state_dict` (../shared/models/mobilefacenet/mobilefacenet.pt) into a rankface
checkpoint: `config.json` + `model.safetensors` + `preprocessor_config.json`, loadable with `AutoModel`.

Command line: `python -m rankface.models.mobilefacenet.convert STATE_DICT OUTPUT_DIR`
(the `rankface convert-mobilefacenet` sub-command calls `main`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from rankface.models.face_processor import FaceImageProcessor
from rankface.models.mobilefacenet.configuration_mobilefacenet import MobileFaceNetConfig
from rankface.models.mobilefacenet.modeling_mobilefacenet import MobileFaceNetModel


def load_mobilefacenet_state_dict(state_dict_path: str | os.PathLike, config: MobileFaceNetConfig | None = None
                                  ) -> MobileFaceNetModel:
    """Build a `MobileFaceNetModel` (default config: 112 px, 128-d, RGB, (x - 127.5) / 128) and load the
    `state_dict` at `state_dict_path` into it with `strict=True`; returns the model in eval mode."""
    path = Path(state_dict_path)
    if not path.is_file():
        raise FileNotFoundError(f"MobileFaceNet state_dict not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a state_dict (a mapping of tensors), got {type(state).__name__}")
    model = MobileFaceNetModel(config or MobileFaceNetConfig())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: does not match rankface's MobileFaceNet layout: {err}") from err
    return model.eval()


def convert_mobilefacenet(state_dict_path: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Write a rankface checkpoint (safetensors weights, config, image processor) of the `state_dict`.

    Args:
        state_dict_path: PyTorch `state_dict` file of the public 128-d MobileFaceNet.
        output_dir: folder to write; created if needed.

    Returns:
        The output folder.
    """
    model = load_mobilefacenet_state_dict(state_dict_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    FaceImageProcessor.from_model_config(model.config).save_pretrained(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="rankface convert-mobilefacenet",
        description="Convert a MobileFaceNet state_dict (.pt) into a rankface checkpoint folder.",
    )
    parser.add_argument("state_dict", help="path of the .pt state_dict")
    parser.add_argument("output_dir", help="folder to write config.json, model.safetensors, preprocessor_config.json")
    args = parser.parse_args(argv)
    out = convert_mobilefacenet(args.state_dict, args.output_dir)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
