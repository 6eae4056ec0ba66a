"""rankface's IResNet-18/34/50/100, with insightface's module layout (BN-conv-BN-PReLU-conv-BN blocks and a
BN-dropout-FC-BN1d output layer), so that arcface_torch checkpoints map onto it name for name."""

from __future__ import annotations

import torch
from torch import nn

from rankface.models.face_base import FaceEncoderPreTrainedModel
from rankface.models.iresnet.configuration_iresnet import IResNetConfig


class IBasicBlock(nn.Module):
    """Pre-activation-style basic block: BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, eps: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=eps)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, eps=eps)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out, eps=eps)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNetPreTrainedModel(FaceEncoderPreTrainedModel):
    """Weight initialisation and Hugging Face plumbing shared by IResNet models."""

    config_class = IResNetConfig
    base_model_prefix = "iresnet"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # insightface: normal(0, 0.1) convolutions, identity BatchNorm (the base's), PReLU slope 0.25.
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, self.config.initializer_range)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.PReLU):
            nn.init.constant_(module.weight, 0.25)
        else:
            super()._init_weights(module)


class IResNetModel(IResNetPreTrainedModel):
    """IResNet face encoder: `[N, 3, H, W]` normalised faces -> `[N, E]` embedding (not normalised).

    `H = W = config.input_size`: the final fully connected layer flattens the `[C, h, w]` map.
    """

    def __init__(self, config: IResNetConfig) -> None:
        super().__init__(config)
        eps = config.batch_norm_eps
        width = config.stage_channels[0]
        self.conv1 = nn.Conv2d(config.num_channels, width, 3, config.stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.prelu = nn.PReLU(width)
        c_in = width
        for index, (blocks, c_out, stride) in enumerate(
            zip(config.layers, config.stage_channels, config.stage_strides, strict=True), start=1
        ):
            stage = [IBasicBlock(c_in, c_out, stride, eps)]
            stage += [IBasicBlock(c_out, c_out, 1, eps) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            c_in = c_out
        self.bn2 = nn.BatchNorm2d(c_in, eps=eps)
        self.dropout = nn.Dropout(p=config.dropout)
        self.fc = nn.Linear(c_in * config.feature_map_size**2, config.embedding_size)
        self.features = nn.BatchNorm1d(config.embedding_size, eps=eps)
        self.post_init()
        # insightface freezes the final BN's scale at 1: the embedding's scale is left to the FC layer.
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def _feature_map_layers(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` -> last spatial feature map `[N, C, h, w]` (after the final BN2d)."""
        x = self.prelu(self.bn1(self.conv1(pixel_values)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn2(x)

    def embed_from_feature_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Flatten a (possibly attended) `[N, C, h, w]` map through dropout, FC and BN1d into `[N, E]`."""
        return self.features(self.fc(self.dropout(feature_map.flatten(1))))
