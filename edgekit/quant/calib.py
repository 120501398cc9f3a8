"""Calibration data: the recipe's training split by default, or a user's folder / .npy / .npz file.

Every sample is checked before use: the model's input shape (batch 1) and finite values only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekit.checkpoint import META
from edgekit.data import load_dataset
from edgekit.data.image_folder import IMAGE_SUFFIXES, read_images
from edgekit.errors import EdgekitError
from edgekit.graph import ModelSource

Sample = tuple[torch.Tensor, ...]  # one batch-1 input per model input


@dataclass(frozen=True)
class CalibrationData:
    """Batch-1 input samples for calibration (and optional labels, for accuracy budgets)."""

    samples: tuple[Sample, ...]
    description: str  # where they came from, e.g. "digits train split (128)"
    labels: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.samples)


def check_samples(samples: list[Sample], example: tuple[torch.Tensor, ...], where: str) -> None:
    """Refuse samples of the wrong count/shape or with NaN/inf, naming the shape expected or the bad sample."""
    if not samples:
        raise EdgekitError(f"{where}: no calibration samples")
    want = [tuple(x.shape) for x in example]
    for i, sample in enumerate(samples):
        got = [tuple(x.shape) for x in sample]
        if got != want:
            raise EdgekitError(f"{where}: sample {i} has shape {_shapes(got)}; the model takes {_shapes(want)}")
        for x in sample:
            if not torch.isfinite(x).all():
                raise EdgekitError(f"{where}: sample {i} contains NaN or inf")


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(list(s)) for s in shapes)


def calibration_for(source: ModelSource, n: int, path: str | Path | np.ndarray | None = None, *,
                    seed: int = 0) -> CalibrationData:
    """``n`` samples from ``path`` (or an array of samples) when given, else from the recipe's training split."""
    if isinstance(path, np.ndarray):
        return _from_array(path, "the calibration array", source, n, seed)
    if path is not None:
        return _from_path(Path(path), source, n, seed)
    split = recipe_split(source, "train")
    if split is None:
        raise EdgekitError(f"{source.origin} has no recipe dataset to calibrate on; give --calib DATA "
                           "(an image folder, .npy or .npz)")
    inputs, labels, name = split
    idx = _pick(len(inputs), n, seed)
    picked = inputs[idx]
    samples = source.samples(picked) if source.samples else [(x[None].clone(),) for x in picked]
    check_samples(samples, source.example_inputs, name)
    kept = tuple(int(labels[i]) for i in idx) if source.labelled and len(samples) == len(idx) else None
    return CalibrationData(tuple(samples), f"{name} ({len(samples)})", kept)


def recipe_split(source: ModelSource, split: str) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """(inputs, labels, description) of a split of the checkpoint's recipe dataset, or None."""
    if source.kind != "checkpoint":
        return None
    recipe = json.loads((Path(source.origin) / META).read_text()).get("recipe")
    if not recipe:
        return None
    options = {k: v for k, v in recipe["data"].items() if k != "source"} | {"seed": recipe.get("seed", 0)}
    data = load_dataset(recipe["data"]["source"], **options)
    part = getattr(data, split)
    return part.inputs, part.labels, f"{data.name} {split} split"


def _pick(total: int, n: int, seed: int) -> list[int]:
    """``n`` distinct seeded indices (all of them when there are fewer)."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:n])


def _from_path(path: Path, source: ModelSource, n: int, seed: int) -> CalibrationData:
    if path.is_dir():
        array = _read_image_tree(path, source)
    elif path.suffix in (".npy", ".npz"):
        array = _read_array(path)
    else:
        raise EdgekitError(f"calibration data {path} must be an image folder, a .npy or a .npz file")
    return _from_array(array, str(path), source, n, seed)


def _from_array(array: np.ndarray, where: str, source: ModelSource, n: int, seed: int) -> CalibrationData:
    """``n`` seeded samples of an (N, *sample shape) array, checked against the model's input."""
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise EdgekitError(f"calibration data {where} holds {array.dtype} values; expected numbers")
    want = tuple(source.example_inputs[0].shape)  # (1, *sample shape)
    if array.ndim == len(want) - 1 and len(want) == 4 and want[1] == 1:
        array = array[:, None]  # (N, H, W) grayscale → (N, 1, H, W)
    if array.ndim < 1:
        raise EdgekitError(f"calibration data {where}: expected an array of samples of shape {list(want[1:])}")
    idx = _pick(len(array), n, seed)
    samples = [(torch.from_numpy(np.ascontiguousarray(array[i][None], dtype=np.float32)),) for i in idx]
    check_samples(samples, source.example_inputs, where)
    return CalibrationData(tuple(samples), f"{where} ({len(samples)})")


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            key = "input_0" if "input_0" in z.files else z.files[0]
            return z[key]
    except (OSError, ValueError, IndexError) as exc:
        raise EdgekitError(f"cannot read calibration data {path}: {exc}") from None


def _read_image_tree(path: Path, source: ModelSource) -> np.ndarray:
    """Every image under ``path`` (any layout), preprocessed as the model's metadata says."""
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgekitError(f"calibration folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    pre = source.preprocessing or {}
    size = (pre.get("size") or [source.example_inputs[0].shape[-1]])[0]
    x = read_images(files, size=int(size), color=pre.get("color", "grayscale")) * 255.0  # raw pixels
    mean = np.asarray(pre.get("mean", [0.0]), dtype=np.float32)[:, None, None]
    std = np.asarray(pre.get("std", [1.0]), dtype=np.float32)[:, None, None]
    return (x * float(pre.get("scale", 1 / 255)) - mean) / std
