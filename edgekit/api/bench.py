"""``edgekit.bench`` and ``edgekit.bench_graph``: latency of artifacts (on the host or a device backend) and
of one model graph per format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from edgekit.artifact import Manifest, load_manifest
from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.benchmarking.result import BenchResult
    from edgekit.models import EdgeModel
    from edgekit.verify import ReferenceData

HOST_TIMING = {"threads": 2, "warmup": 20, "runs": 200}  # the host's defaults, as in `edgekit bench`


def bench_graph(model: EdgeModel, graph: str = "", *, formats: Sequence[str] = ("onnx", "tflite"), threads: int = 2,
                warmup: int = 5, runs: int = 10, memory: bool = False) -> dict[str, dict[str, Any]]:
    """Export one graph of an edgekit model (``graph``: its name or the start of it, e.g. "prefill", "step"; "" =
    the first) to each format, check it against PyTorch on its example inputs and time it beside PyTorch eager.

    Returns ``{"pytorch": stats, fmt: {export_seconds, size_bytes, max_abs_diff, median_ms, …}}``; with ``memory``
    also each artifact's peak memory in MB. A format that fails to convert or run is ``{"error": "..."}``, not an
    exception (one bad point must not lose a sweep); one whose runtime cannot run here (Core ML off macOS) is
    ``{"status": "not run: <reason>", "export_seconds", "size_bytes"}``."""
    import tempfile

    from edgekit.benchmarking.seq import measure_graph, torch_latency
    from edgekit.converters import CONVERTERS

    graphs = model.export_graphs() if hasattr(model, "export_graphs") else []
    exact = [g for g in graphs if g.name == graph]
    chosen = (exact or [g for g in graphs if g.name.startswith(graph)] or [None])[0]
    if chosen is None:
        names = ", ".join(repr(g.name) for g in graphs) or "none (not an edgekit model)"
        raise EdgekitError(f"bench_graph: {type(model).__name__} has no graph {graph!r}; its graphs: {names}")
    _check_timing("bench_graph", threads=threads, warmup=warmup, runs=runs)
    for fmt in formats:
        CONVERTERS.get(fmt)  # an unknown name is the caller's mistake: raised (listing the formats), not recorded
    timings = {"pytorch": torch_latency(chosen, threads=threads, warmup=warmup, runs=runs)}
    with tempfile.TemporaryDirectory() as folder:
        for fmt in formats:
            timings[fmt] = measure_graph(chosen, fmt, Path(folder), threads=threads, warmup=warmup, runs=runs,
                                         memory=memory)
    return timings


@dataclass
class BenchReport:
    """``edgekit.bench``: the report rows (the table ``edgekit bench`` prints), the raw results and the manifest."""

    rows: list[dict[str, Any]]
    results: list[BenchResult]
    manifest: Manifest | None

    @property
    def ok(self) -> bool:
        """No row failed."""
        return all(r["status"] != "failed" for r in self.rows)

    def check_placement(self, accelerator: str, min_coverage: float = 1.0) -> list[str]:
        """The ``--require`` gate on the benchmarked artifacts: the placement measured where they ran (a phone's
        delegate log) where there is one, else the one recorded in the bundle at convert time. Returns one line per
        artifact that passed; raises ``edgekit.placement.PlacementGateFailed`` naming the first that did not."""
        from edgekit.placement import check_required

        recorded = {e.file: e.placement for e in self.manifest.artifacts} if self.manifest else {}
        judged = [_Placed(r.artifact, r.extra.get("placement") or recorded.get(r.artifact.partition("#")[0]) or {})
                  for r in self.results if r.format != "pytorch" and not r.status.startswith("failed")]
        return check_required(judged, accelerator, min_coverage)


@dataclass(frozen=True)
class _Placed:
    """What the gate reads of one benchmarked artifact."""

    file: str
    placement: dict[str, Any]


def bench(target: str | Path, *, device: str = "host", threads: int | None = None, warmup: int | None = None,
          runs: int | None = None, options: Any = None, source: str | Path | None = None,
          out: str | Path | None = None, overwrite: bool = False) -> BenchReport:
    """Time an artifact file, or every artifact of a bundle folder, in its runtime: what ``edgekit bench`` does.

    On the host (threads, warmup, runs default to 2, 20, 200) a bundle's golden inputs feed the artifacts and its
    source model gives the PyTorch row when it may be loaded (``source``: a checkpoint or .pt2 whose sha256 is the
    recorded one). ``device="adb"`` / ``"adb:SERIAL"`` (any registered ``edgekit.DEVICE_BENCHES`` backend) runs
    them there with ``options`` (its options object, e.g. ``edgekit.AdbBenchOptions``); threads, warmup and runs
    given beside it must agree with it. ``out`` also writes the JSON report (checked first)."""
    from edgekit.benchmarking.targets import bench_on_device, device_options, parse_device
    from edgekit.io import check_output_dir
    from edgekit.pipeline import write_report
    from edgekit.report.rows import build_rows

    if out is not None:
        check_output_dir(out, "report", overwrite)  # before anything runs
    target, host = Path(target), parse_device(device)[0] == "host"
    if not target.exists():
        raise EdgekitError(f"{target} does not exist; expected an artifact file or a bundle folder")
    if host:
        if options is not None:
            raise EdgekitError("edgekit.bench: options= is for a device such as device='adb'; on the host give "
                               "threads, warmup and runs")
        given = {"threads": threads, "warmup": warmup, "runs": runs}
        timing = {k: HOST_TIMING[k] if v is None else v for k, v in given.items()}
        _check_timing("edgekit.bench", **timing)
        results, manifest, reference = _bench_host(target, source, timing)
    else:
        chosen = device_options(device, options, threads=threads, warmup=warmup, runs=runs)
        (results, manifest), reference = bench_on_device(target, device, chosen), None
    rows = build_rows(manifest, results, unbenched=target.is_dir() and host)
    if out is not None:
        write_report(Path(out), results, manifest, reference, rows=rows)
    return BenchReport(rows, results, manifest)


def _check_timing(who: str, **timing: int) -> None:
    """threads and runs at least 1, warmup at least 0."""
    for name, value in timing.items():
        least = 0 if name == "warmup" else 1
        if value < least:
            raise EdgekitError(f"{who}: {name} must be at least {least}, got {value}")


def _bench_host(target: Path, source: str | Path | None,
                timing: dict[str, int]) -> tuple[list[BenchResult], Manifest | None, ReferenceData | None]:
    """A bundle (every artifact) or one artifact file on this machine, after the PyTorch row where allowed."""
    from edgekit.artifact import MANIFEST
    from edgekit.benchmarking.host import bench_artifact, bench_bundle
    from edgekit.benchmarking.targets import refused
    from edgekit.verify.bundle import golden_reference

    is_bundle = target.is_dir() and (target / MANIFEST).is_file()
    folder = target if is_bundle else target.parent
    manifest = load_manifest(folder) if (folder / MANIFEST).is_file() else None
    reference = golden_reference(folder) if (folder / "golden.npz").is_file() else None
    results = [row for row in [_torch_row(folder, manifest, reference, source, timing)] if row is not None]
    if is_bundle:
        results += bench_bundle(folder, manifest, list(reference.inputs[0]) if reference else [], **timing)
    else:
        fmt = _format_of(target)
        rejected = refused(folder, manifest, target.name, "host")
        inputs = [] if rejected else list(reference.inputs[0]) if reference else _random_inputs(fmt, target)
        results.append(rejected or bench_artifact(fmt, target, inputs, **timing))
    return results, manifest, reference


def _torch_row(bundle: Path, manifest: Manifest | None, reference: ReferenceData | None,
               source: str | Path | None, timing: dict[str, int]) -> BenchResult | None:
    """PyTorch eager on the bundle's source model, when it may be loaded (``verify.bundle.trusted_source``)."""
    from edgekit.benchmarking.host import bench_torch
    from edgekit.progress import status
    from edgekit.verify.bundle import trusted_source

    if manifest is None:
        if source:
            raise EdgekitError(f"--source needs a bundle to check it against, and {bundle} has no manifest.json")
        return None
    model, why_not = trusted_source(bundle, manifest, source)
    if model is None or reference is None:
        status(f"PyTorch baseline not run: {why_not or f'{bundle} has no golden.npz inputs'}")
        return None
    return bench_torch(model.module, tuple(torch.from_numpy(x) for x in reference.inputs[0]), **timing)


def _format_of(path: Path) -> str:
    """The registered format whose suffix ``path`` has."""
    from edgekit.converters import CONVERTERS

    for name in CONVERTERS:
        if path.name.endswith(CONVERTERS.get(name).suffix):
            return name
    suffixes = ", ".join(CONVERTERS.get(n).suffix for n in CONVERTERS)
    raise EdgekitError(f"{path} is not an artifact edgekit can run; expected one of: {suffixes}")


def _random_inputs(fmt: str, path: Path) -> list[np.ndarray]:
    """Seeded random inputs of the artifact's own shapes and dtypes (an artifact without golden data)."""
    from edgekit.converters import CONVERTERS

    rng = np.random.default_rng(0)
    return [rng.standard_normal(t.shape).astype(t.dtype) for t in CONVERTERS.get(fmt).inspect(path).inputs]
