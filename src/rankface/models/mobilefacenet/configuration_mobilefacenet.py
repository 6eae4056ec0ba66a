"""Configuration of rankface's MobileFaceNet (MobileNetV2-style face backbone with a global depthwise head)."""

from __future__ import annotations

from transformers import PretrainedConfig

# (expansion t, output channels c, blocks n, stride of the first block s): the layout of the public
# 128-d MobileFaceNet in ../shared/models/mobilefacenet, whose state_dict this class must load strictly.
DEFAULT_BLOCK_SETTINGS: list[list[int]] = [[2, 64, 5, 2], [4, 128, 1, 2], [2, 128, 6, 1], [4, 128, 1, 2], [2, 128, 2, 1]]


def _conv_out(size: int, stride: int) -> int:
    """Spatial size after a 3x3 convolution with padding 1 and the given stride."""
    return (size + 2 - 3) // stride + 1


class MobileFaceNetConfig(PretrainedConfig):
    """Architecture of a MobileFaceNet.

    Args:
        input_size: side of the square input face in pixels (112 for ArcFace-aligned crops).
        num_channels: input channels (3).
        embedding_size: size `E` of the output embedding.
        stem_channels: channels of the stem convolution and of the depthwise block after it.
        stem_stride: stride of the stem convolution (2 in the original network). `low_resolution_stem=True`
            forces 1, which keeps twice the spatial resolution through the network for small inputs.
        low_resolution_stem: shortcut for `stem_stride=1` (for inputs such as 16-32 px fed without up-sampling).
        block_settings: inverted-residual groups as `[t, c, n, s]` rows.
        last_channels: channels `C` of the 1x1 expansion before the global depthwise convolution; this is
            the channel count of the feature map returned with `output_feature_map=True`.
        batch_norm_eps: epsilon of every BatchNorm.
        color_order: channel order the weights expect ("RGB" or "BGR").
        image_mean: pixel mean subtracted before scaling (pixels in 0..255).
        image_std: divisor applied after subtracting the mean.
    """

    model_type = "rankface-mobilefacenet"

    def __init__(
        self,
        input_size: int = 112,
        num_channels: int = 3,
        embedding_size: int = 128,
        stem_channels: int = 64,
        stem_stride: int = 2,
        low_resolution_stem: bool = False,
        block_settings: list[list[int]] | None = None,
        last_channels: int = 512,
        batch_norm_eps: float = 1e-5,
        color_order: str = "RGB",
        image_mean: float = 127.5,
        image_std: float = 128.0,
        initializer_range: float = 0.02,
        **kwargs,
    ) -> None:
        block_settings = [list(row) for row in (block_settings or DEFAULT_BLOCK_SETTINGS)]
        for i, row in enumerate(block_settings):
            if len(row) != 4 or any(int(v) < 1 for v in row):
                raise ValueError(f"MobileFaceNetConfig.block_settings[{i}] = {row}: expected [t, c, n, s], all >= 1")
        if color_order not in ("RGB", "BGR"):
            raise ValueError(f"MobileFaceNetConfig.color_order = {color_order!r}: expected 'RGB' or 'BGR'")
        if stem_stride not in (1, 2):
            raise ValueError(f"MobileFaceNetConfig.stem_stride = {stem_stride}: expected 1 or 2")
        self.input_size = int(input_size)
        self.num_channels = int(num_channels)
        self.embedding_size = int(embedding_size)
        self.stem_channels = int(stem_channels)
        self.stem_stride = 1 if low_resolution_stem else int(stem_stride)
        self.low_resolution_stem = bool(low_resolution_stem)
        self.block_settings = block_settings
        self.last_channels = int(last_channels)
        self.batch_norm_eps = float(batch_norm_eps)
        self.color_order = color_order
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        if self.feature_map_size < 1:
            raise ValueError(f"MobileFaceNetConfig.input_size = {input_size} is too small for the network's strides")

    @property
    def feature_channels(self) -> int:
        """Channels `C` of the last spatial feature map (before the global depthwise convolution)."""
        return self.last_channels

    @property
    def feature_map_size(self) -> int:
        """Side `h = w` of the last spatial feature map for `input_size` inputs (7 for 112 px)."""
        size = _conv_out(self.input_size, self.stem_stride)
        for _t, _c, _n, s in self.block_settings:
            size = _conv_out(size, s)
        return size
