"""The artifact bundle: artifact files + manifest.json (what, how, from what, with which tools)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.io import atomic_write_text, exclusive_lock, os_error, sha256_path
from edgekit.outdir import CONTENT_CHECKS, LOCK

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

# artifact status → how the report shows it
VERIFIED, EXPORTED, FAILED = "verified", "exported", "failed"
BASE = "base"  # the variant of a multi-adapter artifact without an adapter


def golden_graph(variant: str, graph: str = "") -> str:
    """The golden-file key of one variant of ``graph``: the base keeps the graph's own golden file,
    an adapter gets ``golden_<adapter>[_<graph>].npz``."""
    return graph if variant == BASE else "_".join(filter(None, [variant, graph]))


GOLDEN = "golden.npz"  # a few reference inputs/outputs for apps' own tests and `edgekit verify`
GOLDEN_SAMPLES = 16


def golden_name(graph: str = "") -> str:
    """``golden.npz`` for a model's only graph, ``golden_<graph>.npz`` for each graph of a sequence model."""
    return f"golden_{graph}.npz" if graph else GOLDEN


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
    graph_changes: list[str] = field(default_factory=list)  # what conversion did to the graph (rewrites, I/O casts)
    placement: dict[str, Any] = field(default_factory=dict)  # accelerator → edgekit.placement.Placement.to_dict()

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
    # documents written from the manifest (edgekit.documents): name → {"files": [relative paths], "error": …}
    documents: dict[str, Any] = field(default_factory=dict)
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
        """The artifact of ``fmt`` (of ``graph`` when given; else of the first graph that has one). Of several
        precisions, the one recorded last: ``merge`` appends, so that is the latest conversion's."""
        found = [a for a in self.artifacts if a.format == fmt and not a.compiled_for
                 and (graph is None or a.graph == graph)]
        found = [a for a in found if a.graph == found[0].graph] if found else []
        return found[-1] if found else None

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
        problem = manifest_problem(raw)
        if problem is None:
            entries = [ArtifactEntry(**a) for a in raw.pop("artifacts")]
            return Manifest(**raw, artifacts=entries)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise EdgekitError(f"{path} is damaged: {problem}")



@CONTENT_CHECKS.register("bundle")
def _check_existing_bundle(folder: Path) -> None:
    """An existing bundle folder about to be written into: its manifest, when there is one, must be readable."""
    if (folder / MANIFEST).exists():
        load_manifest(folder)

_OPTIONAL = type(None)
# the type each manifest field must have (a manifest is untrusted input: checked before it is used)
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "source": (dict,), "labels": (list, _OPTIONAL), "preprocessing": (dict, _OPTIONAL),
    "tools": (dict,), "artifacts": (list,), "adapters": (list,), "documents": (dict,)}
_SOURCE_TYPES: dict[str, tuple[type, ...]] = {"kind": (str,), "path": (str, _OPTIONAL), "sha256": (str, _OPTIONAL),
                                               "lengths": (list,)}
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,), "precision": (str,), "status": (str,), "file": (str, _OPTIONAL), "runtime": (str,),
    "size_bytes": (int, _OPTIONAL), "sha256": (str, _OPTIONAL), "inputs": (list,), "outputs": (list,),
    "op_histogram": (dict,), "verification": (dict,), "error": (str, _OPTIONAL), "compiled_for": (str, _OPTIONAL),
    "graph": (str,), "variants": (list,), "states": (list,), "usage": (str,),
    "graph_changes": (list,), "placement": (dict,)}
_VARIANT_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "select": (dict,)}
_REQUIRED_ENTRY = ("format", "precision", "status")


def _type_problem(where: str, data: dict[str, Any], types: dict[str, tuple[type, ...]],
                  required: tuple[str, ...] = ()) -> str | None:
    """The first field of ``data`` that is missing (when required) or of the wrong type, as a phrase."""
    for key in required:
        if key not in data:
            return f"{where} has no {key!r}"
    for key, allowed in types.items():
        if key in data and not isinstance(data[key], allowed):
            names = " or ".join("null" if t is _OPTIONAL else t.__name__ for t in allowed)
            return f"{where}.{key} is {data[key]!r:.60} ({type(data[key]).__name__}), expected {names}"
    return None


def manifest_problem(raw: Any) -> str | None:
    """What is wrong with a parsed manifest.json (missing keys, wrong types), or None when it is usable."""
    if not isinstance(raw, dict):
        return f"it holds a {type(raw).__name__}, not an object"
    problem = _type_problem("manifest", raw, _MANIFEST_TYPES, ("name", "source", "artifacts"))
    if problem or (problem := _type_problem("source", raw["source"], _SOURCE_TYPES)):
        return problem
    for i, entry in enumerate(raw["artifacts"]):
        if not isinstance(entry, dict):
            return f"artifacts[{i}] is {entry!r:.60}, expected an object"
        if problem := _type_problem(f"artifacts[{i}]", entry, _ENTRY_TYPES, _REQUIRED_ENTRY):
            return problem
        for j, variant in enumerate(entry.get("variants", [])):
            where = f"artifacts[{i}].variants[{j}]"
            if not isinstance(variant, dict):
                return f"{where} is {variant!r:.60}, expected an object"
            if problem := _type_problem(where, variant, _VARIANT_TYPES, ("name", "select")):
                return problem
    return None


def bundle_path(bundle: str | Path, name: Any, what: str = "artifact file") -> Path:
    """``bundle / name`` for a file name taken from a manifest, refused unless it stays inside the bundle
    once symlinks are resolved (no absolute paths, no ``..`` out of it, no links that leave it)."""
    where = Path(bundle) / MANIFEST
    if not isinstance(name, str) or not name.strip():
        raise EdgekitError(f"{where} is damaged: {what} {name!r} is not a file name")
    try:
        root = Path(bundle).resolve()
        inside = not Path(name).is_absolute() and (root / name).resolve().is_relative_to(root)
        inside = inside and (root / name).resolve() != root
    except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
        inside = False
    if not inside:
        raise EdgekitError(f"{where}: {what} {name!r} is outside the bundle {bundle} (after resolving symlinks); "
                           "manifest file names must be relative paths inside the bundle folder")
    return Path(bundle) / name


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


def bundle_lock(bundle: str | Path):
    """Context manager: the bundle's writer lock (creating the folder). A second writer fails at once,
    naming the bundle and the pid holding it; a killed writer's lock dies with it."""
    bundle = Path(bundle)
    try:
        bundle.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, bundle) from None
    return exclusive_lock(bundle / LOCK, f"bundle {bundle}")


def record_entries(bundle: str | Path, manifest: Manifest, entries: list[ArtifactEntry]) -> Manifest:
    """Re-read the bundle's manifest (its artifacts, when it is for the same source), merge ``entries``
    and save. Called under :func:`bundle_lock` after each artifact, so an interrupted run keeps what
    finished and no writer's entries are lost."""
    if (Path(bundle) / MANIFEST).is_file():
        on_disk = load_manifest(bundle)
        if on_disk.source.get("sha256") == manifest.source.get("sha256"):
            manifest.artifacts = on_disk.artifacts
    manifest.merge(entries)
    manifest.save(bundle)
    return manifest


def artifact_problem(bundle: Path, entry: ArtifactEntry) -> str | None:
    """Why a kept artifact must not be used (outside the bundle, missing, sha256 not the recorded one), or None."""
    path = bundle_path(bundle, entry.file)
    if not path.exists():
        return f"{entry.file} is missing"
    actual = sha256_path(path)
    if actual != entry.sha256:
        return (f"{entry.file} changed since conversion (sha256 {actual[:12]}…, manifest.json records "
                f"{str(entry.sha256)[:12]}…)")
    return None
