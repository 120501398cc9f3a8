"""Compact CNN family: a MobileNet-style stack of depthwise-separable blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgekit.models.base import EdgeModel, register_family
from edgekit.registry import Registry

# Activation after every convolution. ReLU quantizes best: each int8 backend fuses conv + ReLU
# (PT2E annotates the pair as one, ONNX Runtime folds the ReLU into QLinearConv's output range),
# whereas ReLU6 leaves a float Clip between a dequantize and a quantize in ONNX Runtime.
ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("relu6")(nn.ReLU6)


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int = 1  # image channels (1 = grayscale)
    image_size: int = 32  # square input side, pixels
    num_classes: int = 10  # classifier outputs
    width: float = 1.0  # multiplies every channel count
    stem_channels: int = 32  # channels of the first full 3x3 convolution
    # (out_channels, stride) of each depthwise-separable block, before `width`
    blocks: tuple = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 1))
    dropout: float = 0.1  # before the classifier
    activation: str = "relu6"  # a registered activation: "relu6" (as saved before this key) or "relu"


def _channels(c: int, width: float) -> int:
    return max(8, int(round(c * width / 8)) * 8)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv → BN → act → 1x1 pointwise conv → BN → act."""

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str = "relu6") -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = ACTIVATIONS.get(activation)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.depthwise(x)))  # (B, C_in, H/s, W/s)
        return self.act(self.bn2(self.pointwise(x)))  # (B, C_out, H/s, W/s)


@register_family("cnn", CNNConfig, "MobileNet-style depthwise-separable image classifier")
class CompactCNN(EdgeModel):
    """Stem conv, depthwise-separable blocks, global average pool, linear classifier."""

    input_names = ("image",)
    output_names = ("logits",)

    def __init__(self, config: CNNConfig) -> None:
        super().__init__(config)
        c = _channels(config.stem_channels, config.width)
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), ACTIVATIONS.get(config.activation)()
        )
        blocks = []
        for out, stride in config.blocks:
            out = _channels(out, config.width)
            blocks.append(DepthwiseSeparable(c, out, stride, config.activation))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(c, config.num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(image))  # (B, C, H', W')
        x = x.mean(dim=(2, 3))  # (B, C)
        return self.head(x)  # (B, num_classes)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        return (torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size),)
