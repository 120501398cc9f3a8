"""Wearable/sensor time series bundled inside sktime (UCR/UEA archive): BasicMotions, JapaneseVowels.

Inputs are (N, C, L) float32, normalised per channel with training-set statistics. The archive's own
train/test split is kept: test recordings are never seen in training or model selection.
"""

from __future__ import annotations

import numpy as np
import torch

from edgekit.data.base import DATASETS, Dataset, Preprocessing, Split
from edgekit.errors import require


@DATASETS.register("basic_motions")
def load_basic_motions(*, seed: int = 0, window: int = 64, stride: int = 4, val_fraction: float = 0.2) -> Dataset:
    """BasicMotions: accelerometer + gyroscope of a smartwatch (6 × 100 steps at 10 Hz), 4 activities
    (badminton, running, standing, walking); 40 train / 40 test recordings.

    Training recordings are cut into overlapping ``window``-step crops (``stride`` apart); validation
    (``val_fraction`` of the training recordings, by recording) and test keep whole recordings."""
    sktime = require("sktime.datasets", "seq")
    x_tr, y_tr = sktime.load_basic_motions(split="train", return_type="numpy3D")
    x_te, y_te = sktime.load_basic_motions(split="test", return_type="numpy3D")
    return _build("basic_motions", x_tr, y_tr, x_te, y_te, seed=seed, window=window, stride=stride,
                  val_fraction=val_fraction, source="sktime.datasets.load_basic_motions")


@DATASETS.register("japanese_vowels")
def load_japanese_vowels(*, seed: int = 0, length: int = 32, window: int = 24, stride: int = 2,
                         val_fraction: float = 0.2) -> Dataset:
    """JapaneseVowels: 12 LPC cepstrum coefficients of a spoken vowel (7–29 frames), 9 speakers;
    270 train / 370 test. Variable-length series are tiled in time to ``length`` frames."""
    sktime = require("sktime.datasets", "seq")
    x_tr, y_tr = sktime.load_japanese_vowels(split="train", return_type="pd-multiindex")
    x_te, y_te = sktime.load_japanese_vowels(split="test", return_type="pd-multiindex")
    return _build("japanese_vowels", _tile_frames(x_tr, length), y_tr, _tile_frames(x_te, length), y_te,
                  seed=seed, window=window, stride=stride, val_fraction=val_fraction,
                  source="sktime.datasets.load_japanese_vowels")


def _tile_frames(frame, length: int) -> np.ndarray:
    """A (instance, time)-indexed pandas frame → (N, C, length), each series repeated in time."""
    out = []
    for _, group in frame.groupby(level=0, sort=True):
        series = group.to_numpy(dtype=np.float32).T  # (C, T)
        reps = -(-length // series.shape[1])
        out.append(np.tile(series, (1, reps))[:, :length])
    return np.stack(out)


def _build(name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, *, seed: int,
           window: int, stride: int, val_fraction: float, source: str) -> Dataset:
    from sklearn.model_selection import train_test_split

    labels = sorted(set(map(str, y_tr)))
    index = {c: i for i, c in enumerate(labels)}
    t_tr = np.array([index[str(c)] for c in y_tr])
    t_te = np.array([index[str(c)] for c in y_te])
    fit, val = train_test_split(np.arange(len(t_tr)), test_size=val_fraction, random_state=seed, stratify=t_tr)
    mean = x_tr[fit].mean(axis=(0, 2))  # (C,) statistics of the training recordings only
    std = x_tr[fit].std(axis=(0, 2)) + 1e-6
    norm = lambda x: ((x - mean[None, :, None]) / std[None, :, None]).astype(np.float32)  # noqa: E731
    crops, crop_labels = _crops(norm(x_tr[fit]), t_tr[fit], window, stride)
    splits = (Split(torch.from_numpy(crops), torch.from_numpy(crop_labels)),
              _split(norm(x_tr[val]), t_tr[val]), _split(norm(x_te), t_te))
    pre = Preprocessing(layout="NCL", mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                        color="none")
    return Dataset(name, *splits, labels, pre, meta={
        "source": source, "seed": seed, "window": window, "stride": stride,
        "recordings": {"train": int(len(fit)), "val": int(len(val)), "test": int(len(t_te))},
        "channels": int(x_tr.shape[1]), "length": int(x_te.shape[2])})


def _crops(x: np.ndarray, y: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``window``-step crop of each series, ``stride`` steps apart: (N·k, C, window)."""
    length = x.shape[2]
    window = min(window, length)
    starts = range(0, length - window + 1, max(1, stride))
    crops = np.concatenate([x[:, :, s:s + window] for s in starts])
    return np.ascontiguousarray(crops), np.tile(y, len(starts)).astype(np.int64)


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))
