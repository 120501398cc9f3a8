"""Atomic, crash-proof writes: a failed step never leaves a half-written artifact that looks valid,
and nothing edgekit did not write is ever deleted (:mod:`edgekit.outdir` says which folders are ours).

Every write stages in a hidden ``.NAME.*.partial`` folder beside its target and is renamed into place
when complete. A process killed mid-write leaves that folder behind; the next writer of the bundle
removes it under the bundle's lock (:func:`remove_stale_staging`). Paths being written are known to
:func:`live_paths`; the watcher of ``edgekit/quiet.py`` removes them if a native library ends the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from edgekit.errors import EdgekitError
from edgekit.outdir import OWN_FILES, check_output_dir, is_edgekit_output, may_write_into, os_error

__all__ = ["atomic_output", "atomic_write_text", "check_output_dir", "exclusive_lock", "hold_interrupts",
           "remove_stale_staging", "live_writes", "live_paths", "sha256_path", "size_bytes", "folder_holding"]

STAGING_GLOB = ".*.partial"
ARTIFACT = "artifact"  # a file or folder inside a bundle its writer has locked: replaced whole
_LIVE: dict[Path, Path | None] = {}  # what to remove if the process dies mid-write → the target it was for


@contextlib.contextmanager
def atomic_output(path: str | Path, kind: str | None = None) -> Iterator[Path]:
    """Yield a not-yet-existing path with the same name inside a hidden staging folder beside
    ``path``; when the block succeeds, what was written there (file or folder) lands at ``path``.

    A file never replaces a folder. An existing folder is swapped whole only when it is an
    ``ARTIFACT`` or an edgekit ``kind`` folder holding nothing but edgekit's files; an edgekit
    folder with other files, or one allowed by ``--overwrite``, receives the new files one by one
    and keeps the rest; any other non-empty folder is refused. Any OSError becomes one line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as exc:
        raise os_error(exc, path) from None
    _LIVE[staging] = path
    try:
        staged = staging / path.name
        yield staged
        if not staged.exists():
            raise EdgekitError(f"nothing was written to {path}")
        _commit(staged, path, kind)
    except OSError as exc:
        raise os_error(exc, path) from exc
    finally:
        _LIVE.pop(staging, None)
        shutil.rmtree(staging, ignore_errors=True)


def _commit(staged: Path, path: Path, kind: str | None) -> None:
    if staged.is_dir():
        _commit_folder(staged, path, kind)
    elif path.is_dir() and not path.is_symlink():
        raise EdgekitError(f"{path} is a folder; a file never replaces a folder (not even with --overwrite)")
    else:
        os.replace(staged, path)


def _commit_folder(staged: Path, path: Path, kind: str | None) -> None:
    if not os.path.lexists(path):
        os.replace(staged, path)
        return
    if path.is_symlink() or not path.is_dir():
        raise EdgekitError(f"{path} is a file; a folder never replaces a file (not even with --overwrite)")
    if not any(path.iterdir()):
        os.replace(staged, path)  # rename over an empty folder
        return
    ours = kind == ARTIFACT or (kind is not None and is_edgekit_output(path, kind))
    if not ours and not may_write_into(path, None):
        raise EdgekitError(f"{path} is a folder edgekit did not create; use --overwrite to write into it "
                           "(its other files are kept) or name a new folder")
    only_ours = kind == ARTIFACT or (ours and {p.name for p in path.iterdir()} <= OWN_FILES.get(kind or "", set()))
    if only_ours:
        os.replace(path, staged.parent / f"{path.name}.old")  # removed with the staging folder
        os.replace(staged, path)
    else:
        _move_in(staged, path)


def _move_in(staged: Path, path: Path) -> None:
    """Move each staged file into ``path``, metadata (.json) last; other files in ``path`` stay."""
    for item in sorted(staged.iterdir(), key=lambda p: (p.suffix == ".json", p.name)):
        target = path / item.name
        if target.is_dir() and not target.is_symlink():
            raise EdgekitError(f"{target} is a folder; a file never replaces a folder (not even with --overwrite)")
        os.replace(item, target)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (never onto a folder)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Remove staging folders a killed writer left in ``folder``; call it only under the folder's
    lock, so that none can belong to a live writer. Returns what was removed."""
    live = {p.resolve() for p in _LIVE}
    stale = [p for p in Path(folder).glob(STAGING_GLOB)
             if p.is_dir() and not p.is_symlink() and p.resolve() not in live]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an ``flock`` on the lock file ``path`` (created, and removed again when released). A second
    holder fails at once naming ``what`` and the holder's pid: a conversion can take minutes, so
    waiting would look like a hang. The lock dies with its process, so a killed writer never blocks."""
    path = Path(path)
    fd = _acquire(path, what)
    _LIVE[path] = None
    try:
        yield
    finally:
        _LIVE.pop(path, None)
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.unlink(path)  # while still locked: a waiter then sees another inode and retries
        os.close(fd)


def _acquire(path: Path, what: str) -> int:
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise os_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EdgekitError(f"{what} is being written by another edgekit process (pid {holder}); "
                               "wait for it to finish or use another --out") from None
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)  # the holder removed it as we opened it: lock the new one
    raise EdgekitError(f"could not lock {path}: it keeps being replaced")


@contextlib.contextmanager
def hold_interrupts() -> Iterator[None]:
    """Defer Ctrl-C (SIGINT) to the end of the block, so that an artifact and its manifest entry
    land together. Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if caught:
            signal.raise_signal(signal.SIGINT)  # now handled as it would have been


def live_writes() -> list[Path]:
    """Targets being written right now (for a message when the process is about to die)."""
    return [target for target in _LIVE.values() if target is not None]


def live_paths() -> list[tuple[Path, bool]]:
    """What this process would leave behind if it died now: (staging folder or lock file, is_lock)."""
    return [(path.resolve(), target is None) for path, target in _LIVE.items()]


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
