"""Join a bundle's manifest with benchmark results into report rows (one per artifact and target)."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgekit.artifact import EXPORTED, FAILED, VERIFIED, Manifest
from edgekit.benchmarking.result import BenchResult
from edgekit.placement.report import placement_cell
from edgekit.verify.parity import MIL_REFERENCE

STATUS_MARK = {VERIFIED: "✅", EXPORTED: "❎", FAILED: "❌"}


def build_rows(manifest: Manifest | None, results: list[BenchResult], torch_accuracy: float | None = None,
               *, unbenched: bool = True) -> list[dict[str, Any]]:
    """Rows for the table and report.json; speed-up is relative to the PyTorch eager row.

    With ``unbenched``, manifest artifacts without a benchmark result get a row too."""
    baseline = next((r for r in results if r.format == "pytorch" and r.latency), None)
    # a sequence model has a PyTorch row per graph (extra["graph"]); each artifact is compared with its own
    baselines = {r.extra.get("graph", ""): r for r in results if r.format == "pytorch" and r.latency}
    entries = {e.file: e for e in manifest.artifacts} if manifest else {}
    rows = []
    for result in results:
        entry = entries.get(result.artifact) or _variant_entry(entries, result)
        graph = entry.graph if entry else result.extra.get("graph", "")
        rows.append(_row(result, entry, baselines.get(graph, baseline), torch_accuracy))
    bench_files = {r.artifact for r in results}
    for entry in manifest.artifacts if manifest and unbenched else []:
        if entry.file not in bench_files and entry.format not in bench_files:
            rows.append(_row(BenchResult(entry.file or entry.format, entry.format, entry.runtime, "host",
                                         status=f"failed: {entry.error}" if entry.error else ""),
                             entry, baselines.get(entry.graph, baseline), None))
    return rows


def _variant_entry(entries: dict, result: BenchResult):
    """A multi-adapter artifact's row per variant (``file#variant``) shows that variant's verification."""
    file, _, variant = result.artifact.partition("#")
    entry = entries.get(file) if variant else None
    if entry is None:
        return None
    found = next((v["verification"] for v in entry.variants if v["name"] == variant), entry.verification)
    return dataclasses.replace(entry, verification=found)


def _row(result: BenchResult, entry, baseline: BenchResult | None, torch_accuracy: float | None) -> dict[str, Any]:
    verification = entry.verification if entry else {}
    if result.format == "pytorch":
        status, note = VERIFIED, "reference"
    elif entry is None:
        status, note = (EXPORTED if result.latency else FAILED), result.status
    else:
        status = entry.status
        note = entry.error or ("" if verification.get("status") == "passed" else verification.get("status", ""))
        if verification.get("method") == MIL_REFERENCE:
            note = f"{note or 'verified'} by the MIL reference evaluator; runtime {verification.get('runtime', '')}"
    if result.status.startswith("failed"):
        status, note = FAILED, result.status
    elif result.status.startswith("not run") and status != FAILED and result.status not in note:
        note = "; ".join(dict.fromkeys(filter(None, [note, result.status])))
    latency = result.latency
    speedup = baseline.latency.median_ms / latency.median_ms if baseline and latency and latency.median_ms else None
    return {
        "status": status,
        "mark": STATUS_MARK[status],
        "artifact": result.artifact,
        "format": result.format,
        "precision": entry.precision if entry else "fp32",
        "graph": entry.graph if entry else result.extra.get("graph", ""),
        "runtime": result.runtime,
        "target": result.target,
        "size_bytes": entry.size_bytes if entry else None,
        "accuracy": (torch_accuracy if result is baseline or not result.extra.get("graph") else None)
        if result.format == "pytorch" else verification.get("accuracy"),
        "max_abs_diff": verification.get("max_abs_diff"),
        "top1_agreement": verification.get("top1_agreement"),
        "median_ms": latency.median_ms if latency else None,
        "p90_ms": latency.p90_ms if latency else None,
        "min_ms": latency.min_ms if latency else None,
        "runs": latency.runs if latency else None,
        "threads": latency.threads if latency else None,
        "speedup_vs_pytorch": speedup,
        "placement": placement_cell(result.extra.get("placement") or (entry.placement if entry else {})),
        "note": note,
    }
