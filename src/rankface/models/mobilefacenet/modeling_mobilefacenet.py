"""rankface's MobileFaceNet: module names follow ../shared/models/mobilefacenet/README.md so that the public
pretrained state_dict loads with `strict=True`."""

from __future__ import annotations

import torch
from torch import nn

from rankface.models.face_base import FaceEncoderPreTrainedModel
from rankface.models.mobilefacenet.configuration_mobilefacenet import MobileFaceNetConfig


def _conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int, groups: int, eps: float) -> nn.Sequential:
    """Conv (no bias) - BN - ReLU6 at indices 0, 1, 2 (the activation holds no weights)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=eps),
        nn.ReLU6(inplace=True),
    )


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 - BN - ReLU - pointwise 1x1 - BN - ReLU (plain ReLU, as in the pretrained network)."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=eps)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=eps)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand - 3x3 depthwise (stride) - 1x1 linear projection, residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int, eps: float) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.use_residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            _conv_bn_act(c_in, hidden, 1, 1, 1, eps),
            _conv_bn_act(hidden, hidden, 3, stride, hidden, eps),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, eps=eps),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class GlobalDepthwiseConv(nn.Module):
    """Global depthwise convolution (kernel = feature map size) + BN: a learned spatial pooling, no activation."""

    def __init__(self, channels: int, kernel: int, eps: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.depthwise(x))


class MobileFaceNetPreTrainedModel(FaceEncoderPreTrainedModel):
    """Weight initialisation and the Hugging Face plumbing shared by MobileFaceNet models."""

    config_class = MobileFaceNetConfig
    base_model_prefix = "mobilefacenet"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Kaiming for convolutions (ReLU-family network), identity BatchNorm (the base's): the usual MobileNet recipe.
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class MobileFaceNetModel(MobileFaceNetPreTrainedModel):
    """MobileFaceNet face encoder.

    Input `pixel_values` `[N, 3, H, W]` (normalised as the config says: `(pixel - image_mean) / image_std`, in
    `color_order`), output a `[N, E]` embedding (not normalised). `H = W = config.input_size`, because the
    global depthwise convolution's kernel equals the last feature map's size.
    """

    def __init__(self, config: MobileFaceNetConfig) -> None:
        super().__init__(config)
        eps = config.batch_norm_eps
        stem = config.stem_channels
        self.conv1 = _conv_bn_act(config.num_channels, stem, 3, config.stem_stride, 1, eps)
        self.dw_conv = DepthwiseSeparable(stem, eps)
        blocks: list[nn.Module] = []
        c_in = stem
        for t, c, n, s in config.block_settings:
            for i in range(n):
                blocks.append(InvertedResidual(c_in, c, s if i == 0 else 1, t, eps))
                c_in = c
        self.features = nn.Sequential(*blocks)
        self.conv2 = _conv_bn_act(c_in, config.last_channels, 1, 1, 1, eps)
        self.gdconv = GlobalDepthwiseConv(config.last_channels, config.feature_map_size, eps)
        self.conv3 = nn.Conv2d(config.last_channels, config.embedding_size, 1, bias=True)
        self.bn = nn.BatchNorm2d(config.embedding_size, eps=eps)
        self.post_init()

    def _feature_map_layers(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> last spatial feature map `[N, C, h, w]` (before the global depthwise convolution)."""
        x = self.dw_conv(self.conv1(pixel_values))
        return self.conv2(self.features(x))

    def embed_from_feature_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Pool a (possibly attended) feature map `[N, C, h, w]` into the embedding `[N, E]`."""
        x = self.bn(self.conv3(self.gdconv(feature_map)))
        return x.flatten(1)
