"""Latency of each variant of a multi-variant artifact (base + adapters), and of switching between them.

One runtime instance per artifact (one interpreter / session), as an app would hold it. Each variant
is timed on its own golden input; "switch" times calls that each use a different variant than the
call before (round robin), i.e. what a request for another adapter costs once everything is loaded.
For ONNX, loading one ``.onnx_adapter`` file is timed as well.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgekit.artifact import BASE, ArtifactEntry, bundle_path, golden_graph
from edgekit.benchmarking.result import BenchResult
from edgekit.benchmarking.stats import LatencyStats, time_calls
from edgekit.converters.base import CONVERTERS, RunnerUnavailable, Switcher
from edgekit.errors import EdgekitError
from edgekit.verify.bundle import golden_reference
from edgekit.verify.variants import adapter_files, side_file_problem


def variant_inputs(bundle: Path, entry: ArtifactEntry, base_inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Each variant's first golden input (``golden_<variant>.npz``), the base's otherwise."""
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
    conv = CONVERTERS.get(entry.format)
    path = bundle_path(bundle, entry.file)
    names = [v["name"] for v in entry.variants]
    row = lambda suffix, **kw: BenchResult(f"{entry.file}{suffix}", entry.format, conv.runtime, "host", **kw)  # noqa: E731
    problem = side_file_problem(bundle, entry)
    if problem:  # never run adapters that are not the ones verified
        return [row("", status=f"failed: {problem}; not run")]
    try:
        probe = conv.runner(path, threads, names[0])
        if isinstance(probe, RunnerUnavailable):
            return [row("" if n == BASE else f"#{n}", status=f"not run: {probe.reason}", extra={"variant": n})
                    for n in names]
        run = conv.switcher(path, threads)
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


def _time_switching(run: Switcher, names: list[str], inputs: dict[str, list[np.ndarray]], *, warmup: int,
                    runs: int, threads: int) -> LatencyStats:
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
