"""A user's own images: one subfolder per class (``root/cat/*.png``, ``root/dog/*.jpg``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.data.base import DATASETS, Dataset, Preprocessing
from edgekit.data.splits import stratified_splits
from edgekit.errors import EdgekitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _require_pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise EdgekitError("reading image folders needs Pillow: pip install pillow") from exc
    return Image


def scan_image_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Image paths, their class indices and the sorted class names of ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise EdgekitError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise EdgekitError(
            f"image folder {root} has {len(classes)} class subfolder(s); expected one subfolder "
            "per class (at least 2), e.g. root/cat/1.png, root/dog/2.png"
        )
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise EdgekitError(f"class folder {root / name} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths += files
        labels += [index] * len(files)
    return paths, labels, classes


def read_images(paths: list[Path], *, size: int, color: str) -> np.ndarray:
    """Decode, convert and resize images to a float32 array (N, C, size, size) in [0, 1]."""
    Image = _require_pillow()
    mode = "L" if color == "grayscale" else "RGB"
    out = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert(mode).resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except OSError as exc:
            raise EdgekitError(f"cannot read image {path}: {exc}") from exc
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out)


@DATASETS.register("image_folder")
def load_image_folder(
    *, path: str, image_size: int = 32, color: str = "grayscale", seed: int = 0,
    test_fraction: float = 0.2, val_fraction: float = 0.1,
) -> Dataset:
    """Load, resize and normalize (per-channel mean/std of the training split) a class-per-folder tree."""
    if color not in ("grayscale", "rgb"):
        raise EdgekitError(f"data.color = {color!r}; expected 'grayscale' or 'rgb'")
    paths, labels, classes = scan_image_folder(path)
    x = read_images(paths, size=image_size, color=color)
    y = np.asarray(labels)
    train, val, test = stratified_splits(x, y, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    mean = train.inputs.mean(dim=(0, 2, 3))
    std = train.inputs.std(dim=(0, 2, 3)).clamp_min(1e-6)
    for split in (train, val, test):
        split.inputs = (split.inputs - mean[:, None, None]) / std[:, None, None]
    pre = Preprocessing(
        layout="NCHW", scale=1.0 / 255.0, mean=tuple(mean.tolist()), std=tuple(std.tolist()),
        size=(image_size, image_size), color=color,
    )
    return Dataset(Path(path).name, train, val, test, classes, pre, meta={"source": str(path), "seed": seed})
