"""Measuring one exported graph of a sequence model: export, parity, latency, size and peak memory.

Shared by the sequence benchmarks (``benchmarks/seq_scaling.py``, ``benchmarks/ssm_vs_transformer.py``):
each graph goes through the real converter, is checked against PyTorch, then timed at a fixed thread
count. Peak memory is read in a fresh child process (the rise of its resident high-water mark while it
loads and runs the artifact), so runs don't pollute each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.benchmarking.stats import time_calls
from edgekit.converters import CONVERTERS, ModelSource, RunnerUnavailable
from edgekit.io import size_bytes
from edgekit.models.base import ExportGraph


def graph_source(graph: ExportGraph, name: str) -> ModelSource:
    """A converter source for one exported graph (benchmarks: no checkpoint, no data)."""
    return ModelSource(name, graph.module, graph.example_inputs, graph.input_names, graph.output_names,
                       "benchmark", "benchmark", "checkpoint", graph=graph.name)


def measure_graph(graph: ExportGraph, fmt: str, folder: Path, *, threads: int, warmup: int, runs: int,
                  memory: bool = False) -> dict[str, Any]:
    """Export ``graph`` to ``fmt`` in ``folder``, compare with PyTorch on its example inputs, time it.

    Returns export seconds, size, max |Δ| vs PyTorch, latency stats and (``memory``) peak memory in MB.
    A conversion or runtime failure is returned as ``{"error": "..."}``, not raised: one bad point
    must not lose a whole sweep. An artifact whose runtime cannot run here (Core ML off macOS) keeps
    its export seconds and size, with ``"status": "not run: <reason>"`` in place of parity and latency."""
    inputs = graph_inputs(graph.example_inputs)
    try:
        want = graph_outputs(graph, graph.example_inputs)
        path, seconds = export_graph(graph, fmt, folder)
    except Exception as exc:  # noqa: BLE001 - recorded in the result row
        return {"error": _error(exc)}
    row = {"export_seconds": round(seconds, 1), "size_bytes": size_bytes(path)}
    timed = time_artifact(fmt, path, inputs, want, threads=threads, warmup=warmup, runs=runs)
    if "error" in timed:
        return timed
    row |= timed
    if memory and "median_ms" in row:
        row["peak_memory_mb"] = peak_memory_mb(fmt, path, inputs, threads)
    return row


def export_graph(graph: ExportGraph, fmt: str, folder: Path) -> tuple[Path, float]:
    """Write ``graph`` as an fp32 ``fmt`` artifact in ``folder`` with the real converter; its path and seconds."""
    conv = CONVERTERS.get(fmt)
    path = folder / conv.artifact_name(f"{graph.name}_{fmt}", "fp32")
    start = time.perf_counter()
    conv.export(graph_source(graph, graph.name), path, "fp32", {})
    return path, time.perf_counter() - start


def graph_inputs(inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    return [x.numpy() for x in inputs]


def graph_outputs(graph: ExportGraph, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """What PyTorch computes for ``inputs`` (the reference an artifact is compared with)."""
    with torch.inference_mode():
        return [o.numpy() for o in graph.module(*inputs)]


def time_artifact(fmt: str, path: Path, inputs: list[np.ndarray], want: list[np.ndarray], *, threads: int,
                  warmup: int, runs: int, budget_s: float | None = None) -> dict[str, Any]:
    """Run the artifact at ``path`` on ``inputs``: max |Δ| against ``want`` and latency stats (``budget_s``: see
    ``time_calls``);
    ``{"status": "not run: <reason>"}`` where its runtime cannot run here, ``{"error": ...}`` on a failure."""
    try:
        run = CONVERTERS.get(fmt).runner(path, threads)
        if isinstance(run, RunnerUnavailable):
            return {"status": f"not run: {run.reason}"}
        err = max(float(np.abs(np.asarray(g, np.float64) - w).max()) for g, w in zip(run(inputs), want))
        stats = time_calls(lambda: run(inputs), warmup=warmup, runs=runs, threads=threads, budget_s=budget_s)
    except Exception as exc:  # noqa: BLE001 - recorded in the result row
        return {"error": _error(exc)}
    return {"max_abs_diff": err, **stats.to_dict()}


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def torch_latency(graph: ExportGraph, *, threads: int, warmup: int, runs: int) -> dict[str, Any]:
    """PyTorch eager latency of the same graph (inference mode)."""
    with torch.inference_mode():
        return time_calls(lambda: graph.module(*graph.example_inputs), warmup=warmup, runs=runs,
                          threads=threads).to_dict()


_CHILD = """
import json, sys
import numpy as np
from pathlib import Path
from edgekit.converters import CONVERTERS
fmt, path, inputs_file, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conv = CONVERTERS.get(fmt)
data = np.load(inputs_file, allow_pickle=False)
inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
__import__({"onnx": "onnxruntime", "tflite": "ai_edge_litert.interpreter"}.get(fmt, "numpy"))

def high_water_kib():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1])

open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current resident size
before = high_water_kib()
run = conv.runner(Path(path), threads)
for _ in range(3):
    run(inputs)
print(json.dumps(high_water_kib() - before))
"""


def peak_memory_mb(fmt: str, path: Path, inputs: list[np.ndarray], threads: int) -> float | None:
    """Peak resident memory (MB) that loading and running the artifact adds to a process that has already
    imported its runtime (Linux: the high-water mark is reset through /proc/self/clear_refs first).
    None where that is not possible."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        inputs_file = Path(tmp) / "inputs.npz"
        np.savez(inputs_file, *inputs)
        out = subprocess.run([sys.executable, "-c", _CHILD, fmt, str(path), str(inputs_file), str(threads)],
                             capture_output=True, text=True)
        if out.returncode:
            return None
        return round(int(json.loads(out.stdout.strip().splitlines()[-1])) / 1024, 1)


