"""Base of rankface's face encoder backbones (MobileFaceNet, IResNet): the input check, the forward plumbing
(pixels -> feature map -> embedding -> `FaceEncoderOutput`) and the BatchNorm initialisation they share."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from rankface.models.face_config import FaceEncoderConfig
from rankface.models.outputs import FaceEncoderOutput


class FaceEncoderPreTrainedModel(PreTrainedModel):
    """Hugging Face plumbing shared by the face backbones.

    A backbone defines its layers, `_feature_map_layers` (normalised pixels `[N, 3, H, W]` -> last spatial map
    `[N, C, h, w]`) and `embed_from_feature_map` (`[N, C, h, w]` -> `[N, E]`); the recognizability encoder pools an
    attended map through the same `embed_from_feature_map`.
    """

    config_class = FaceEncoderConfig
    main_input_name = "pixel_values"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Identity BatchNorm (scale 1, shift 0, fresh running statistics) in every backbone; a backbone
        # initialises its convolutions and other layers itself and hands the rest here.
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """Raise a `ValueError` naming the model and the expected `[N, C_in, S, S]` unless `pixel_values` has it."""
        # Skipped while exporting: the check is Python control flow the ONNX tracer cannot record.
        if torch.onnx.is_in_onnx_export():
            return
        expected = (self.config.num_channels, self.config.input_size, self.config.input_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__}: pixel_values has shape {tuple(pixel_values.shape)}, expected [N, "
                f"{expected[0]}, {expected[1]}, {expected[2]}] (config.input_size = {self.config.input_size})"
            )

    def _feature_map_layers(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's layers up to the last spatial map: `[N, 3, H, W]` -> `[N, C, h, w]` (input checked)."""
        raise NotImplementedError(f"{type(self).__name__} must define _feature_map_layers")

    def embed_from_feature_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Pool a (possibly attended) feature map `[N, C, h, w]` into the embedding `[N, E]`."""
        raise NotImplementedError(f"{type(self).__name__} must define embed_from_feature_map")

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> last spatial feature map `[N, C, h, w]` (`C = config.feature_channels`).

        Raises:
            ValueError: `pixel_values` is not `[N, config.num_channels, config.input_size, config.input_size]`.
        """
        self._check_pixel_values(pixel_values)
        return self._feature_map_layers(pixel_values)

    def forward(
        self, pixel_values: torch.Tensor, output_feature_map: bool = False, return_dict: bool = True
    ) -> FaceEncoderOutput | tuple[torch.Tensor, ...]:
        """Embed faces.

        Args:
            pixel_values: `[N, 3, H, W]` normalised faces (`H = W = config.input_size`).
            output_feature_map: also return the `[N, C, h, w]` map that `embed_from_feature_map` pools.
            return_dict: return a `FaceEncoderOutput` (else a tuple `(embedding,)` or `(embedding, feature_map)`).

        Returns:
            `FaceEncoderOutput(embedding [N, E], feature_map [N, C, h, w] or None)`; the embedding is not normalised.
        """
        fmap = self.feature_map(pixel_values)
        embedding = self.embed_from_feature_map(fmap)
        if not return_dict:
            return (embedding, fmap) if output_feature_map else (embedding,)
        return FaceEncoderOutput(embedding=embedding, feature_map=fmap if output_feature_map else None)
