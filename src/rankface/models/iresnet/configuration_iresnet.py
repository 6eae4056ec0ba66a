"""Configuration of rankface's IResNet (the insightface "improved ResNet" face backbone)."""

from __future__ import annotations

from rankface.models.face_config import FaceEncoderConfig

# Blocks per stage for each depth, as in insightface's arcface_torch.
IRESNET_LAYERS: dict[int, list[int]] = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3]}


class IResNetConfig(FaceEncoderConfig):
    """Architecture of an IResNet.

    Args:
        num_layers: depth, one of 18, 34, 50, 100.
        stage_channels: output channels of the four stages; the last is the feature map's channel count `C`.
        stem_stride: stride of the 3x3 stem convolution (1 in insightface).
        low_resolution_stem: when true the first stage keeps the resolution (stride 1 instead of 2), so an input of
            `input_size` px gives a feature map twice as large: for small inputs fed without up-sampling.
        dropout: dropout before the final fully connected layer (0 in insightface's defaults).
        **kwargs: the input contract of `FaceEncoderConfig` (input_size 112, num_channels 3, embedding_size 512,
            color_order "RGB", `(pixel - 127.5) / 127.5`, batch_norm_eps 1e-5; initializer_range 0.1 here, the
            std of insightface's convolution init) and `PretrainedConfig`'s arguments.
    """

    model_type = "rankface-iresnet"

    def __init__(
        self,
        num_layers: int = 50,
        stage_channels: list[int] | None = None,
        stem_stride: int = 1,
        low_resolution_stem: bool = False,
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        if int(num_layers) not in IRESNET_LAYERS:
            raise ValueError(f"IResNetConfig.num_layers = {num_layers}: expected one of {sorted(IRESNET_LAYERS)}")
        stage_channels = [int(c) for c in (stage_channels or [64, 128, 256, 512])]
        if len(stage_channels) != 4:
            raise ValueError(f"IResNetConfig.stage_channels = {stage_channels}: expected 4 channel counts")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"IResNetConfig.dropout = {dropout}: expected a probability in [0, 1)")
        self.num_layers = int(num_layers)
        self.stage_channels = stage_channels
        self.stem_stride = int(stem_stride)
        self.low_resolution_stem = bool(low_resolution_stem)
        self.dropout = float(dropout)
        super().__init__(**{"embedding_size": 512, "image_std": 127.5, "initializer_range": 0.1, **kwargs})

    @property
    def layers(self) -> list[int]:
        """Blocks per stage for `num_layers`."""
        return IRESNET_LAYERS[self.num_layers]

    @property
    def stage_strides(self) -> list[int]:
        """Stride of the first block of each stage."""
        return [1 if self.low_resolution_stem else 2, 2, 2, 2]

    @property
    def feature_channels(self) -> int:
        """Channels `C` of the last spatial feature map."""
        return self.stage_channels[-1]
