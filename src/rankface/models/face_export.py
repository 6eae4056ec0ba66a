"""ONNX export of rankface face encoders (dynamic batch), for onnxruntime deployment."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from rankface.utils.io import atomic_write


class _EmbeddingOnly(nn.Module):
    """Wrap a face encoder so the exported graph returns the `[N, E]` embedding tensor alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values, return_dict=False)[0]


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export a face encoder (eval mode, BatchNorm running statistics) to ONNX.

    The graph has input `pixel_values` `[batch, 3, S, S]` (dynamic batch, `S = config.input_size`) and output
    `embedding` `[batch, E]`, not normalised. The file is written atomically.

    Args:
        model: a `MobileFaceNetModel` / `IResNetModel` (anything with `config.input_size`, `config.num_channels`).
        path: output `.onnx` file.
        opset: ONNX opset version.

    Returns:
        The written path.
    """
    import onnx

    config = model.config
    was_training = model.training
    model.eval()
    dummy = torch.zeros(2, config.num_channels, config.input_size, config.input_size)
    path = Path(path)
    try:
        # The TorchScript exporter (dynamo=False) gives a self-contained file and a plain dynamic batch axis, and
        # needs no onnxscript (the torch.export-based exporter does); its deprecation notice is expected here.
        with atomic_write(path, "wb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                _EmbeddingOnly(model), (dummy,), handle, input_names=["pixel_values"], output_names=["embedding"],
                dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=opset,
                do_constant_folding=True, dynamo=False,
            )
    finally:
        model.train(was_training)
    onnx.checker.check_model(str(path))
    return path
