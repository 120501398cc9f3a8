"""The whole job: recipe → checkpoint → artifacts (verified) → benchmarks → report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edgekit.adapter_bundle import package_adapters, unsupported
from edgekit.artifact import FAILED, Manifest, bundle_lock, load_manifest
from edgekit.benchmarking.host import bench_bundle, bench_torch
from edgekit.benchmarking.result import BenchResult
from edgekit.benchmarking.sweep import sequence_sweep
from edgekit.converters.base import CONVERTERS, ModelSource
from edgekit.conversion import convert_graphs
from edgekit.documents import write_documents
from edgekit.io import atomic_write_text, check_output_dir
from edgekit.lora.step import adapt_step
from edgekit.placement import PlacementGateFailed, check_required
from edgekit.progress import status
from edgekit.recipe import BenchSpec, Recipe
from edgekit.report.html import write_html_report
from edgekit.report.rows import build_rows
from edgekit.sources import graph_sources, load_source, reference_for
from edgekit.training.run import train_recipe
from edgekit.verify import ReferenceData
from edgekit.verify.bundle import golden_reference

REPORT = "report.json"


@dataclass
class RunOutcome:
    report_path: Path
    report: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        gate = self.report.get("placement_gate") or {}
        return all(r["status"] != FAILED for r in self.rows) and gate.get("passed", True)


def run_pipeline(recipe: Recipe, out_dir: str | Path, overwrite: bool = False,
                 command: Sequence[str] | None = None) -> RunOutcome:
    """Train, convert to every format of the recipe, verify, benchmark, and write report.json and report.html
    beside it (``command``: the command line the page records). ``out_dir`` is checked first (writable; empty or
    edgekit's own unless ``overwrite``)."""
    out = check_output_dir(out_dir, "run", overwrite)
    clock = _Stopwatch()
    status(f"[bold]1/4 train[/] {recipe.name} → {out / 'checkpoint'}")
    checkpoint, trained = train_recipe(recipe, out)
    clock.lap("train")
    adapted = None
    if recipe.adapt.enabled:
        status(f"[bold]1b adapt[/] LoRA r={recipe.adapt.rank} on {recipe.adapt.domain or recipe.adapt.data}")
        adapted = adapt_step(recipe, checkpoint, out)
        clock.lap("adapt")
    source = load_source(checkpoint)
    sources = graph_sources(source)
    references = [reference_for(s) for s in sources]
    reference = references[0]
    status(f"[bold]2/4 convert + verify[/] {', '.join(recipe.export.formats)} on "
           f"{'; '.join(r.description for r in references)}")
    manifest = convert_graphs(sources, list(recipe.export.formats), out / "bundle", references,
                              quant=recipe.export.quant_spec(), threads=recipe.bench.threads,
                              overwrite=overwrite, progress=status)
    clock.lap("convert_and_verify")
    gate = placement_gate(manifest, recipe)
    status(f"[bold]3/4 bench[/] {recipe.bench.threads} threads, {recipe.bench.warmup} warm-up, {recipe.bench.runs} runs")
    results = bench_everything(sources, out / "bundle", manifest, references, recipe.bench)
    clock.lap("bench")
    extra: dict[str, Any] = {}
    if recipe.bench.seq_lengths or recipe.bench.contexts:
        extra["sequence_sweep"] = sweep_step(recipe, source.module, out / "bundle", manifest)
        clock.lap("sequence_sweep")
    rows = None
    if adapted is not None:
        rows, extra = _adapter_bundle(recipe, checkpoint, adapted, out, manifest, results, reference)
        clock.lap("adapt_package")
    status("[bold]4/4 report[/]")
    outcome = write_report(out / REPORT, results, manifest, reference, rows=rows, extra={"bundle": str(out / "bundle"),
        "recipe": recipe.to_dict(), "checkpoint": str(checkpoint), "training": trained.metrics,
        "stage_seconds": clock.laps, **({"placement_gate": gate} if gate else {}), **extra,
    })
    with bundle_lock(out / "bundle"):  # again, now that the report has the latencies the documents cite
        write_documents(out / "bundle", load_manifest(out / "bundle"))
    write_html_report(outcome.report_path, command=command, overwrite=overwrite)
    return outcome


def sweep_step(recipe: Recipe, model: Any, bundle: Path, manifest: Manifest) -> dict[str, Any]:
    """The recipe's ``[bench] seq_lengths`` / ``contexts`` sweep (``benchmarking.sweep``) for the report."""
    b = recipe.bench
    status(f"[bold]3c sequence sweep[/] prefill at L = {list(b.seq_lengths) or 'none'}, "
           f"step at context = {list(b.contexts) or 'none'}")
    return sequence_sweep(model, list(recipe.export.formats), sorted(b.seq_lengths), sorted(b.contexts),
                          threads=b.threads, warmup=b.warmup, runs=b.runs, bundle=bundle, manifest=manifest)


def placement_gate(manifest: Manifest, recipe: Recipe) -> dict[str, Any] | None:
    """The recipe's ``[export] require`` gate on the bundle (None without one): passed or the reason; a failed gate
    fails the run after it finished (its report is written), as ``edgekit convert --require`` does."""
    export = recipe.export
    if not export.require:
        return None
    gate: dict[str, Any] = {"require": export.require, "min_coverage": export.min_coverage}
    try:
        gate.update(passed=True, lines=check_required(manifest.artifacts, export.require, export.min_coverage / 100))
    except PlacementGateFailed as exc:
        gate.update(passed=False, message=str(exc))
        status(f"[bold red]placement gate failed[/]: {exc}")
    return gate


def _adapter_bundle(recipe: Recipe, checkpoint: Path, adapted, out: Path, manifest: Manifest,
                    results: list[BenchResult], reference: ReferenceData) -> tuple[list[dict[str, Any]] | None, dict]:
    """The recipe's adapter in the report, and (``adapt.package``) base + adapter packaged and benched."""
    extra: dict[str, Any] = {"adaptation": {"adapter": str(adapted.path), **adapted.meta}}
    if not recipe.adapt.package:
        return None, extra
    status(f"[bold]3b package adapter[/] {', '.join(recipe.export.formats)} → {out / 'bundle_adapters'}")
    adapter_rows, extra["adapter_bundle"] = package_step(recipe, checkpoint, adapted.path, out)
    return build_rows(manifest, results, torch_accuracy(reference)) + adapter_rows, extra


def package_step(recipe: Recipe, checkpoint: Path, adapter_path: Path,
                 out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Package base + adapter into ``out/bundle_adapters`` for the recipe's formats that support its
    precision, bench every variant and switching; returns report rows and a report section."""
    spec = recipe.export.quant_spec()
    skipped = {fmt: reason for fmt in recipe.export.formats
               if (reason := unsupported(CONVERTERS.get(fmt), spec)) is not None}
    formats = [fmt for fmt in recipe.export.formats if fmt not in skipped]
    bundle = out / "bundle_adapters"
    section: dict[str, Any] = {"bundle": str(bundle), "skipped": skipped}
    if not formats:
        return [], section
    manifest = package_adapters(checkpoint, [adapter_path], formats, bundle, quant=spec, threads=recipe.bench.threads)
    b = recipe.bench
    results = bench_bundle(bundle, manifest, list(golden_reference(bundle).inputs[0]),
                           threads=b.threads, warmup=b.warmup, runs=b.runs)
    section["artifacts"] = [{"file": e.file, "format": e.format, "status": e.status, "error": e.error,
                             "size_bytes": e.size_bytes, "variants": e.variants,
                             **{k: e.verification.get(k) for k in ("base_size_bytes", "size_ratio_vs_base")}}
                            for e in manifest.artifacts]
    return build_rows(manifest, results), section


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


def bench_everything(sources: list[ModelSource], bundle: Path, manifest: Manifest, references: list[ReferenceData],
                     spec: BenchSpec) -> list[BenchResult]:
    """PyTorch eager (per graph) plus every artifact, on the first reference input of each graph."""
    import torch

    rows = []
    for source, reference in zip(sources, references):
        row = bench_torch(source.module, tuple(torch.from_numpy(x) for x in reference.inputs[0]),
                          threads=spec.threads, warmup=spec.warmup, runs=spec.runs)
        if source.graph:
            row.artifact, row.extra["graph"] = f"pytorch:{source.graph}", source.graph
        rows.append(row)
    rows += bench_bundle(bundle, manifest, list(references[0].inputs[0]),
                         threads=spec.threads, warmup=spec.warmup, runs=spec.runs)
    return rows


def torch_accuracy(reference: ReferenceData) -> float | None:
    if reference.labels is None:
        return None
    hits = sum(int(out[0].argmax()) == int(label) for out, label in zip(reference.outputs, reference.labels))
    return hits / len(reference)


def write_report(path: Path, results: list[BenchResult], manifest: Manifest | None, reference: ReferenceData | None,
                 extra: dict[str, Any] | None = None, rows: list[dict[str, Any]] | None = None) -> RunOutcome:
    """Write the report JSON (rows, benchmarks, manifest) to ``path`` and return it with its rows."""
    if rows is None:
        rows = build_rows(manifest, results, torch_accuracy(reference) if reference else None)
    report = {
        **(extra or {}),
        "reference": reference.description if reference else None,
        "rows": rows,
        "bench": [r.to_dict() for r in results],
        "manifest": manifest.to_dict() if manifest else None,
    }
    atomic_write_text(path, json.dumps(report, indent=2, default=str))
    return RunOutcome(path, report, rows)

