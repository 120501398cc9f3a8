"""A byte-level text corpus that ships with every Python: the standard library's own .py sources.

Deterministic: files are listed by sorted relative path, shuffled with a fixed seed and assigned to
train/val/test *by file* (no file contributes to two splits), then concatenated up to a byte budget.
The corpus depends on the Python version (recorded in ``meta``).
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import sysconfig
from pathlib import Path

import torch

from edgekit.data.base import DATASETS, Dataset, Preprocessing, Split
from edgekit.errors import EdgekitError

SEPARATOR = b"\n\n"  # between concatenated files


def stdlib_files() -> tuple[Path, list[Path]]:
    """The stdlib folder and its .py files (sorted relative paths; site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in ("site-packages", "dist-packages", "__pycache__")]
        files += [Path(folder, n).relative_to(root) for n in names if n.endswith(".py")]
    files.sort()
    if not files:
        raise EdgekitError(f"no Python source files under {root}; the stdlib corpus needs a full Python install")
    return root, files


def split_files(files: list[Path], seed: int, held_out_fraction: float) -> dict[str, list[Path]]:
    """Shuffle with ``seed`` and hold out ``held_out_fraction`` of the files for val and for test each."""
    order = list(files)
    random.Random(seed).shuffle(order)
    k = max(1, int(len(order) * held_out_fraction))
    return {"val": order[:k], "test": order[k:2 * k], "train": order[2 * k:]}


def _concat(root: Path, files: list[Path], budget: int) -> tuple[bytes, int]:
    """Files joined by SEPARATOR until ``budget`` bytes; returns the bytes and how many files were used."""
    parts, size, used = [], 0, 0
    for rel in files:
        if size >= budget:
            break
        data = (root / rel).read_bytes() + SEPARATOR
        parts.append(data)
        size += len(data)
        used += 1
    return b"".join(parts)[:budget], used


def _windows(stream: bytes, seq_len: int) -> Split:
    """Non-overlapping windows: inputs (N, seq_len) bytes, labels (N, seq_len) the next bytes."""
    t = torch.frombuffer(bytearray(stream), dtype=torch.uint8).to(torch.int64)
    n = (t.numel() - 1) // seq_len
    if n < 1:
        raise EdgekitError(f"byte budget {len(stream)} is shorter than one window of {seq_len + 1} bytes")
    x = t[:n * seq_len].reshape(n, seq_len)
    y = t[1:n * seq_len + 1].reshape(n, seq_len)
    return Split(x, y)


@DATASETS.register("python_stdlib_bytes")
def load_stdlib_bytes(*, seed: int = 0, seq_len: int = 256, train_bytes: int = 4_000_000,
                      eval_bytes: int = 262_144, held_out_fraction: float = 0.05) -> Dataset:
    """Next-byte prediction on the stdlib's .py files: ``train_bytes`` of training text and
    ``eval_bytes`` each of validation and test text from held-out files, in ``seq_len`` windows."""
    root, files = stdlib_files()
    parts = split_files(files, seed, held_out_fraction)
    streams, used = {}, {}
    for name, budget in (("train", train_bytes), ("val", eval_bytes), ("test", eval_bytes)):
        streams[name], used[name] = _concat(root, parts[name], budget)
    digest = hashlib.sha256(b"".join(streams[k] for k in ("train", "val", "test"))).hexdigest()
    return Dataset(
        "python_stdlib_bytes", _windows(streams["train"], seq_len), _windows(streams["val"], seq_len),
        _windows(streams["test"], seq_len), [],
        Preprocessing(layout="NL", color="none"), task="byte_lm",
        meta={"source": str(root), "python": sys.version.split()[0], "seed": seed, "seq_len": seq_len,
              "files": {k: used[k] for k in used}, "bytes": {k: len(v) for k, v in streams.items()},
              "sha256": digest})
