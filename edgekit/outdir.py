"""Output locations: which existing folders edgekit may write into, checked before any work starts.

edgekit recognises its own folders by their contents, not by a marker file: a checkpoint is a
folder with ``model.safetensors`` and a ``meta.json`` naming its family and weights sha256; an
adapter has ``adapter.safetensors`` and an ``adapter.json`` naming its base; a bundle has a
``manifest.json`` with edgekit's ``manifest_version`` and ``artifacts``; a run folder holds one of
those (``checkpoint/``, ``bundle/``) or an edgekit ``report.json``; a report file is JSON with
``rows`` and ``bench``. Content is chosen over a marker because the folders apps ship stay exactly
what the docs list (no hidden extra file to hash, copy or explain), folders made by earlier edgekit
versions are still recognised, and the signatures are strict enough (parsed JSON with edgekit's
keys) that a web project's ``manifest.json`` or a user's ``meta.json`` does not pass for ours.

An existing folder that is empty or edgekit's may be written; any other is refused, naming it,
unless ``--overwrite``, and even then edgekit only adds or replaces its own files in it: a folder
that is not edgekit's is never deleted. A file target never replaces a folder.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.registry import Registry

OWNERS: Registry[Callable[[Path], bool]] = Registry("output kind")
# kind → check of an existing output's own files, raising EdgekitError when they are damaged (a bundle's
# manifest must be readable); registered by the module that owns that file format (``edgekit.artifact``
# registers "bundle"), so this lower module never imports it
CONTENT_CHECKS: Registry[Callable[[Path], None]] = Registry("output content check")
# the names edgekit writes in a folder of each kind; a folder holding only these may be swapped whole
OWN_FILES: dict[str, frozenset[str]] = {
    "checkpoint": frozenset({"model.safetensors", "meta.json"}),
    "adapter": frozenset({"adapter.safetensors", "adapter.json"}),
}
HTML_REPORT = "html report"  # its owner check lives with the page (edgekit.report.html)
FILE_KINDS = frozenset({"report", HTML_REPORT})
LOCK = ".edgekit.lock"  # held by a bundle's one writer (artifact.bundle_lock); removed when released
_APPROVED: set[Path] = set()  # folders the user let edgekit write into with --overwrite (this process)

OS_REASONS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
              errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}


def os_error(exc: OSError, path: str | Path) -> EdgekitError:
    """One line naming the path and the OS reason: ``no space left on device while writing X``."""
    reason = OS_REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return EdgekitError(f"{reason} while writing {path}{where}")


def _json_keys(path: Path) -> set[str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return set(data) if isinstance(data, dict) else None


@OWNERS.register("checkpoint")
def _is_checkpoint(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and {"family", "weights_sha256"} <= (_json_keys(path / "meta.json") or set())


@OWNERS.register("adapter")
def _is_adapter(path: Path) -> bool:
    return (path / "adapter.safetensors").is_file() and "base_sha256" in (_json_keys(path / "adapter.json") or set())


@OWNERS.register("bundle")
def _is_bundle(path: Path) -> bool:
    return {"manifest_version", "artifacts"} <= (_json_keys(path / "manifest.json") or set())


@OWNERS.register("report")
def _is_report(path: Path) -> bool:
    return {"rows", "bench"} <= (_json_keys(path) or set())


@OWNERS.register("run")
def _is_run(path: Path) -> bool:
    return (_is_checkpoint(path / "checkpoint") or _is_bundle(path / "bundle")
            or _is_report(path / "report.json"))


# what a run folder holds: name → kind (each is checked like its own --out)
RUN_CHILDREN = {"checkpoint": "checkpoint", "bundle": "bundle", "bundle_adapters": "bundle", "report.json": "report"}


def is_edgekit_output(path: str | Path, kind: str) -> bool:
    """Whether ``path`` is an existing folder (or, for a report, file) that edgekit wrote as ``kind``."""
    return OWNERS.get(kind)(Path(path))


def is_debris(path: Path) -> bool:
    """A killed edgekit writer's leftovers: a hidden ``.NAME.*.partial`` staging folder or the lock file."""
    return path.name.startswith(".") and (path.name == LOCK
                                          or (path.name.endswith(".partial") and path.is_dir()))


def may_write_into(path: Path, kind: str | None) -> bool:
    """Whether an existing folder may receive edgekit's files: empty (or holding only a killed writer's
    debris, which the next writer removes), edgekit's, or allowed with --overwrite."""
    if all(is_debris(p) for p in path.iterdir()) or path.resolve() in _APPROVED:
        return True
    return kind is not None and is_edgekit_output(path, kind)


def check_output_dir(path: str | Path, kind: str, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse an output location up front, in one line naming it: a file where a folder is needed
    (or the reverse, which ``--overwrite`` never allows), a folder edgekit did not write (unless
    ``overwrite``), a damaged bundle manifest, or a place this process cannot write."""
    path = Path(path)
    OWNERS.get(kind)
    if kind in FILE_KINDS:
        _check_file_target(path, kind, overwrite, flag)
    else:
        _check_folder_target(path, kind, overwrite, flag)
        for name, child_kind in (RUN_CHILDREN.items() if kind == "run" else ()):
            if (path / name).exists():
                check_output_dir(path / name, child_kind, overwrite, flag)
    _probe_writable(path, flag)
    return path


def _check_file_target(path: Path, kind: str, overwrite: bool, flag: str) -> None:
    if path.is_dir():
        raise EdgekitError(f"{flag} {path} is a folder; a {kind} file never replaces a folder (not even with "
                           "--overwrite): name a file")
    if path.is_file() and path.stat().st_size and not overwrite and not is_edgekit_output(path, kind):
        raise EdgekitError(f"{flag} {path} is a file edgekit did not write; use --overwrite to replace it "
                           "or name another file")


def _check_folder_target(path: Path, kind: str, overwrite: bool, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise EdgekitError(f"{flag} {path} is a file; expected a folder (a folder never replaces a file, "
                           "not even with --overwrite)")
    if kind in CONTENT_CHECKS and path.is_dir() and not overwrite:
        _check_content(path, kind)
    if not path.is_dir() or may_write_into(path, kind):
        return
    if not overwrite:
        raise EdgekitError(f"{flag} {path} is a folder edgekit did not create (not an edgekit {kind}); "
                           "use --overwrite to write into it (its other files are kept) or name a new folder")
    _APPROVED.add(path.resolve())


def _check_content(path: Path, kind: str) -> None:
    """The kind's registered content check (a bundle: its manifest must be readable); damaged content is
    refused, never silently replaced."""
    try:
        CONTENT_CHECKS.get(kind)(path)
    except EdgekitError as exc:
        raise EdgekitError(f"{exc}; move it away or use --overwrite") from None


def _probe_writable(path: Path, flag: str) -> None:
    """Create and remove a file where the output will go (the nearest existing folder)."""
    where = path if path.is_dir() else path.parent
    while not where.exists():
        where = where.parent
    if not where.is_dir():
        raise EdgekitError(f"{flag} {path}: {where} is a file, so no folder can be made there")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgekit-probe-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = OS_REASONS.get(exc.errno or 0) or exc.strerror
        raise EdgekitError(f"{flag} {path} is not writable: {reason} in {where}") from None
