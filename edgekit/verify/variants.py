"""Artifacts with several variants (base + LoRA adapters in one file): the files beside them, and one
verdict from the variants' verifications. Used by `edgekit verify`, `edgekit bench` and conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.artifact import MANIFEST, ArtifactEntry, bundle_path
from edgekit.errors import EdgekitError
from edgekit.io import sha256_path


def adapter_files(bundle: Path, entry: ArtifactEntry) -> list[Path]:
    """The ``.onnx_adapter`` files a multi-adapter artifact's variants select (beside it, inside the bundle)."""
    folder, files = Path(entry.file or "").parent, []
    for v in entry.variants:
        name = v["select"].get("adapter_file")
        if name is not None:
            files.append(bundle_path(bundle, str(folder / name) if isinstance(name, str) else name, "adapter file"))
    return files


def side_file_problem(bundle: Path, entry: ArtifactEntry) -> str | None:
    """Why the side files recorded with an artifact (adapter files) must not be used, or None."""
    side_files = entry.verification.get("side_files", {})
    if not isinstance(side_files, dict):
        raise EdgekitError(f"{bundle / MANIFEST} is damaged: {entry.file}'s side_files is not an object")
    for name, recorded in side_files.items():
        path = bundle_path(bundle, name, "side file")
        sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if not path.is_file() or sha256_path(path) != sha:
            return f"{name} is missing or changed since conversion (sha256 differs)"
    adapter_files(bundle, entry)  # every selected adapter file is inside the bundle
    return None


def combined(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One artifact's verification from its variants' (in order): the first variant's numbers (the base's,
    for the table) with the worst status of all."""
    statuses = {r["status"] for r in results.values()}
    return {**next(iter(results.values())), "status": "passed" if statuses == {"passed"} else sorted(statuses)[0]}
