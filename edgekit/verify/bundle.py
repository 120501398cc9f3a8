"""`edgekit verify BUNDLE`: check files against the manifest and re-run parity against PyTorch.

A bundle is untrusted input: its manifest may name any model and any file. The source model it names is
loaded only when the user passes it (``--source``) or when it lies outside the bundle and its sha256,
computed before loading, is the recorded one; otherwise the bundle's golden files are the reference.
Every file name from the manifest is confined to the bundle (``edgekit.artifact.bundle_path``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgekit.artifact import (FAILED, LOCK, MANIFEST, ArtifactEntry, Manifest, artifact_problem, bundle_path,
                              golden_graph, golden_name, load_manifest)
from edgekit.checkpoint import META, WEIGHTS
from edgekit.converters import CONVERTERS, Converter, ModelSource, RunnerUnavailable
from edgekit.errors import CannotVerify, EdgekitError
from edgekit.io import folder_holding, sha256_path
from edgekit.sources import graph_sources, load_source, reference_for
from edgekit.verify.parity import MIL_REFERENCE, ReferenceData, compare
from edgekit.verify.tolerances import OutputTolerance, Tolerance, recorded_tolerance
from edgekit.verify.variants import combined, side_file_problem


def verify_artifact(conv: Converter, path: Path, reference: ReferenceData, tolerance: Tolerance,
                    threads: int, variant: str | None = None) -> dict[str, Any]:
    """Run the artifact (its graph ``variant``, for an ``export_many`` artifact) in its runtime on the
    reference inputs and compare with PyTorch within ``tolerance`` (recorded in the result as the one used).
    Where the runtime cannot run here, the converter's reference evaluator runs it, if it has one."""
    run = conv.runner(path, threads, variant)
    if isinstance(run, RunnerUnavailable):
        try:
            reference_run = conv.reference_runner(path, variant)
            if reference_run is not None:
                result = compare(reference_run, reference, tolerance, method=MIL_REFERENCE)
                return result | {"runtime": f"not run: {run.reason}"}
        except CannotVerify as exc:  # e.g. the reference evaluator lacks a kernel the program needs
            return _not_run(conv, f"{run.reason}; {exc}", tolerance)
        return _not_run(conv, run.reason, tolerance)
    try:
        return compare(run, reference, tolerance, method=conv.runtime)
    except CannotVerify as exc:
        return _not_run(conv, str(exc), tolerance)


def _not_run(conv: Converter, reason: str, tolerance: Tolerance) -> dict[str, Any]:
    """The verification of an artifact that loads but cannot be run here (kept, reported as not run)."""
    return {"status": f"not run: {reason}", "method": conv.runtime, "loads": True, "tolerance": tolerance.to_dict()}


def source_sha256(path: Path) -> str | None:
    """The sha256 edgekit records for a model, computed WITHOUT loading it: a checkpoint's weights file,
    a .pt2 file; None when ``path`` is neither."""
    folder = folder_holding(path, WEIGHTS, META)
    if folder is not None:
        return sha256_path(folder / WEIGHTS)
    return sha256_path(path) if path.is_file() and path.suffix == ".pt2" else None


def trusted_source(bundle: Path, manifest: Manifest,
                   explicit: str | Path | None = None) -> tuple[ModelSource | None, str]:
    """The bundle's source model when it is safe to load, else (None, why it is not used).

    ``explicit`` (the user's ``--source``) must have the recorded sha256: a mismatch is an error naming both.
    The recorded path (relative paths resolve against the bundle, never the working directory) is used
    only when it lies outside the bundle and its sha256 matches before anything is loaded."""
    recorded = manifest.source.get("sha256")
    if explicit is not None:
        path = Path(explicit)
        sha = source_sha256(path) if path.exists() else None
        if sha is None:
            raise EdgekitError(f"--source {explicit} is not an edgekit checkpoint folder or a .pt2 file")
        if recorded and sha != recorded:
            raise EdgekitError(f"--source {explicit} is not the model this bundle was converted from: its sha256 is "
                               f"{sha}, manifest.json records {recorded}")
        return load_source(path), ""
    named = manifest.source.get("path")
    if not named:
        return None, "manifest.json names no source model"
    path = Path(bundle) / named  # an absolute path stays itself; a relative one is read from the bundle
    if not _exists(path):
        return None, f"source model {named} is not there (a relative path is read from the bundle folder)"
    if path.resolve().is_relative_to(Path(bundle).resolve()):
        return None, f"source model {named} lies inside the bundle, which cannot vouch for it; pass --source PATH"
    if not recorded or source_sha256(path) != recorded:
        return None, f"source model {named} is not the one recorded (sha256 differs); pass --source PATH"
    source = load_source(path)
    if source.sha256 != recorded:  # a checkpoint whose meta.json names other weights
        return None, f"source model {named} records another sha256 than its weights have"
    return source, ""


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a NUL byte, a name too long
        return False


def reference_for_bundle(bundle: Path, manifest: Manifest, graph: str = "",
                         source: ModelSource | None = None) -> ReferenceData:
    """The source model's held-out data for ``graph`` when a trusted ``source`` is given, else the golden file."""
    if source is not None:
        match = [g for g in graph_sources(source, tuple(manifest.source.get("lengths", ()))) if g.graph == graph]
        if match:
            return reference_for(match[0])
    return golden_reference(bundle, graph)


def golden_reference(bundle: Path, graph: str = "") -> ReferenceData:
    """The reference inputs and PyTorch outputs saved in the bundle's golden file of ``graph``."""
    path = bundle_path(bundle, golden_name(graph), "golden file")
    if not path.is_file():
        raise EdgekitError(f"cannot verify {bundle}: it has no {path.name} and its source model is not used; "
                           "pass the source model with --source PATH")
    try:
        with np.load(path, allow_pickle=False) as z:
            ins = [z[k] for k in sorted(k for k in z.files if k.startswith("input_"))]
            outs = [z[k] for k in sorted(k for k in z.files if k.startswith("output_"))]
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgekitError(f"{path} is damaged: not an .npz archive of plain arrays ({type(exc).__name__})") from None
    if not ins or len(outs) == 0:
        raise EdgekitError(f"{path} is damaged: it holds no input_* or output_* arrays")
    n = len(ins[0])
    return ReferenceData([tuple(a[i:i + 1] for a in ins) for i in range(n)],
                         [[a[i:i + 1] for a in outs] for i in range(n)], labels, f"{path.name} ({n})")


def verify_bundle(bundle: str | Path, threads: int = 2, source: str | Path | None = None,
                  overrides: Mapping[str, OutputTolerance] | None = None) -> tuple[Manifest, list[dict[str, Any]], str]:
    """Per artifact: file present, sha256 as recorded, metadata embedded, parity within tolerance.
    ``overrides`` are the user's per-output tolerances (``--tolerance``; a manifest's recorded ones are never
    applied on its word). The third value says what the artifacts were compared with (and why not the source)."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    for entry in manifest.artifacts:  # refuse a hostile manifest before any work
        if entry.file:
            bundle_path(bundle, entry.file)
    model, why_not = trusted_source(bundle, manifest, source)
    references: dict[str, ReferenceData] = {}  # one per graph, built when first needed
    results = []
    for entry in manifest.artifacts:
        if entry.status == FAILED or not entry.file:
            results.append({"format": entry.format, "file": entry.file, "status": "failed",
                            "reason": f"conversion had failed: {entry.error}"})
            continue
        if entry.graph not in references:
            references[entry.graph] = reference_for_bundle(bundle, manifest, entry.graph, model)
        results.append(_verify_entry(bundle, entry, references[entry.graph], threads, overrides))
    results += stray_rows(bundle, manifest)
    described = "; ".join(r.description for r in references.values())
    return manifest, results, described + (f" (PyTorch source not used: {why_not})" if why_not else "")


def stray_files(bundle: Path, manifest: Manifest) -> list[str]:
    """Names in the bundle that its manifest does not account for: besides manifest.json, golden
    files and the writer's lock, every file must be an artifact (or a multi-adapter artifact's side
    file, ``<stem>.<variant>.…``). A killed writer's ``.*.partial`` staging folder shows up here."""
    files = [Path(e.file).parts[0] for e in manifest.artifacts if e.file and Path(e.file).parts]
    files += [Path(f).parts[0] for doc in manifest.documents.values() if isinstance(doc, dict)
              for f in doc.get("files", []) if isinstance(f, str) and Path(f).parts]
    stems = tuple(f"{Path(e.file).stem}." for e in manifest.artifacts if e.file and e.variants)
    known = {MANIFEST, LOCK, *files}
    return sorted(p.name for p in bundle.iterdir() if p.name not in known and not p.name.startswith(stems)
                  and not (p.name.startswith("golden") and p.name.endswith(".npz")))


def stray_rows(bundle: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """One failed result row naming the stray files, or none when there are none."""
    stray = stray_files(bundle, manifest)
    if not stray:
        return []
    shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
    return [{"format": "bundle", "file": None, "status": "failed",
             "reason": f"stray files not named by manifest.json: {shown} (left by an interrupted write or added "
                       "by hand; the next convert removes .partial staging folders)"}]


def _verify_entry(bundle: Path, entry: ArtifactEntry, reference: ReferenceData, threads: int,
                  overrides: Mapping[str, OutputTolerance] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"format": entry.format, "file": entry.file}
    problem = artifact_problem(bundle, entry)
    if problem:
        return out | {"status": "failed", "reason": problem}
    path = bundle_path(bundle, entry.file)
    try:
        conv = CONVERTERS.get(entry.format)
        info = conv.inspect(path)
        if "edgekit" not in info.metadata:
            return out | {"status": "failed", "reason": "edgekit metadata is not embedded"}
        # the tolerance it was verified with, never looser than its recorded spec allows
        tolerance, note = recorded_tolerance(entry.verification, entry.precision, overrides)
        if entry.variants:  # base + LoRA adapters: every variant against its own golden file
            parity = reverify(bundle, entry, tolerance, threads)
        else:
            parity = verify_artifact(conv, path, reference, tolerance, threads)
        out |= {"reason": note} if note else {}
    except EdgekitError as exc:
        return out | {"status": "failed", "reason": str(exc)}
    return out | {"status": parity["status"], "verification": parity}


def reverify(bundle: Path, entry: ArtifactEntry, tolerance: Tolerance, threads: int) -> dict[str, Any]:
    """`edgekit verify` of a multi-variant artifact: side files unchanged, every variant on its own golden
    file (``golden_graph``) within ``tolerance``; the first (base) variant's numbers for the table."""
    problem = side_file_problem(bundle, entry)  # side and adapter files inside the bundle, as recorded
    if problem:
        return {"status": "failed", "method": entry.runtime, "reason": problem}
    conv, path = CONVERTERS.get(entry.format), bundle_path(bundle, entry.file)
    results = {v["name"]: verify_artifact(conv, path, golden_reference(bundle, golden_graph(v["name"], entry.graph)),
                                          tolerance, threads, variant=v["name"]) for v in entry.variants}
    return combined(results) | {"variants": results}
