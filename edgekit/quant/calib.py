"""Calibration data: the recipe's training split by default, or the user's samples.

A user's samples are an ``.npz`` keyed by the model's input names (any model: token ids, masks, several
inputs; read by ``edgekit.sample_inputs.read_sample_inputs``, dtypes kept), or for a model of one float input
a ``.npy`` of stacked samples, an array from Python or an image folder. Every sample is checked before use
(the model's input shapes at batch 1, dtypes, finite values), and :func:`check_calibration` does all of that
without running the model, so a caller can refuse bad data before any reference run or export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgekit.checkpoint import META
from edgekit.data import load_dataset
from edgekit.data.image_folder import IMAGE_SUFFIXES, read_images
from edgekit.errors import EdgekitError
from edgekit.graph import ModelSource
from edgekit.quant.spec import QuantSpec
from edgekit.sample_inputs import read_sample_inputs

Sample = tuple[torch.Tensor, ...]  # one batch-1 input per model input
Calib = str | Path | np.ndarray | None  # what calibration_for reads: a path, an array of samples, or None (recipe)


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
            if x.is_floating_point() and not torch.isfinite(x).all():
                raise EdgekitError(f"{where}: sample {i} contains NaN or inf")


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(list(s)) for s in shapes)


def calibration_for(source: ModelSource, n: int, path: Calib = None, *, seed: int = 0) -> CalibrationData:
    """``n`` samples from ``path`` (or an array of samples) when given, else from the recipe's training split."""
    if isinstance(path, np.ndarray):
        _one_float_input(source, "the calibration array")
        return _from_array(path, "the calibration array", source, n, seed)
    if path is not None:
        return _from_path(Path(path), source, n, seed)
    split = recipe_split(source, "train")
    if split is None:
        raise _no_recipe(source)
    inputs, labels, name = split
    idx = _pick(len(inputs), n, seed)
    picked = inputs[idx]
    samples = source.samples(picked) if source.samples else [(x[None].clone(),) for x in picked]
    check_samples(samples, source.example_inputs, name)
    kept = tuple(int(labels[i]) for i in idx) if source.labelled and len(samples) == len(idx) else None
    return CalibrationData(tuple(samples), f"{name} ({len(samples)})", kept)


def check_calibration(source: ModelSource, spec: QuantSpec, calib: np.ndarray | None = None) -> None:
    """Refuse ``spec``'s calibration data for ``source`` before any work: read and check it as calibration
    will (names, shapes, dtypes, value ranges, finite values), without running the model. A recipe's
    training split is only looked up (it is edgekit's own data). Nothing to check unless ``spec`` calibrates."""
    if calib is not None and spec.calib_source is not None:
        raise EdgekitError(f"calibration data given twice: the spec's calib_source {spec.calib_source!r} and an "
                           "array; give one")
    if not spec.needs_calibration:
        return
    given = calib if calib is not None else spec.calib_source
    if given is None:
        if _recipe(source) is None:
            raise _no_recipe(source)
        return
    calibration_for(source, spec.calib_samples, given)


def _no_recipe(source: ModelSource) -> EdgekitError:
    return EdgekitError(f"{source.origin} has no recipe dataset to calibrate on; give --calib DATA (an .npz keyed "
                        f"by input name: {', '.join(source.input_names)}; for one float input also a .npy or an "
                        "image folder)")


def _recipe(source: ModelSource) -> dict[str, Any] | None:
    """The recipe an edgekit checkpoint was trained from, or None (other sources, or none recorded)."""
    if source.kind != "checkpoint":
        return None
    return json.loads((Path(source.origin) / META).read_text()).get("recipe") or None


def recipe_split(source: ModelSource, split: str) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """(inputs, labels, description) of a split of the checkpoint's recipe dataset, or None."""
    recipe = _recipe(source)
    if recipe is None:
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
    """A folder of images or a file read by its suffix's reader (``_READERS``)."""
    if not path.exists():
        raise EdgekitError(f"calibration data {path} does not exist")
    if path.is_dir():
        _one_float_input(source, f"folder {path}")
        return _from_array(_read_image_tree(path, source, n, seed), str(path), source, n, seed=None)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise EdgekitError(f"calibration data {path} must be an .npz keyed by input name "
                           f"({', '.join(source.input_names)}), a .npy or an image folder")
    return reader(path, source, n, seed)


def _from_npz(path: Path, source: ModelSource, n: int, seed: int) -> CalibrationData:
    """``n`` seeded samples of an .npz keyed by input name (any inputs, their dtypes kept)."""
    samples = read_sample_inputs(path, source)
    picked = [samples[i] for i in _pick(len(samples), n, seed)]
    check_samples(picked, source.example_inputs, str(path))
    return CalibrationData(tuple(picked), f"{path} ({len(picked)})")


def _from_npy(path: Path, source: ModelSource, n: int, seed: int) -> CalibrationData:
    """``n`` seeded samples of one stacked float array (a model of one float input)."""
    _one_float_input(source, str(path))
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise EdgekitError(f"cannot read calibration data {path}: {exc}") from None
    return _from_array(array, str(path), source, n, seed)


_READERS: dict[str, Callable[[Path, ModelSource, int, int], CalibrationData]] = {".npz": _from_npz, ".npy": _from_npy}


def _one_float_input(source: ModelSource, what: str) -> None:
    """An array, a .npy or an image folder holds samples of one float input: refuse them for any other model,
    naming the .npz to give instead."""
    example = source.example_inputs
    if len(example) == 1 and example[0].is_floating_point():
        return
    names = source.input_names
    if len(example) > 1:
        why = f"the model takes {len(example)} inputs ({', '.join(names)})"
    else:
        why = f"the model's input {names[0]!r} is {str(example[0].dtype).removeprefix('torch.')}, not float"
    keys = ", ".join(f"{name}=..." for name in names)
    raise EdgekitError(f"calibration data {what} holds one float input, but {why}; give an .npz keyed by input "
                       f"name, each (N, ...) in the input's dtype: numpy.savez('calib.npz', {keys})")


def _from_array(array: np.ndarray, where: str, source: ModelSource, n: int, seed: int | None) -> CalibrationData:
    """``n`` seeded samples (all when ``seed`` is None) of an (N, *sample shape) array, checked against the
    model's one float input."""
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise EdgekitError(f"calibration data {where} holds {array.dtype} values; expected numbers")
    example = source.example_inputs[0]
    want = tuple(example.shape)  # (1, *sample shape)
    if array.ndim == len(want) - 1 and len(want) == 4 and want[1] == 1:
        array = array[:, None]  # (N, H, W) grayscale → (N, 1, H, W)
    if array.ndim < 1:
        raise EdgekitError(f"calibration data {where}: expected an array of samples of shape {list(want[1:])}")
    idx = range(len(array)) if seed is None else _pick(len(array), n, seed)
    samples = [(torch.from_numpy(np.ascontiguousarray(array[i][None], dtype=np.float32)).to(example.dtype),)
               for i in idx]
    check_samples(samples, source.example_inputs, where)
    return CalibrationData(tuple(samples), f"{where} ({len(samples)})")


def _read_image_tree(path: Path, source: ModelSource, n: int, seed: int) -> np.ndarray:
    """``n`` seeded images under ``path`` (any layout; only those are decoded), preprocessed as the model's
    metadata says."""
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgekitError(f"calibration folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    files = [files[i] for i in _pick(len(files), n, seed)]
    pre = source.preprocessing or {}
    size = (pre.get("size") or [source.example_inputs[0].shape[-1]])[0]
    x = read_images(files, size=int(size), color=pre.get("color", "grayscale")) * 255.0  # raw pixels
    mean = np.asarray(pre.get("mean", [0.0]), dtype=np.float32)[:, None, None]
    std = np.asarray(pre.get("std", [1.0]), dtype=np.float32)[:, None, None]
    return (x * float(pre.get("scale", 1 / 255)) - mean) / std
