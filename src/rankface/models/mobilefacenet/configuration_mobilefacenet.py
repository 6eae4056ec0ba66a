"""Configuration of rankface's MobileFaceNet (MobileNetV2-style face backbone with a global depthwise head)."""

from __future__ import annotations

from rankface.models.face_config import FaceEncoderConfig

# (expansion t, output channels c, blocks n, stride of the first block s): the layout of the public
# 128-d MobileFaceNet in ../shared/models/mobilefacenet, whose state_dict this class must load strictly.
DEFAULT_BLOCK_SETTINGS: list[list[int]] = [[2, 64, 5, 2], [4, 128, 1, 2], [2, 128, 6, 1], [4, 128, 1, 2], [2, 128, 2, 1]]


class MobileFaceNetConfig(FaceEncoderConfig):
    """Architecture of a MobileFaceNet.

    Args:
        stem_channels: channels of the stem convolution and of the depthwise block after it.
        stem_stride: stride of the stem convolution (2 in the original network). `low_resolution_stem=True`
            forces 1, which keeps twice the spatial resolution through the network for small inputs.
        low_resolution_stem: shortcut for `stem_stride=1` (for inputs such as 16-32 px fed without up-sampling).
        block_settings: inverted-residual groups as `[t, c, n, s]` rows.
        last_channels: channels `C` of the 1x1 expansion before the global depthwise convolution; this is
            the channel count of the feature map returned with `output_feature_map=True`.
        **kwargs: the input contract of `FaceEncoderConfig` (input_size 112, num_channels 3, color_order "RGB",
            batch_norm_eps 1e-5, initializer_range 0.02; here embedding_size 128 and `(pixel - 127.5) / 128`, the
            public pretrained network's) and `PretrainedConfig`'s arguments.
    """

    model_type = "rankface-mobilefacenet"

    def __init__(
        self,
        stem_channels: int = 64,
        stem_stride: int = 2,
        low_resolution_stem: bool = False,
        block_settings: list[list[int]] | None = None,
        last_channels: int = 512,
        **kwargs,
    ) -> None:
        block_settings = [list(row) for row in (block_settings or DEFAULT_BLOCK_SETTINGS)]
        for i, row in enumerate(block_settings):
            if len(row) != 4 or any(int(v) < 1 for v in row):
                raise ValueError(f"MobileFaceNetConfig.block_settings[{i}] = {row}: expected [t, c, n, s], all >= 1")
        if stem_stride not in (1, 2):
            raise ValueError(f"MobileFaceNetConfig.stem_stride = {stem_stride}: expected 1 or 2")
        self.stem_channels = int(stem_channels)
        self.stem_stride = 1 if low_resolution_stem else int(stem_stride)
        self.low_resolution_stem = bool(low_resolution_stem)
        self.block_settings = block_settings
        self.last_channels = int(last_channels)
        super().__init__(**{"embedding_size": 128, "image_std": 128.0, **kwargs})

    @property
    def stage_strides(self) -> list[int]:
        """Stride of the first block of each inverted-residual group."""
        return [int(s) for _t, _c, _n, s in self.block_settings]

    @property
    def feature_channels(self) -> int:
        """Channels `C` of the last spatial feature map (before the global depthwise convolution)."""
        return self.last_channels
