"""Adaptation domains: where a LoRA adapter's few examples (and its held-out test split) come from.

Registered by name (``edgekit adapt CKPT --domain NAME``). The image domains are **synthetic**
shifts of the base model's own dataset (inverted, rotated, blurred, mirrored, noisy digits):
real images, artificially changed, so the shift is controlled and the labels stay exact. ``prose``
is real English text (CPython's ``pydoc_data.topics``) for byte LMs trained on Python source.
``--data PATH`` takes a user's own image folder or UTF-8 text file instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from edgekit.checkpoint import Checkpoint
from edgekit.data import Dataset, Split, load_dataset
from edgekit.data.image_folder import read_images, scan_image_folder
from edgekit.data.splits import stratified_splits
from edgekit.errors import EdgekitError
from edgekit.registry import Registry

MAX_TEXT_TEST_WINDOWS = 512  # held-out text windows scored before/after (bits per byte); prose has fewer: all of them


@dataclass
class AdaptData:
    """A domain's few training examples and its held-out test split, in the base model's input format."""

    name: str
    task: str  # a training task of edgekit.training.tasks: "classification" or "byte_lm"
    train: Split
    test: Split
    description: str  # honest: what the data is, and whether it is synthetic


@dataclass(frozen=True)
class Domain:
    name: str
    task: str  # the base model's task this domain applies to
    description: str
    build: Callable[[Checkpoint, int, int], AdaptData]  # (base checkpoint, examples, seed) → data


DOMAINS: Registry[Domain] = Registry("adaptation domain")


def load_domain(name: str, checkpoint: Checkpoint, examples: int, seed: int = 0) -> AdaptData:
    """The named domain's data for ``checkpoint``; refuses a domain made for another task."""
    domain = DOMAINS.get(name)
    task = checkpoint.meta.get("task", "classification")
    if task != domain.task:
        raise EdgekitError(f"domain {name!r} is for {domain.task} models; {checkpoint.path} is a {task} model "
                           f"(domains for it: {', '.join(n for n in DOMAINS if DOMAINS.get(n).task == task) or 'none'})")
    if examples < 1:
        raise EdgekitError(f"--examples must be at least 1, got {examples}")
    return domain.build(checkpoint, examples, seed)


# ---- synthetic image shifts of the base model's own dataset ------------------------------------

def _gaussian_blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) blurred with a 5×5 Gaussian kernel (reflect padding)."""
    t = torch.arange(5, dtype=torch.float32) - 2
    k1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k1 = k1 / k1.sum()
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def _inverted_rotated(raw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return _gaussian_blur(torch.rot90(1.0 - raw, 1, dims=(2, 3)))


def _mirrored_noisy(raw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.flip(raw, dims=(3,)) + 0.15 * torch.randn(raw.shape, generator=gen)


def _shifted_images(shift: Callable[[torch.Tensor, torch.Generator], torch.Tensor], name: str, description: str):
    """A domain builder applying ``shift`` to the base dataset's images in raw [0, 1] pixel space."""

    def build(checkpoint: Checkpoint, examples: int, seed: int) -> AdaptData:
        data = _base_dataset(checkpoint)
        pre = data.preprocessing
        mean = torch.tensor(pre.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(pre.std, dtype=torch.float32)[:, None, None]

        def apply(split: Split, noise_seed: int) -> Split:  # train and test draw their own noise
            raw = split.inputs * std + mean
            shifted = shift(raw, torch.Generator().manual_seed(noise_seed))
            return Split(((shifted - mean) / std).contiguous(), split.labels)

        pool = Split(torch.cat([data.train.inputs, data.val.inputs]), torch.cat([data.train.labels, data.val.labels]))
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:examples]
        train = apply(Split(pool.inputs[order], pool.labels[order]), seed + 1)
        return AdaptData(name, "classification", train, apply(data.test, seed + 2),
                         f"{description} (synthetic shift of {data.name}; {len(data.test)} test)")

    return build


def _base_dataset(checkpoint: Checkpoint) -> Dataset:
    recipe = checkpoint.meta.get("recipe")
    if not recipe:
        raise EdgekitError(f"{checkpoint.path} has no recipe in its metadata; use --data with your own examples")
    options = {k: v for k, v in recipe["data"].items() if k != "source"} | {"seed": recipe.get("seed", 0)}
    return load_dataset(recipe["data"]["source"], **options)


def register_image_shift(name: str, description: str,
                         shift: Callable[[torch.Tensor, torch.Generator], torch.Tensor]) -> None:
    """Register a synthetic image domain: ``shift(raw (N, C, H, W) in [0, 1], generator)``."""
    DOMAINS.register(name)(Domain(name, "classification", f"{description} [synthetic]",
                                  _shifted_images(shift, name, description)))


register_image_shift("digits_inverted_rotated", "inverted, rotated 90° and blurred images", _inverted_rotated)
register_image_shift("digits_mirrored_noisy", "mirrored images with Gaussian pixel noise (σ 0.15)", _mirrored_noisy)


# ---- real text: English prose for byte LMs trained on Python source -----------------------------

def prose_text(seed: int = 0, held_out_fraction: float = 0.2) -> tuple[bytes, bytes]:
    """CPython's ``pydoc_data.topics`` (the language reference's English text), split by topic."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise EdgekitError("this Python has no pydoc_data (the prose domain needs a full CPython install)") from None
    names = sorted(topics)
    random.Random(seed).shuffle(names)
    k = max(1, int(len(names) * held_out_fraction))
    join = lambda keys: "\n\n".join(topics[n] for n in keys).encode("utf-8")  # noqa: E731
    return join(names[k:]), join(names[:k])


def byte_windows(stream: bytes, seq_len: int, limit: int | None = None) -> Split:
    """Non-overlapping (seq_len) windows of ``stream`` and their next bytes."""
    t = torch.frombuffer(bytearray(stream), dtype=torch.uint8).to(torch.int64)
    n = (t.numel() - 1) // seq_len
    if limit is not None:
        n = min(n, limit)
    if n < 1:
        raise EdgekitError(f"{len(stream)} bytes of text is shorter than one window of {seq_len + 1} bytes")
    return Split(t[:n * seq_len].reshape(n, seq_len), t[1:n * seq_len + 1].reshape(n, seq_len))


def _seq_len(checkpoint: Checkpoint) -> int:
    return int(((checkpoint.meta.get("recipe") or {}).get("data") or {}).get("seq_len", 128))


def _prose(checkpoint: Checkpoint, examples: int, seed: int) -> AdaptData:
    train_text, test_text = prose_text(seed)
    seq_len = _seq_len(checkpoint)
    pool = byte_windows(train_text, seq_len)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:examples]
    train = Split(pool.inputs[order], pool.labels[order])
    test = byte_windows(test_text, seq_len, MAX_TEXT_TEST_WINDOWS)
    return AdaptData("prose", "byte_lm", train, test,
                     f"English prose from CPython pydoc_data.topics, held out by topic "
                     f"({seq_len}-byte windows, {len(test)} test; real text)")


DOMAINS.register("prose")(Domain("prose", "byte_lm", "English prose: CPython's pydoc_data.topics (real text)", _prose))


# ---- a user's own data -------------------------------------------------------------------------

def load_user_data(path: str | Path, checkpoint: Checkpoint, examples: int, seed: int = 0) -> AdaptData:
    """``--data PATH``: an image folder (one subfolder per base label) or a UTF-8 text file."""
    path = Path(path)
    task = checkpoint.meta.get("task", "classification")
    if path.is_file() and task == "byte_lm":
        text = path.read_bytes()
        cut = int(len(text) * 0.8)
        seq_len = _seq_len(checkpoint)
        train = byte_windows(text[:cut], seq_len, examples)
        test = byte_windows(text[cut:], seq_len, MAX_TEXT_TEST_WINDOWS)
        return AdaptData(path.stem, task, train, test, f"{path} (first 80% train, last 20% test)")
    if path.is_dir() and task == "classification":
        return _user_images(path, checkpoint, examples, seed)
    want = "a UTF-8 text file" if task == "byte_lm" else "an image folder (one subfolder per class)"
    raise EdgekitError(f"--data {path}: a {task} checkpoint adapts on {want}")


def _user_images(path: Path, checkpoint: Checkpoint, examples: int, seed: int) -> AdaptData:
    import numpy as np

    paths, labels, classes = scan_image_folder(path)
    base_labels = checkpoint.labels or []
    unknown = [c for c in classes if c not in base_labels]
    if unknown:
        raise EdgekitError(f"--data {path}: class folder {unknown[0]!r} is not a label of the base model "
                           f"({', '.join(base_labels)})")
    pre = checkpoint.meta.get("preprocessing") or {}
    size = (pre.get("size") or [32])[0]
    raw = read_images(paths, size=size, color=pre.get("color", "grayscale"))
    mean = np.asarray(pre.get("mean", [0.0]), dtype=np.float32)[:, None, None]
    std = np.asarray(pre.get("std", [1.0]), dtype=np.float32)[:, None, None]
    x = ((raw - mean) / std).astype(np.float32)
    y = np.asarray([base_labels.index(classes[i]) for i in labels])
    train, _, test = stratified_splits(x, y, test_fraction=0.3, val_fraction=0.05, seed=seed)
    n = min(examples, len(train))
    return AdaptData(path.name, "classification", Split(train.inputs[:n], train.labels[:n]), test,
                     f"{path} ({len(test)} test)")
