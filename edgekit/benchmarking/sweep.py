"""The pipeline's sequence sweep: prefill latency at several lengths and step latency at several context positions,
per host-runnable format and PyTorch eager, for the HTML report's sequence plots (``report.json``
``"sequence_sweep"``).

Artifacts come from the bundle where it has them (the step graph, a prefill length it was exported at, fp32 only,
so that every curve is one precision); other prefill lengths are exported for the sweep with the real converters
(``benchmarking.seq``: a few seconds per length and format) into a temporary folder. A format whose runtime cannot
run here (Core ML off macOS) is recorded as "not run" and never exported. Each point is checked against PyTorch
(max |Δ|) before it is timed.

A step "at context p" is the step graph fed the states after a p-step prefix (PyTorch prefill of seeded random
inputs): the exported step graphs have fixed-size states, so this measures whether the position changes the cost
(``STEP_NOTES`` says per family what to expect), not how a bigger cache would cost."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from edgekit.artifact import FAILED, Manifest, artifact_problem, bundle_path
from edgekit.benchmarking.host import bench_torch
from edgekit.benchmarking.seq import export_graph, graph_inputs, graph_outputs, time_artifact
from edgekit.errors import EdgekitError
from edgekit.models.base import ExportGraph

SWEEP_RUNS, SWEEP_WARMUP = 50, 5  # per point at most: a curve needs medians, not the headline's 200 runs
POINT_BUDGET_S = 0.5  # timed seconds per point, after at least 5 runs (a slow point stops early)
PARITY_RTOL = 1e-3  # fp32 vs PyTorch: |Δ| past this fraction of the outputs' range (at least 1) fails the point
KEEP = ("status", "median_ms", "p90_ms", "min_ms", "runs", "max_abs_diff", "export_seconds")


def _ssm_note(model: Any) -> str:
    c = model.config
    layers, heads = f"{c.n_layers} layer{'s' * (c.n_layers != 1)}", c.expand * c.d_model // c.head_dim
    return (f"The SSM's state is a fixed size ({layers} × {heads} heads × {c.head_dim} × {c.d_state}, plus the "
            "conv window): every step does the same work at any position, "
            "so a flat line is expected; a rising one would be runtime overhead, not the model.")


def _transformer_note(model: Any) -> str:
    slots = model.config.max_context
    return (f"The KV cache has a fixed {slots} slots: every step attends over all {slots} (slots not filled yet are "
            "masked), so the step's work does not grow with the position and a flat line is expected. What does "
            f"grow it is the cache size (max_context = {slots}, fixed when the model is built): a model built with "
            "twice the slots does about twice the attention work per step (benchmarks/seq_scaling.py sweeps it).")


# model family → what a step-vs-context curve should look like for it (shown under the plot)
STEP_NOTES: dict[str, Callable[[Any], str]] = {"ssm": _ssm_note, "transformer": _transformer_note}


def sequence_sweep(model: Any, formats: Sequence[str], lengths: Sequence[int], contexts: Sequence[int], *,
                   threads: int, warmup: int, runs: int, bundle: Path | None = None,
                   manifest: Manifest | None = None) -> dict[str, Any]:
    """Prefill latency at each of ``lengths`` and step latency at each of ``contexts`` for ``model`` (an edgekit
    sequence model), in each of ``formats`` and PyTorch eager; bundle artifacts are reused where they fit.
    Returns the report section: timing used, ``prefill`` and ``step`` points, the family's ``step_note`` and the
    seconds it took."""
    if not any(g.name == "step" for g in model.export_graphs()):
        raise EdgekitError(f"sequence sweep: {type(model).__name__} has no step graph; it applies to sequence models")
    start = time.perf_counter()
    timing = {"threads": threads, "warmup": min(warmup, SWEEP_WARMUP), "runs": min(runs, SWEEP_RUNS),
              "budget_s": POINT_BUDGET_S}
    with tempfile.TemporaryDirectory(prefix="edgekit-sweep-") as folder:
        finder = _Artifacts(bundle, manifest, Path(folder))
        step = _step_points(model, list(formats), list(contexts), finder, timing)
        prefill = _prefill_points(model, list(formats), list(lengths), finder, timing)
    note = STEP_NOTES.get(getattr(model, "family_name", ""))
    return {**timing, "lengths": list(lengths), "contexts": list(contexts), "prefill": prefill, "step": step,
            "step_note": note(model) if note and contexts else None,
            "seconds": round(time.perf_counter() - start, 2)}


class _Artifacts:
    """Where each (graph, format) artifact comes from: the bundle's fp32 one, else exported once into ``folder``;
    remembers which formats cannot run here, so that nothing more is exported for them."""

    def __init__(self, bundle: Path | None, manifest: Manifest | None, folder: Path) -> None:
        self.bundle, self.folder = bundle, folder
        self.entries = manifest.artifacts if manifest is not None else []
        self.not_run: dict[str, str] = {}
        self.exported: dict[tuple[str, str], tuple[Path | None, dict[str, Any]]] = {}

    def get(self, graph: ExportGraph, fmt: str) -> tuple[Path | None, dict[str, Any]]:
        """The artifact's path and the facts of its origin (``source``, ``export_seconds``), or None and why not."""
        if fmt in self.not_run:
            return None, {"status": self.not_run[fmt]}
        for e in self.entries:
            if (e.graph, e.format, e.precision) == (graph.name, fmt, "fp32") and e.file and e.status != FAILED \
                    and self.bundle is not None and not artifact_problem(self.bundle, e):
                return bundle_path(self.bundle, e.file), {"source": f"bundle: {e.file}"}
        if (graph.name, fmt) not in self.exported:
            self.exported[graph.name, fmt] = self._export(graph, fmt)
        return self.exported[graph.name, fmt]

    def _export(self, graph: ExportGraph, fmt: str) -> tuple[Path | None, dict[str, Any]]:
        try:
            path, seconds = export_graph(graph, fmt, self.folder)
        except Exception as exc:  # noqa: BLE001 - one bad point must not lose the sweep
            return None, {"status": f"failed: export: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"}
        return path, {"source": "exported for the sweep", "export_seconds": round(seconds, 2)}

    def measure(self, graph: ExportGraph, fmt: str, inputs: tuple[torch.Tensor, ...],
                want: list[np.ndarray], timing: dict[str, Any]) -> dict[str, Any]:
        path, row = self.get(graph, fmt)
        if path is None:
            return row
        timed = time_artifact(fmt, path, graph_inputs(inputs), want, **timing)
        bound = PARITY_RTOL * max([1.0, *(float(np.abs(w).max()) for w in want)])
        if "error" in timed:
            timed = {"status": f"failed: {timed['error']}"}
        elif "max_abs_diff" in timed and not timed["max_abs_diff"] <= bound:  # NaN fails too
            timed = {"status": f"failed: differs from PyTorch (max |Δ| {timed['max_abs_diff']:.3g} > {bound:.3g}): "
                               "a wrong artifact's latency is not a point",
                     **({"max_abs_diff": timed["max_abs_diff"]} if np.isfinite(timed["max_abs_diff"]) else {})}
        elif str(timed.get("status", "")).startswith("not run"):
            self.not_run[fmt] = timed["status"]
        return row | {"status": "ok"} | timed


def _point(key: str, n: int, fmt: str, row: dict[str, Any]) -> dict[str, Any]:
    precision = "" if fmt == "pytorch" else "fp32"
    return {key: n, "format": fmt, "precision": precision, "source": row.get("source", ""),
            **{k: row[k] for k in KEEP if k in row}}


def _torch_row(graph: ExportGraph, inputs: tuple[torch.Tensor, ...], timing: dict[str, Any]) -> dict[str, Any]:
    stats = bench_torch(graph.module, inputs, **timing).latency
    return {"status": "ok", "source": "torch eager", **stats.to_dict()}


def _prefill_points(model: Any, formats: list[str], lengths: list[int], finder: _Artifacts,
                    timing: dict[str, Any]) -> list[dict[str, Any]]:
    points = []
    for n in lengths:
        try:
            graph = next(g for g in model.export_graphs((n,)) if g.name == f"prefill_L{n}")
        except EdgekitError as exc:
            points.append({"length": n, "format": "all", "precision": "", "status": f"skipped: {exc}"})
            continue
        want = graph_outputs(graph, graph.example_inputs)
        points.append(_point("length", n, "pytorch", _torch_row(graph, graph.example_inputs, timing)))
        points += [_point("length", n, fmt, finder.measure(graph, fmt, graph.example_inputs, want, timing))
                   for fmt in formats]
    return points


def _step_points(model: Any, formats: list[str], contexts: list[int], finder: _Artifacts,
                 timing: dict[str, Any]) -> list[dict[str, Any]]:
    graph = next(g for g in model.export_graphs() if g.name == "step")
    slots = getattr(model.config, "max_context", None)
    points = []
    for p in contexts:
        if slots is not None and p > slots:
            points.append({"context": p, "format": "all", "precision": "", "status": (
                f"skipped: past max_context = {slots} the step attends to the last {slots} positions (same work)")})
            continue
        inputs = step_inputs(model, p)
        want = graph_outputs(graph, inputs)
        points.append(_point("context", p, "pytorch", _torch_row(graph, inputs, timing)))
        points += [_point("context", p, fmt, finder.measure(graph, fmt, inputs, want, timing)) for fmt in formats]
    return points


@torch.no_grad()
def step_inputs(model: Any, position: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The step graph's inputs at ``position``: the states after a ``position``-step prefix of seeded random
    inputs (PyTorch prefill; zero states at 0) and the next input."""
    torch.manual_seed(seed)
    window = model.head.example_inputs(position + 1)
    states = model.prefill(window[..., :position])[1:] if position else model.init_state(1)
    return (model.head.step_slice(window, position), *states)
