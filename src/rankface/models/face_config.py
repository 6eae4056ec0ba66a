"""Base configuration of rankface's face encoder backbones (MobileFaceNet, IResNet): the input contract they share
and the size of their last feature map."""

from __future__ import annotations

from transformers import PretrainedConfig


def conv3x3_out(size: int, stride: int) -> int:
    """Spatial size after a 3x3 convolution with padding 1 and the given stride."""
    return (size + 2 - 3) // stride + 1


class FaceEncoderConfig(PretrainedConfig):
    """Input contract and shared settings of a face encoder backbone.

    A backbone config sets and validates its own architecture fields (including `stem_stride`), defines
    `stage_strides` and `feature_channels`, then calls `super().__init__(**kwargs)`; a backbone whose defaults
    differ from the ones below passes its own (e.g. `kwargs = {"embedding_size": 128, **kwargs}`). Every field is
    saved in config.json under its own name.

    Args:
        input_size: side of the square input face in pixels (112 for ArcFace-aligned crops).
        num_channels: input channels (3).
        embedding_size: size `E` of the output embedding.
        color_order: channel order the weights expect ("RGB" or "BGR").
        image_mean: pixel mean subtracted before scaling (pixels in 0..255).
        image_std: divisor applied after subtracting the mean: the model sees `(pixel - image_mean) / image_std`.
        batch_norm_eps: epsilon of every BatchNorm.
        initializer_range: standard deviation used by the backbone's weight initialisation.
    """

    def __init__(
        self,
        input_size: int = 112,
        num_channels: int = 3,
        embedding_size: int = 512,
        color_order: str = "RGB",
        image_mean: float = 127.5,
        image_std: float = 127.5,
        batch_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        **kwargs,
    ) -> None:
        name = type(self).__name__
        if color_order not in ("RGB", "BGR"):
            raise ValueError(f"{name}.color_order = {color_order!r}: expected 'RGB' or 'BGR'")
        positive = {
            "input_size": input_size,
            "num_channels": num_channels,
            "embedding_size": embedding_size,
            "image_std": image_std,
            "batch_norm_eps": batch_norm_eps,
        }
        for field, value in positive.items():
            if not float(value) > 0:
                raise ValueError(f"{name}.{field} = {value}: expected a value > 0")
        self.input_size = int(input_size)
        self.num_channels = int(num_channels)
        self.embedding_size = int(embedding_size)
        self.color_order = color_order
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.batch_norm_eps = float(batch_norm_eps)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        if self.feature_map_size < 1:
            raise ValueError(f"{name}.input_size = {input_size} is too small for the network's strides")

    @property
    def stage_strides(self) -> list[int]:
        """Strides of the 3x3 convolutions that follow the stem, in order (the ones that shrink the map)."""
        raise NotImplementedError(f"{type(self).__name__} must define stage_strides")

    @property
    def feature_channels(self) -> int:
        """Channels `C` of the last spatial feature map (what `output_feature_map=True` returns)."""
        raise NotImplementedError(f"{type(self).__name__} must define feature_channels")

    @property
    def feature_map_size(self) -> int:
        """Side `h = w` of the last spatial feature map for `input_size` inputs (7 for 112 px at the defaults)."""
        size = conv3x3_out(self.input_size, self.stem_stride)
        for stride in self.stage_strides:
            size = conv3x3_out(size, stride)
        return size
