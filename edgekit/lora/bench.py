"""Latency of each variant of a multi-adapter artifact, and of switching between adapters.

One runtime instance per artifact (one interpreter / session), as an app would hold it. Each variant
is timed on its own golden input; "switch" times calls that each use a different variant than the
call before (round robin), i.e. what a request for another adapter costs once everything is loaded.
For ONNX, loading one ``.onnx_adapter`` file is timed as well.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgekit.artifact import ArtifactEntry, bundle_path
from edgekit.bench.result import BenchResult
from edgekit.bench.stats import LatencyStats, time_calls
from edgekit.converters import CONVERTERS, RunnerUnavailable
from edgekit.errors import EdgekitError
from edgekit.lora.pack_base import BASE, PACKAGERS, golden_graph


def variant_inputs(bundle: Path, entry: ArtifactEntry, base_inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Each variant's first golden input (``golden_<variant>.npz``), the base's otherwise."""
    from edgekit.verify.bundle import golden_reference

    out = {}
    for v in entry.variants:
        try:
            out[v["name"]] = list(golden_reference(bundle, golden_graph(v["name"], entry.graph)).inputs[0])
        except EdgekitError:
            out[v["name"]] = base_inputs
    return out


def bench_variants(bundle: Path, entry: ArtifactEntry, base_inputs: list[np.ndarray], *, threads: int, warmup: int,
                   runs: int) -> list[BenchResult]:
    """One row per variant (the base row is named like the artifact) plus one row for switching."""
    import edgekit.converters.coreml.adapters, edgekit.converters.onnx.adapters, edgekit.converters.tflite.adapters  # noqa: F401,E401  (register the packagers)

    packager = PACKAGERS.get(entry.format)
    runtime = CONVERTERS.get(entry.format).runtime
    path = bundle_path(bundle, entry.file)
    names = [v["name"] for v in entry.variants]
    row = lambda suffix, **kw: BenchResult(f"{entry.file}{suffix}", entry.format, runtime, "host", **kw)  # noqa: E731
    problem = side_file_problem(bundle, entry)
    if problem:  # never run adapters that are not the ones verified
        return [row("", status=f"failed: {problem}; not run")]
    try:
        probe = packager.runner(path, names[0], threads)
        if isinstance(probe, RunnerUnavailable):
            return [row("" if n == BASE else f"#{n}", status=f"not run: {probe.reason}", extra={"variant": n})
                    for n in names]
        run = packager.switcher(path, threads)
    except EdgekitError as exc:
        return [row("", status=f"failed: {exc}")]
    inputs = variant_inputs(bundle, entry, base_inputs)
    results = []
    for name in names:
        stats = time_calls(lambda: run(name, inputs[name]), warmup=warmup, runs=runs, threads=threads)
        results.append(row("" if name == BASE else f"#{name}", latency=stats, extra={"variant": name}))
    switch = _time_switching(run, names, inputs, warmup=warmup, runs=runs, threads=threads)
    extra = {"variant": "switch", "order": "round robin over " + ", ".join(names)}
    load_ms = _adapter_load_ms(bundle, entry)
    if load_ms is not None:
        extra["adapter_load_ms"] = load_ms
    results.append(row("#switch", latency=switch, extra=extra))
    return results


def _time_switching(run, names: list[str], inputs: dict[str, list[np.ndarray]], *, warmup: int, runs: int,
                    threads: int) -> LatencyStats:
    """Latency of calls that each use the next variant in round-robin order."""
    for i in range(warmup):
        run(names[i % len(names)], inputs[names[i % len(names)]])
    samples = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        name = names[(i + 1) % len(names)]
        start = time.perf_counter_ns()
        run(name, inputs[name])
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return LatencyStats.from_samples(samples, warmup=warmup, threads=threads)


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
    from edgekit.io import sha256_path

    side_files = entry.verification.get("side_files", {})
    if not isinstance(side_files, dict):
        raise EdgekitError(f"{bundle / 'manifest.json'} is damaged: {entry.file}'s side_files is not an object")
    for name, recorded in side_files.items():
        path = bundle_path(bundle, name, "side file")
        sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if not path.is_file() or sha256_path(path) != sha:
            return f"{name} is missing or changed since conversion (sha256 differs)"
    adapter_files(bundle, entry)  # every selected adapter file is inside the bundle
    return None


def _adapter_load_ms(bundle: Path, entry: ArtifactEntry) -> float | None:
    """Median time to load one ``.onnx_adapter`` file (ONNX Runtime), over 5 loads; None for other formats."""
    files = adapter_files(bundle, entry)
    if not files:
        return None
    import onnxruntime as ort

    samples = []
    for _ in range(5):
        start = time.perf_counter_ns()
        ort.LoraAdapter().Load(str(files[0]))
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return float(np.median(samples))
