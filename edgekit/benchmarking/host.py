"""Host benchmarks: each artifact in its own runtime, beside PyTorch eager, at a fixed thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekit.artifact import FAILED, Manifest, artifact_problem, bundle_path
from edgekit.benchmarking.result import BenchResult
from edgekit.benchmarking.stats import time_calls
from edgekit.benchmarking.variants import bench_variants
from edgekit.converters import CONVERTERS, RunnerUnavailable
from edgekit.errors import EdgekitError
from edgekit.verify.bundle import golden_reference


def bench_torch(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], *, threads: int, warmup: int, runs: int,
                budget_s: float | None = None) -> BenchResult:
    """PyTorch eager latency of an eval-mode module, batch 1, inference mode (``budget_s``: see ``time_calls``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            stats = time_calls(lambda: module(*inputs), warmup=warmup, runs=runs, threads=threads, budget_s=budget_s)
    finally:
        torch.set_num_threads(previous)
    return BenchResult("pytorch", "pytorch", "torch-eager", "host", stats)


def bench_artifact(fmt: str, path: Path, inputs: list[np.ndarray], *, threads: int, warmup: int, runs: int) -> BenchResult:
    """Latency of one artifact in the runtime its converter names; "not run" where it cannot run here."""
    conv = CONVERTERS.get(fmt)
    result = BenchResult(path.name, fmt, conv.runtime, "host")
    try:
        run = conv.runner(path, threads)
    except EdgekitError as exc:
        result.status = f"failed: {exc}"
        return result
    if isinstance(run, RunnerUnavailable):
        result.status = f"not run: {run.reason}"
        return result
    result.latency = time_calls(lambda: run(inputs), warmup=warmup, runs=runs, threads=threads)
    return result


def bench_bundle(bundle: Path, manifest: Manifest, inputs: list[np.ndarray], *, threads: int, warmup: int, runs: int) -> list[BenchResult]:
    """Benchmark every kept artifact of a bundle; ``inputs`` feed a model's only graph, and each graph
    of a sequence model gets the first input of its own golden file."""
    for entry in manifest.artifacts:  # refuse a hostile manifest before anything runs
        if entry.file:
            bundle_path(bundle, entry.file)
    results = []
    graph_inputs: dict[str, list[np.ndarray]] = {"": inputs}  # golden inputs, read once per graph
    for entry in manifest.artifacts:
        if entry.status == FAILED or not entry.file:
            results.append(BenchResult(entry.file or entry.format, entry.format, entry.runtime, "host",
                                       status=f"failed: {entry.error}"))
            continue
        if entry.compiled_for:
            results.append(BenchResult(entry.file, entry.format, entry.runtime, "host",
                                       status=f"not run: compiled for {entry.compiled_for}; bench it on that phone "
                                              "with --device adb --delegate qnn"))
            continue
        problem = artifact_problem(bundle, entry)
        if problem:  # never run a file that is not the one converted and verified
            results.append(BenchResult(entry.file, entry.format, entry.runtime, "host",
                                       status=f"failed: {problem}; not run"))
            continue
        if entry.graph not in graph_inputs:
            graph_inputs[entry.graph] = list(golden_reference(bundle, entry.graph).inputs[0])
        if entry.variants:  # base + LoRA adapters in one artifact: each variant, and switching between them
            results += bench_variants(bundle, entry, graph_inputs[entry.graph], threads=threads, warmup=warmup, runs=runs)
            continue
        results.append(bench_artifact(entry.format, bundle_path(bundle, entry.file), graph_inputs[entry.graph],
                                      threads=threads, warmup=warmup, runs=runs))
    return results
