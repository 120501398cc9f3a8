"""Realistic 224x224-class RGB inputs, offline: random crops of the natural photos that installed packages ship
(scikit-learn's china.jpg and flower.jpg, 427x640; matplotlib's grace_hopper.jpg when matplotlib is there).

For calibrating, re-estimating BatchNorm and checking int8 against fp32 on ImageNet-sized models: activations
of real photos, not of Gaussian noise. The label of a crop is the photo it came from (a handful of classes: no
benchmark of accuracy, only of agreement between a model and its conversion)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.data.base import DATASETS, Dataset, Preprocessing, Split
from edgekit.errors import EdgekitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def bundled_photos() -> dict[str, np.ndarray]:
    """Name → (H, W, 3) uint8 photo, from the packages installed here (scikit-learn always)."""
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = {name.rsplit(".", 1)[0]: image for name, image in zip(sample.filenames, sample.images)}
    photos = {name.replace("\\", "/").rsplit("/", 1)[-1]: image for name, image in photos.items()}
    try:  # optional: matplotlib ships one more photo (a 600x512 portrait)
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    except (ImportError, OSError, ValueError):
        pass
    return photos


def photo_crops(count: int, *, image_size: int = 224, seed: int = 0,
                photos: dict[str, np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random crops (side 25–100% of the photo's shorter side, anywhere in it), half of them mirrored,
    resized to ``image_size``² with antialiasing, ImageNet-normalized: ((count, 3, S, S) float32, (count,) photo ids)."""
    if count < 1 or image_size < 8:
        raise EdgekitError(f"photo_crops: count {count} and image_size {image_size} must be ≥ 1 and ≥ 8")
    photos = photos if photos is not None else bundled_photos()
    images = [torch.from_numpy(np.array(p, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0 for p in photos.values()]
    gen = np.random.default_rng(seed)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    crops, labels = [], gen.integers(0, len(images), size=count)
    for label in labels:
        image = images[label]  # (3, H, W)
        _, h, w = image.shape
        side = int(gen.uniform(0.25, 1.0) * min(h, w))
        top, left = int(gen.integers(0, h - side + 1)), int(gen.integers(0, w - side + 1))
        crop = image[:, top:top + side, left:left + side]
        if gen.random() < 0.5:
            crop = crop.flip(-1)
        crop = F.interpolate(crop[None], size=(image_size, image_size), mode="bilinear", antialias=True,
                             align_corners=False)[0]
        crops.append((crop.clamp(0, 1) - mean) / std)
    return torch.stack(crops), torch.from_numpy(labels.astype(np.int64))


@DATASETS.register("photo_crops")
def load_photo_crops(*, image_size: int = 224, train: int = 256, val: int = 32, test: int = 128,
                     seed: int = 0) -> Dataset:
    """Random crops of the bundled photos (``photo_crops``); each split drawn with its own seed."""
    photos = bundled_photos()
    splits = [Split(*photo_crops(n, image_size=image_size, seed=seed * 3 + i, photos=photos))
              for i, n in enumerate((train, val, test))]
    preprocessing = Preprocessing(layout="NCHW", scale=1.0 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  size=(image_size, image_size), color="rgb")
    return Dataset("photo_crops", *splits, list(photos), preprocessing,
                   meta={"source": "sklearn.datasets.load_sample_images (+ matplotlib sample_data)", "seed": seed})
