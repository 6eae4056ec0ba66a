"""ONNX export of rankface face encoders (dynamic batch), for onnxruntime deployment."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from rankface.utils.io import atomic_write


class _ExportedOutputs(nn.Module):
    """Wrap a face encoder so the exported graph returns plain tensors: the embedding faces are compared with
    (`matching_embedding` where the model has one, as the RI encoder does), and the quality score if the model
    predicts one."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(pixel_values)
        matching = getattr(out, "matching_embedding", None)
        embedding = out.embedding if matching is None else matching
        quality = getattr(out, "quality", None)
        return (embedding,) if quality is None else (embedding, quality)


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export a face encoder (eval mode, BatchNorm running statistics) to ONNX.

    The graph has input `pixel_values` `[batch, 3, S, S]` (dynamic batch, `S = config.input_size`) and output
    `embedding` `[batch, E]`, not normalised: the embedding the model compares faces with. A model that predicts
    quality (the RI encoder) has a second output `quality` `[batch]`. The file is written atomically.

    Args:
        model: a `MobileFaceNetModel` / `IResNetModel` / `RecognizabilityModel` (anything with
            `config.input_size`).
        path: output `.onnx` file.
        opset: ONNX opset version.

    Returns:
        The written path.
    """
    import onnx

    config = model.config
    was_training = model.training
    model.eval()
    dummy = torch.zeros(2, getattr(config, "num_channels", 3), config.input_size, config.input_size)
    with torch.no_grad():
        names = ["embedding", "quality"][: len(_ExportedOutputs(model)(dummy))]
    path = Path(path)
    try:
        # The TorchScript exporter (dynamo=False) gives a self-contained file and a plain dynamic batch axis, and
        # needs no onnxscript (the torch.export-based exporter does); its deprecation notice is expected here.
        with atomic_write(path, "wb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                _ExportedOutputs(model), (dummy,), handle, input_names=["pixel_values"], output_names=names,
                dynamic_axes={"pixel_values": {0: "batch"}, **{n: {0: "batch"} for n in names}}, opset_version=opset,
                do_constant_folding=True, dynamo=False,
            )
    finally:
        model.train(was_training)
    onnx.checker.check_model(str(path))
    return path
