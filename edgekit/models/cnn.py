"""Compact CNN family: a MobileNet-style stack of blocks of one registered kind (``BLOCKS``): MobileNetV1's
depthwise-separable block (the default, what every saved checkpoint uses) or MobileNetV2's inverted residual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from edgekit.errors import EdgekitError
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
    # (out_channels, stride) of each block, before `width`; inverted residuals add an expansion factor:
    # (out_channels, stride, expand)
    blocks: tuple = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 1))
    dropout: float = 0.1  # before the classifier
    activation: str = "relu6"  # a registered activation: "relu6" (as saved before this key) or "relu"
    block: str = "depthwise_separable"  # a registered block kind (BLOCKS): "depthwise_separable" or "inverted_residual"
    stem_stride: int = 1  # stride of the stem convolution (MobileNetV2: 2)
    head_channels: int = 0  # 1x1 conv → BN → act to this many channels before pooling (0: none; MobileNetV2: 1280)


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


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand → BN → act → 3x3 depthwise → BN → act → 1x1 project → BN (linear
    bottleneck, no activation); the input is added back when the stride is 1 and the channels match. With
    ``expand`` 1 there is no expansion conv (MobileNetV2's first block)."""

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str = "relu6", expand: int = 6) -> None:
        super().__init__()
        hidden = c_in * expand
        act = ACTIVATIONS.get(activation)
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), act(),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.layers = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)  # (B, C_out, H/s, W/s)
        return x + y if self.residual else y


# Block kinds a config's `block` names; each entry of `blocks` is (out, stride, *the kind's extra arguments)
BLOCKS: Registry[type[nn.Module]] = Registry("cnn block kind")
BLOCKS.register("depthwise_separable")(DepthwiseSeparable)
BLOCKS.register("inverted_residual")(InvertedResidual)

# MobileNetV2-1.0 (Sandler et al. 2018, table 2; torchvision's mobilenet_v2): 3,504,872 parameters at 224x224.
_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENET_V2_224 = {
    "in_channels": 3, "image_size": 224, "num_classes": 1000, "stem_channels": 32, "stem_stride": 2,
    "block": "inverted_residual", "head_channels": 1280, "dropout": 0.2, "activation": "relu6",
    # (t, c, n, s) per stage → n blocks of (c, s first then 1, t)
    "blocks": tuple((c, s if i == 0 else 1, t) for t, c, n, s in _V2_STAGES for i in range(n)),
}
# named configs: ``edgekit.create_model("cnn", **CompactCNN.presets.get("mobilenet_v2_224"))``
PRESETS: Registry[dict] = Registry("cnn preset")
PRESETS.register("mobilenet_v2_224")(MOBILENET_V2_224)


@register_family("cnn", CNNConfig, "MobileNet-style depthwise-separable image classifier")
class CompactCNN(EdgeModel):
    """Stem conv, blocks of one registered kind, optional 1x1 head conv, global average pool, linear classifier."""

    input_names = ("image",)
    output_names = ("logits",)
    presets = PRESETS  # named configs (MobileNetV2-1.0 at 224x224), reachable as edgekit.FAMILIES.get("cnn").build.presets

    def __init__(self, config: CNNConfig) -> None:
        super().__init__(config)
        act = ACTIVATIONS.get(config.activation)
        block = BLOCKS.get(config.block)
        c = _channels(config.stem_channels, config.width)
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c, 3, config.stem_stride, 1, bias=False), nn.BatchNorm2d(c), act()
        )
        blocks = []
        for out, stride, *extra in config.blocks:
            out = _channels(out, config.width)
            blocks.append(block(c, out, stride, config.activation, *extra))
            c = out
        self.blocks = nn.Sequential(*blocks)
        if config.head_channels:  # a module only when asked for: older checkpoints' state dicts stay the same
            head = _channels(config.head_channels, max(1.0, config.width))
            self.head_conv = nn.Sequential(nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head), act())
            c = head
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(c, config.num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(image))  # (B, C, H', W')
        if self.config.head_channels:
            x = self.head_conv(x)  # (B, C_head, H', W')
        x = x.mean(dim=(2, 3))  # (B, C)
        return self.head(x)  # (B, num_classes)

    def reestimate_batchnorm(self, inputs: Iterable[torch.Tensor]) -> "CompactCNN":
        """Recompute every BatchNorm's running statistics from ``inputs`` (batches of images); see
        ``reestimate_batchnorm``. Returns the model, in eval mode."""
        return reestimate_batchnorm(self, inputs)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        return (torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size),)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> nn.Module:
    """Set every BatchNorm's running mean and variance to the plain average over ``inputs`` (batches run in
    train mode, ``momentum=None``), then put ``model`` in eval mode. A deep net with freshly initialized BN
    (mean 0, var 1) multiplies scales layer after layer: MobileNetV2's random-init logits are ~1e-19; with
    statistics of real images its activations, and therefore its int8 scales, look like a trained net's."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise EdgekitError("reestimate_batchnorm: the model has no BatchNorm layer to re-estimate")
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    seen = 0
    for batch in inputs:
        model(batch)
        seen += 1
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    if not seen:
        raise EdgekitError("reestimate_batchnorm: no input batches given; pass at least one (N, C, H, W) batch")
    return model.eval()
