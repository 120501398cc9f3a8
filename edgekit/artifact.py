"""The artifact bundle: artifact files + manifest.json (what, how, from what, with which tools)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.io import atomic_write_text

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

# artifact status → how the report shows it
VERIFIED, EXPORTED, FAILED = "verified", "exported", "failed"


@dataclass
class ArtifactEntry:
    """One artifact of a bundle and what is known about it."""

    format: str
    precision: str
    status: str  # VERIFIED, EXPORTED (not verified here) or FAILED
    file: str | None = None  # relative to the bundle; None when nothing was kept
    runtime: str = ""
    size_bytes: int | None = None
    sha256: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    compiled_for: str | None = None  # NPU target of an ahead-of-time compiled artifact, e.g. qualcomm:SM8650
    graph: str = ""  # which graph of the model ("" = its only one; "prefill_L256", "step" for sequence models)
    # multi-adapter artifacts: one dict per variant (name, adapter, how an app selects it, its verification)
    variants: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)  # held inside the model across calls (Core ML MLState)
    usage: str = ""  # how an app calls it, when that is more than inputs → outputs (e.g. a stateful step graph)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    name: str
    source: dict[str, Any]  # kind, path, sha256, family/config when known
    labels: list[str] | None
    preprocessing: dict[str, Any] | None
    tools: dict[str, str]
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    adapters: list[dict[str, Any]] = field(default_factory=list)  # LoRA adapters packaged with the base
    edgekit_version: str = __version__
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    manifest_version: int = MANIFEST_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifacts"] = [a.to_dict() for a in self.artifacts]
        return d

    def save(self, bundle: str | Path) -> Path:
        path = Path(bundle) / MANIFEST
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))
        return path

    def entry(self, fmt: str, graph: str | None = None) -> ArtifactEntry | None:
        """The artifact of ``fmt`` (of ``graph`` when given; else the first of any graph)."""
        return next((a for a in self.artifacts if a.format == fmt and not a.compiled_for
                     and (graph is None or a.graph == graph)), None)

    def merge(self, entries: list[ArtifactEntry]) -> None:
        """Replace entries of the same format, precision and graph, keep the others."""
        keys = {(e.format, e.precision, e.compiled_for, e.graph) for e in entries}
        self.artifacts = [a for a in self.artifacts
                          if (a.format, a.precision, a.compiled_for, a.graph) not in keys] + entries


def load_manifest(bundle: str | Path) -> Manifest:
    """Read ``bundle/manifest.json``; a missing or damaged manifest is a clear error."""
    path = Path(bundle)
    path = path / MANIFEST if path.is_dir() else path
    if not path.is_file():
        raise EdgekitError(f"{bundle} is not an edgekit bundle (no {MANIFEST})")
    try:
        raw = json.loads(path.read_text())
        entries = [ArtifactEntry(**a) for a in raw.pop("artifacts")]
        return Manifest(**raw, artifacts=entries)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise EdgekitError(f"{path} is damaged: {exc}") from None


def artifact_metadata(manifest: Manifest, fmt: str, precision: str, source_inputs, source_outputs) -> dict[str, Any]:
    """The metadata embedded inside every artifact (the manifest minus verification results)."""
    return {
        "edgekit_version": __version__,
        "name": manifest.name,
        "description": f"{manifest.name} ({fmt}, {precision}) made by edgekit",
        "format": fmt,
        "precision": precision,
        "inputs": source_inputs,
        "outputs": source_outputs,
        "labels": manifest.labels,
        "preprocessing": manifest.preprocessing,
        "source": manifest.source,
        "tools": manifest.tools,
    }
