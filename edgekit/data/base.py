"""Datasets as plain tensors with their labels and preprocessing, and a registry of sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from edgekit.registry import Registry


@dataclass(frozen=True)
class Preprocessing:
    """How raw inputs become model inputs; recorded in every artifact so apps can reproduce it."""

    layout: str = "NCHW"  # tensor layout the model takes
    scale: float = 1.0  # raw pixel value is multiplied by this first (e.g. 1/255)
    mean: tuple[float, ...] = (0.0,)  # subtracted per channel after scaling
    std: tuple[float, ...] = (1.0,)  # divided per channel after subtracting the mean
    size: tuple[int, int] | None = None  # (H, W) the raw image is resized to
    color: str = "grayscale"  # "grayscale" or "rgb"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "size": list(self.size) if self.size else None,
            "color": self.color,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        return cls(
            layout=d.get("layout", "NCHW"),
            scale=float(d.get("scale", 1.0)),
            mean=tuple(d.get("mean", (0.0,))),
            std=tuple(d.get("std", (1.0,))),
            size=tuple(d["size"]) if d.get("size") else None,
            color=d.get("color", "grayscale"),
        )


@dataclass
class Split:
    """Inputs and integer labels of one split, already preprocessed."""

    inputs: torch.Tensor  # (N, ...) float32, or (N, L) int64 tokens for a language model
    labels: torch.Tensor  # (N,) int64 class ids, or (N, L) int64 next tokens for a language model

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    """A train/val/test split of one task, with class names and preprocessing."""

    name: str
    train: Split
    val: Split
    test: Split
    labels: list[str]
    preprocessing: Preprocessing
    meta: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"  # the training task it is for: a name in edgekit.training.tasks.TASKS

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.inputs.shape[1:])


DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
