"""Seeded, stratified train/val/test splits shared by every dataset loader."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from edgekit.data.base import Split


def stratified_splits(
    x: np.ndarray, y: np.ndarray, *, test_fraction: float, val_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    """Split arrays into train/val/test, stratified by label, reproducible for a seed."""
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=y[rest])
    return tuple(_split(x, y, part) for part in (train, val, test))  # type: ignore[return-value]


def _split(x: np.ndarray, y: np.ndarray, part: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x[part])), torch.from_numpy(y[part].astype(np.int64)))
