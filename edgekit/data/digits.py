"""scikit-learn's bundled handwritten digits (1,797 8x8 images), upsampled for CNN input."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.data.base import DATASETS, Dataset, Preprocessing
from edgekit.data.splits import stratified_splits

DIGITS_MEAN, DIGITS_STD = 0.3, 0.32  # of pixel/16 over the whole set, rounded


@DATASETS.register("digits")
def load_digits(
    *, image_size: int = 32, seed: int = 0, test_fraction: float = 0.33, val_fraction: float = 0.1
) -> Dataset:
    """Digits 0–9 scaled to [0, 1], resized to ``image_size``² (bilinear), normalized."""
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    images = torch.from_numpy(raw.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images - DIGITS_MEAN) / DIGITS_STD
    train, val, test = stratified_splits(
        images.numpy(), raw.target, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed
    )
    preprocessing = Preprocessing(
        layout="NCHW", scale=1.0 / 16.0, mean=(DIGITS_MEAN,), std=(DIGITS_STD,),
        size=(image_size, image_size), color="grayscale",
    )
    return Dataset(
        "digits", train, val, test, [str(d) for d in range(10)], preprocessing,
        meta={"source": "sklearn.datasets.load_digits", "seed": seed, "raw_size": [8, 8]},
    )
