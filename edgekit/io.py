"""Atomic writes: a failed step never leaves a half-written artifact that looks valid."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a not-yet-existing path with the same name inside a hidden staging folder beside
    ``path``; when the block succeeds, what was written there (file or folder) replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        staged = staging / path.name
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written to {staged}")
        _replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace(new: Path, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        old = new.parent / f"{path.name}.old"
        os.replace(path, old)
        os.replace(new, path)
    else:
        os.replace(new, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: str | Path) -> int:
    """Size of a file, or the total size of a folder's files."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def folder_holding(path: str | Path, *names: str) -> Path | None:
    """The folder ``path`` names (or that holds the file ``path`` names, if it is one of ``names``) when
    every one of ``names`` is a file in it; None otherwise. Checkpoints and adapters are such folders."""
    directory = Path(path)
    if directory.is_file() and directory.name in names:
        directory = directory.parent
    return directory if all((directory / n).is_file() for n in names) else None
