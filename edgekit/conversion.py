"""Convert a model to each requested format, verify every artifact, and write the bundle."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgekit.artifact import (EXPORTED, FAILED, GOLDEN_SAMPLES, MANIFEST, VERIFIED, ArtifactEntry, Manifest,
                              artifact_metadata, bundle_lock, bundle_path, golden_name, load_manifest, record_entries)
from edgekit.converters import CONVERTERS, ArtifactInfo, Converter, ModelSource
from edgekit.converters.base import raise_if_disk_error
from edgekit.debuglog import log_traceback
from edgekit.documents import write_documents
from edgekit.errors import EdgekitError, first_line
from edgekit.io import (ARTIFACT, atomic_output, check_output_dir, hold_interrupts, remove_stale_staging, sha256_path,
                        size_bytes)
from edgekit.placement import Placement
from edgekit.progress import progress_bar
from edgekit.quant.plan import QuantPlan, plan_quantization
from edgekit.quant.spec import QuantSpec
from edgekit.verify.bundle import verify_artifact
from edgekit.verify.parity import ReferenceData, failure_text
from edgekit.verify.tolerances import Tolerance, tolerance_for
from edgekit.versions import tool_versions

class VerificationFailed(EdgekitError):
    """An artifact ran but disagreed with PyTorch beyond the tolerance."""


def convert_model(
    source: ModelSource, formats: list[str], bundle: str | Path, reference: ReferenceData,
    *, quant: QuantSpec = QuantSpec(), calib_array: np.ndarray | None = None, threads: int = 2,
    overwrite: bool = False, progress: Callable[[str], None] = lambda _: None,
) -> Manifest:
    """Export ``source`` to each format into ``bundle``; only verified (or honestly unverifiable)
    artifacts are kept, and the manifest records every outcome. ``quant`` says how to quantize;
    ``calib_array`` holds calibration samples given from Python (else ``quant.calib_source`` or the
    recipe's data); ``progress`` receives status lines of calibration and mixed-precision search."""
    return convert_graphs([source], formats, bundle, [reference], quant=quant, calib_array=calib_array,
                          threads=threads, overwrite=overwrite, progress=progress)


def convert_graphs(
    sources: list[ModelSource], formats: list[str], bundle: str | Path, references: list[ReferenceData],
    *, quant: QuantSpec = QuantSpec(), calib_array: np.ndarray | None = None, threads: int = 2,
    overwrite: bool = False, progress: Callable[[str], None] = lambda _: None, tolerances: Any = None,
) -> Manifest:
    """``convert_model`` for every graph of one model (``sources.graph_sources``), each verified on its
    own reference data; artifacts are named ``<model>_<graph>_<precision>.<suffix>``.

    The bundle is written under its lock: debris of a killed run is removed first, and the manifest
    is saved after each artifact. A damaged manifest, or one for another model, is refused unless
    ``overwrite``; a folder that is not a bundle is written into only with ``overwrite``. ``tolerances`` are
    the user's per-output tolerance overrides (``edgekit.verify.tolerances.parse_tolerances``)."""
    converters = [CONVERTERS.get(fmt) for fmt in formats]
    for conv in converters:
        conv.check_precision(quant)
    bundle = Path(bundle)
    check_output_dir(bundle, "bundle", overwrite)
    extras = [(conv, x) for conv in converters for x in conv.extra_graphs(list(zip(sources, references)), quant)]
    # calibrate first (one calibration for all formats): bad calibration data fails before anything is written
    plans = [plan_quantization(source, quant, calib_array, progress=progress) for source in sources]
    with bundle_lock(bundle):
        remove_stale_staging(bundle)
        manifest = manifest_for(sources[0], bundle, overwrite)
        manifest.save(bundle)
        for source, reference in [*zip(sources, references), *((x.source, x.reference) for _, x in extras)]:
            write_golden(bundle, reference, source.graph)

        def record(entry: ArtifactEntry) -> None:
            record_entries(bundle, manifest, [entry])

        with progress_bar("converting", total=len(converters) * len(sources) + len(extras)) as bar:
            for source, reference, plan in zip(sources, references, plans):
                for conv in converters:
                    bar.note(f"{conv.name} {source.graph}".strip())
                    convert_one(conv, source, bundle, manifest, reference, plan, threads, record=record,
                                tolerance=tolerance_for(plan.spec, tolerances) if tolerances else None)
                    bar.advance()
            for conv, extra in extras:  # graphs one format offers beside the model's own, in their own precision
                bar.note(f"{conv.name} {extra.source.graph}")
                convert_one(conv, extra.source, bundle, manifest, extra.reference,
                            QuantPlan(QuantSpec.parse(extra.precision)), threads, record=record)
                bar.advance()
        write_documents(bundle, load_manifest(bundle))  # from what is on disk: every run's artifacts
    return load_manifest(bundle)


def converted_entries(manifest: Manifest, sources: list[ModelSource], formats: list[str]) -> list[ArtifactEntry]:
    """The entries of one convert run: each graph × format, then the formats' extra graphs
    (``<graph>_…``, e.g. Core ML's ``step_stateful``) found in the manifest."""
    graphs = [s.graph for s in sources]
    extra = [a.graph for a in manifest.artifacts if a.format in formats and not a.compiled_for and a.graph
             and a.graph not in graphs and any(a.graph.startswith(f"{g}_") for g in graphs if g)]
    return [e for g in [*graphs, *dict.fromkeys(extra)] for fmt in formats if (e := manifest.entry(fmt, g))]


def manifest_for(source: ModelSource, bundle: Path, overwrite: bool = False) -> Manifest:
    """The bundle's manifest to extend: the existing one (its artifacts kept) when it is for this
    source. One for the same checkpoint path with other weights (retrained) is replaced and its
    stale artifacts removed; a damaged one, or one for another model, only with ``overwrite``."""
    fresh = Manifest(
        name=source.name,
        source={"kind": source.kind, "path": recorded_source_path(source.origin, bundle), "sha256": source.sha256,
                **({"lengths": list(source.lengths)} if source.lengths else {})},
        labels=source.labels, preprocessing=source.preprocessing, tools=tool_versions(),
    )
    if not (bundle / MANIFEST).exists():
        return fresh
    try:
        old = load_manifest(bundle)
    except EdgekitError as exc:
        if overwrite:
            return fresh
        raise EdgekitError(f"{exc}; move it away or use --overwrite") from None
    if old.source.get("sha256") == source.sha256:
        fresh.artifacts = old.artifacts
        return fresh
    if not overwrite and not _same_path(old.source.get("path"), source.origin, bundle):
        raise EdgekitError(
            f"{bundle / MANIFEST} is for another model ({old.name}, source {old.source.get('path')}); "
            "use --overwrite to replace its artifacts or choose another --out")
    _remove_artifacts(bundle, old)
    return fresh


def _remove(path: Path) -> None:
    """Delete an artifact edgekit wrote: a file, or a folder such as an ``.mlpackage``."""
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def recorded_source_path(origin: str, bundle: Path) -> str:
    """The source's path as a manifest records it: relative to the bundle (readers resolve it there, never
    from their working directory), so a run folder moved as a whole still finds its checkpoint."""
    if not Path(origin).exists():  # an in-memory model (edgekit.convert of an nn.Module) has no path
        return origin
    return os.path.relpath(Path(origin).resolve(), Path(bundle).resolve())


def _same_path(recorded: Any, origin: str, bundle: Path) -> bool:
    """Whether a manifest's recorded source path names ``origin`` (relative to the bundle or the cwd)."""
    if not isinstance(recorded, str) or not recorded:
        return False
    target = Path(origin).resolve()
    return any(p.resolve() == target for p in (Path(recorded), bundle / recorded))


def _remove_artifacts(bundle: Path, manifest: Manifest) -> None:
    """Delete the files an edgekit manifest names inside ``bundle`` (they are being replaced)."""
    for entry in manifest.artifacts:
        if not entry.file:
            continue
        with contextlib.suppress(EdgekitError, OSError):
            _remove(bundle_path(bundle, entry.file))


def convert_one(
    conv: Converter, source: ModelSource, bundle: Path, manifest: Manifest, reference: ReferenceData,
    plan: QuantPlan, threads: int, *, record: Callable[[ArtifactEntry], None] | None = None,
    tolerance: Tolerance | None = None,
) -> ArtifactEntry:
    """Export, inspect and verify one format with ``plan`` (its spec and prepared graph); the file appears
    in the bundle only if all went well, and ``record(entry)`` (the manifest update) runs with it, Ctrl-C
    held off in between. Any failure of one stage is this format's recorded error, never the run's.
    The verification records the spec and the tolerance it was checked with (``tolerance``, else the spec's)."""
    name = conv.artifact_name(source.artifact_base, plan.spec)
    entry = ArtifactEntry(format=conv.name, precision=plan.tag, status=FAILED, runtime=conv.runtime,
                          graph=source.graph)
    metadata = artifact_metadata(manifest, conv.name, plan.tag, *io_spec(source, reference)) | {"graph": source.graph}
    tolerance = tolerance or tolerance_for(plan.spec)

    def fill(staged: Path) -> None:
        with stage(conv.name, "export"):
            changes = conv.export(source, staged, plan.spec, metadata, prepared=plan.prepared) or []
        with stage(conv.name, "inspect"):
            info = conv.inspect(staged)
            _check_io(conv.name, info, source)
        entry.inputs = [t.to_dict() for t in info.inputs]
        entry.outputs = [t.to_dict() for t in info.outputs]
        entry.op_histogram = info.op_histogram
        entry.graph_changes = [*changes, *io_changes(source, info)]
        entry.states, entry.usage = [t.to_dict() for t in info.states], source.usage
        with stage(conv.name, "verify"):
            entry.verification = verify_artifact(conv, staged, reference, tolerance, threads)
        entry.verification["quantization"] = plan.summary()
        if entry.verification["status"] == "failed":
            raise VerificationFailed(failure_text(conv.name, entry.verification))
        entry.placement = placement_of(conv, staged)
        entry.size_bytes, entry.sha256 = size_bytes(staged), sha256_path(staged)

    return write_entry(entry, bundle / name, fill, record)


def placement_of(conv: Converter, path: Path) -> dict[str, Any]:
    """The manifest's ``placement``: per accelerator the format can target, where the artifact's ops run. A
    placement that fails to be determined is recorded as not run (with why); it never fails the artifact."""
    found = {}
    for accelerator in conv.accelerators:
        try:
            report = conv.placement(path, accelerator)
        except Exception as exc:  # noqa: BLE001 - a placement analysis is advice; the artifact stands
            log_traceback(exc, f"{conv.name} placement {accelerator}")
            report = Placement(accelerator, "error", not_run=f"placement failed: {type(exc).__name__}: "
                                                            f"{first_line(exc, 200, '(no message)')}")
        found[accelerator] = report.to_dict()
    return found


class StageFailed(EdgekitError):
    """One stage (export, inspect, verify) of one format raised something other than an EdgekitError."""


@contextlib.contextmanager
def stage(fmt: str, name: str) -> Iterator[None]:
    """Turn an unexpected exception of stage ``name`` of format ``fmt`` into one line naming both and the
    library's own message (the traceback goes to the debug log). EdgekitErrors already say what went wrong;
    an OSError of writing (a full disk) stays itself, so the bundle writer names the file."""
    try:
        yield
    except EdgekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library error fails this format only
        raise_if_disk_error(exc)
        log_traceback(exc, f"{fmt} {name}")
        raise StageFailed(f"{fmt} {name} failed: {type(exc).__name__}: {first_line(exc, 300, '(no message)')}") from exc



def io_changes(source: ModelSource, info: ArtifactInfo) -> list[str]:
    """The inputs and outputs whose dtype the artifact stores differently from the model (LiteRT's int32
    token ids, a static int8 graph's quantized I/O): what an app must feed and read instead."""
    changes = []
    wanted = [str(x.dtype).replace("torch.", "") for x in source.example_inputs]
    for name, want, got in zip(source.input_names, wanted, info.inputs):
        if got.dtype != want:
            changes.append(f"input {name}: {want} → {got.dtype} (the app feeds {got.dtype})")
    return changes


def write_entry(entry: ArtifactEntry, path: Path, fill: Callable[[Path], None],
                record: Callable[[ArtifactEntry], None] | None = None) -> ArtifactEntry:
    """Run ``fill(staged)`` on a private staging path that becomes ``path`` only if it returns; an
    error is recorded in ``entry.error`` as one line (status stays failed) and nothing is left behind.
    ``fill`` writes the artifact and fills ``entry``, its verification included. ``record`` saves
    the entry; from the moment the artifact lands until it is recorded, SIGINT waits, and if
    recording fails the new artifact is removed again (no artifact without a manifest entry)."""
    with contextlib.ExitStack() as held:
        try:
            with atomic_output(path, kind=ARTIFACT) as staged:
                fill(staged)
                held.enter_context(hold_interrupts())
        except EdgekitError as exc:
            entry.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever a library raises fails this artifact only
            log_traceback(exc, f"{entry.format} {entry.graph}".strip())
            entry.error = f"{entry.format} failed: {type(exc).__name__}: {first_line(exc, 300, '(no message)')}"
        else:
            entry.file = path.name
            entry.status = VERIFIED if entry.verification["status"] == "passed" else EXPORTED
        if record is not None:
            try:
                record(entry)
            except BaseException:
                if entry.file:
                    _remove(path)
                raise
    return entry


def io_spec(source: ModelSource, reference: ReferenceData) -> tuple[list[dict], list[dict]]:
    """The model's inputs and outputs as the manifest and the embedded metadata record them."""
    inputs = [{"name": n, "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
              for n, x in zip(source.input_names, source.example_inputs)]
    first = reference.outputs[0] if len(reference) else []
    outputs = [{"name": n, "shape": list(o.shape), "dtype": o.dtype.name} for n, o in zip(source.output_names, first)]
    return inputs, outputs


def _check_io(fmt: str, info, source: ModelSource) -> None:
    """The artifact must take the model's inputs: same count and shapes (names may be mangled)."""
    want = [tuple(x.shape) for x in source.example_inputs]
    got = [tuple(t.shape) for t in info.inputs]
    if got != want:
        raise EdgekitError(f"{fmt} artifact has input shapes {got}; the model takes {want}")


def write_golden(bundle: Path, reference: ReferenceData, graph: str = "") -> None:
    """Save the first few reference inputs and PyTorch outputs as ``golden.npz`` (no pickles)."""
    n = min(GOLDEN_SAMPLES, len(reference))
    arrays: dict[str, np.ndarray] = {}
    for k in range(len(reference.inputs[0]) if n else 0):
        arrays[f"input_{k}"] = np.stack([reference.inputs[i][k][0] for i in range(n)])
    for k in range(len(reference.outputs[0]) if n else 0):
        arrays[f"output_{k}"] = np.stack([reference.outputs[i][k][0] for i in range(n)])
    if reference.labels is not None and n:
        arrays["labels"] = np.asarray(reference.labels[:n])
    with atomic_output(bundle / golden_name(graph)) as staged:
        with open(staged, "wb") as f:
            np.savez(f, **arrays)
