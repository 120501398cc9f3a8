"""The whole job: recipe → checkpoint → artifacts (verified) → benchmarks → report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.artifact import FAILED, Manifest
from edgekit.bench import bench_bundle, bench_torch
from edgekit.bench.result import BenchResult
from edgekit.converters import ModelSource
from edgekit.convert import convert_model
from edgekit.io import atomic_write_text
from edgekit.progress import status
from edgekit.recipe import BenchSpec, Recipe
from edgekit.report import build_rows
from edgekit.sources import load_source, reference_for
from edgekit.train import train_recipe
from edgekit.verify import ReferenceData

REPORT = "report.json"


@dataclass
class RunOutcome:
    report_path: Path
    report: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(r["status"] != FAILED for r in self.rows)


def run_pipeline(recipe: Recipe, out_dir: str | Path) -> RunOutcome:
    """Train, convert to every format of the recipe, verify, benchmark, and write report.json."""
    out = Path(out_dir)
    clock = _Stopwatch()
    status(f"[bold]1/4 train[/] {recipe.name} → {out / 'checkpoint'}")
    checkpoint, trained = train_recipe(recipe, out)
    clock.lap("train")
    source = load_source(checkpoint)
    reference = reference_for(source)
    status(f"[bold]2/4 convert + verify[/] {', '.join(recipe.export.formats)} on {reference.description}")
    manifest = convert_model(source, list(recipe.export.formats), out / "bundle", reference,
                             precision=recipe.export.precision, threads=recipe.bench.threads)
    clock.lap("convert_and_verify")
    status(f"[bold]3/4 bench[/] {recipe.bench.threads} threads, {recipe.bench.warmup} warm-up, {recipe.bench.runs} runs")
    results = bench_everything(source, out / "bundle", manifest, reference, recipe.bench)
    clock.lap("bench")
    status("[bold]4/4 report[/]")
    return write_report(out, results, manifest, reference, extra={
        "recipe": recipe.to_dict(), "checkpoint": str(checkpoint), "training": trained.metrics,
        "stage_seconds": clock.laps,
    })


class _Stopwatch:
    """Wall time of each pipeline stage, in seconds."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = self._start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self.laps["total"] = round(now - self._start, 2)
        self._last = now


def bench_everything(source: ModelSource, bundle: Path, manifest: Manifest, reference: ReferenceData,
                     spec: BenchSpec) -> list[BenchResult]:
    """PyTorch eager plus every artifact, on the first reference input."""
    import torch

    sample = reference.inputs[0]
    rows = [bench_torch(source.module, tuple(torch.from_numpy(x) for x in sample),
                        threads=spec.threads, warmup=spec.warmup, runs=spec.runs)]
    rows += bench_bundle(bundle, manifest, list(sample), threads=spec.threads, warmup=spec.warmup, runs=spec.runs)
    return rows


def torch_accuracy(reference: ReferenceData) -> float | None:
    if reference.labels is None:
        return None
    hits = sum(int(out[0].argmax()) == int(label) for out, label in zip(reference.outputs, reference.labels))
    return hits / len(reference)


def write_report(out: Path, results: list[BenchResult], manifest: Manifest | None, reference: ReferenceData | None,
                 extra: dict[str, Any] | None = None) -> RunOutcome:
    """Write ``out/report.json`` (rows, benchmarks, manifest) and return the rows for printing."""
    rows = build_rows(manifest, results, torch_accuracy(reference) if reference else None)
    report = {
        **(extra or {}),
        "bundle": str(out / "bundle"),
        "reference": reference.description if reference else None,
        "rows": rows,
        "bench": [r.to_dict() for r in results],
        "manifest": manifest.to_dict() if manifest else None,
    }
    path = out / REPORT
    atomic_write_text(path, json.dumps(report, indent=2, default=str))
    return RunOutcome(path, report, rows)

