"""Configuration of rankface's IResNet (the insightface "improved ResNet" face backbone)."""

from __future__ import annotations

from transformers import PretrainedConfig

# Blocks per stage for each depth, as in insightface's arcface_torch.
IRESNET_LAYERS: dict[int, list[int]] = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3]}


def _conv_out(size: int, stride: int) -> int:
    """Spatial size after a 3x3 convolution with padding 1 and the given stride."""
    return (size + 2 - 3) // stride + 1


class IResNetConfig(PretrainedConfig):
    """Architecture of an IResNet.

    Args:
        num_layers: depth, one of 18, 34, 50, 100.
        input_size: side of the square input face in pixels (112 for ArcFace-aligned crops).
        num_channels: input channels (3).
        embedding_size: size `E` of the output embedding (512 in insightface).
        stage_channels: output channels of the four stages; the last is the feature map's channel count `C`.
        stem_stride: stride of the 3x3 stem convolution (1 in insightface).
        low_resolution_stem: when true the first stage keeps the resolution (stride 1 instead of 2), so an input of
            `input_size` px gives a feature map twice as large: for small inputs fed without up-sampling.
        dropout: dropout before the final fully connected layer (0 in insightface's defaults).
        batch_norm_eps: epsilon of every BatchNorm.
        color_order, image_mean, image_std: the input contract, `(pixel - image_mean) / image_std`.
    """

    model_type = "rankface-iresnet"

    def __init__(
        self,
        num_layers: int = 50,
        input_size: int = 112,
        num_channels: int = 3,
        embedding_size: int = 512,
        stage_channels: list[int] | None = None,
        stem_stride: int = 1,
        low_resolution_stem: bool = False,
        dropout: float = 0.0,
        batch_norm_eps: float = 1e-5,
        color_order: str = "RGB",
        image_mean: float = 127.5,
        image_std: float = 127.5,
        initializer_range: float = 0.1,
        **kwargs,
    ) -> None:
        if int(num_layers) not in IRESNET_LAYERS:
            raise ValueError(f"IResNetConfig.num_layers = {num_layers}: expected one of {sorted(IRESNET_LAYERS)}")
        stage_channels = [int(c) for c in (stage_channels or [64, 128, 256, 512])]
        if len(stage_channels) != 4:
            raise ValueError(f"IResNetConfig.stage_channels = {stage_channels}: expected 4 channel counts")
        if color_order not in ("RGB", "BGR"):
            raise ValueError(f"IResNetConfig.color_order = {color_order!r}: expected 'RGB' or 'BGR'")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"IResNetConfig.dropout = {dropout}: expected a probability in [0, 1)")
        self.num_layers = int(num_layers)
        self.input_size = int(input_size)
        self.num_channels = int(num_channels)
        self.embedding_size = int(embedding_size)
        self.stage_channels = stage_channels
        self.stem_stride = int(stem_stride)
        self.low_resolution_stem = bool(low_resolution_stem)
        self.dropout = float(dropout)
        self.batch_norm_eps = float(batch_norm_eps)
        self.color_order = color_order
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        if self.feature_map_size < 1:
            raise ValueError(f"IResNetConfig.input_size = {input_size} is too small for the network's strides")

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

    @property
    def feature_map_size(self) -> int:
        """Side `h = w` of the last spatial feature map (7 for 112 px)."""
        size = _conv_out(self.input_size, self.stem_stride)
        for s in self.stage_strides:
            size = _conv_out(size, s)
        return size
