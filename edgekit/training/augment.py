"""Training-time augmentations, applied to a batch on the fly. Registered by name."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from edgekit.registry import Registry

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


@AUGMENTATIONS.register("none")
def no_augmentation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x


@AUGMENTATIONS.register("series_jitter")
def series_jitter(x: torch.Tensor, gen: torch.Generator, scale: float = 0.1, noise: float = 0.05) -> torch.Tensor:
    """Time series (B, C, L): scale each channel by ±``scale`` and add Gaussian noise of std ``noise``."""
    gain = 1.0 + (torch.rand(x.shape[0], x.shape[1], 1, generator=gen) * 2 - 1) * scale  # (B, C, 1)
    return x * gain + torch.randn(x.shape, generator=gen) * noise


@AUGMENTATIONS.register("shift")
def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: float = 0.1) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` of its side and scale it by ±10% (images only)."""
    b = x.shape[0]
    theta = torch.zeros(b, 2, 3)
    scale = 1.0 + (torch.rand(b, generator=gen) - 0.5) * 0.2
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = (torch.rand(b, 2, generator=gen) * 2 - 1) * max_shift * 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
