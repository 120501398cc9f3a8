"""`edgekit convert CKPT --adapters A,B`: base + N LoRA adapters in one bundle, one artifact per format and
graph whose variants share the base weights (each format's ``Converter.export_many``).

Every variant of every artifact is verified against the original PyTorch model (batch norm not
folded, adapter not merged) on that variant's own data: the base on the recipe's test split, each
adapter on its domain's held-out test split. The manifest lists the adapters and, per artifact,
how an app selects each variant; the size of the base alone in the same format is recorded beside it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgekit.artifact import (BASE, FAILED, ArtifactEntry, Manifest, artifact_metadata, bundle_lock, golden_graph,
                              load_manifest, record_entries)
from edgekit.checkpoint import Checkpoint, load_checkpoint
from edgekit.conversion import io_spec, manifest_for, write_entry, write_golden
from edgekit.converters.base import CONVERTERS, Converter
from edgekit.documents import write_documents
from edgekit.errors import EdgekitError
from edgekit.graph import ModelSource, NamedGraph
from edgekit.io import check_output_dir, remove_stale_staging, sha256_path, size_bytes
from edgekit.lora.adapter import Adapter, load_adapters
from edgekit.lora.export import domain_test_split, reference_on
from edgekit.lora.fold import export_variant, fold_batchnorm
from edgekit.quant.plan import QuantPlan
from edgekit.quant.spec import QuantSpec
from edgekit.sources import graph_sources, load_source, reference_for
from edgekit.verify.bundle import verify_artifact
from edgekit.verify.parity import ReferenceData, failure_text
from edgekit.verify.tolerances import tolerance_for
from edgekit.verify.variants import combined

ADAPTER_SIZE_GOAL = 1.35  # base + adapters should stay within this multiple of the base alone


@dataclass
class Variant:
    """One variant (the base, or the base with one adapter) of one graph of the model."""

    graph: NamedGraph  # BASE or the adapter's name; export form: batch norm folded, lora_B pre-scaled, base shared
    adapter: Adapter | None
    reference: ReferenceData  # the original (unfolded) PyTorch model's outputs on this variant's data


def build_variants(checkpoint: Checkpoint, base: ModelSource, adapters: list[Adapter],
                   lengths: tuple[int, ...] = ()) -> list[list[Variant]]:
    """Per graph of the model, the base and one variant per adapter, each with its PyTorch reference."""
    folded, scales = fold_batchnorm(checkpoint.model)
    per_variant: list[list[Variant]] = []
    for adapter in [None, *adapters]:
        name = BASE if adapter is None else adapter.name
        module = export_variant(folded, scales, adapter)
        truth = checkpoint.model if adapter is None else adapter.applied_to(checkpoint)
        exported = graph_sources(dataclasses.replace(base, module=module, exported=None), lengths)
        originals = graph_sources(dataclasses.replace(base, module=truth, exported=None), lengths)
        found = domain_test_split(adapter, checkpoint) if adapter is not None else None
        refs = [reference_on(o, *found) if found else reference_for(o) for o in originals]
        per_variant.append([Variant(NamedGraph(name, e), adapter, r) for e, r in zip(exported, refs)])
    return [list(graph) for graph in zip(*per_variant)]  # [graph][variant]


def unsupported(conv: Converter, spec: QuantSpec) -> str | None:
    """Why ``conv`` cannot package base + adapters at ``spec`` (its ``multi_graph_schemes``), or None."""
    try:
        conv.check_many(spec)
    except EdgekitError:
        return (f"multi-adapter {conv.name} bundles support {', '.join(conv.multi_graph_schemes)}, not {spec.tag}; "
                "merge one adapter with --adapter instead")
    return None


def package_adapters(checkpoint: str | Path, adapter_paths: list[str | Path], formats: list[str], bundle: str | Path,
                     *, quant: QuantSpec | str = "fp32", threads: int = 2, lengths: tuple[int, ...] = (),
                     overwrite: bool = False) -> Manifest:
    """Write base + adapters into ``bundle`` for each format; only verified artifacts are kept, and each
    outcome is in the manifest as soon as it is known (under the bundle's lock)."""
    spec = QuantSpec.parse(quant)
    ckpt = load_checkpoint(checkpoint)
    adapters = load_adapters(adapter_paths)
    if not adapters:
        raise EdgekitError("--adapters needs at least one adapter")
    if any(a.name == BASE for a in adapters):
        raise EdgekitError(f"an adapter may not be named {BASE!r} (the variant without adapter is)")
    for a in adapters:
        a.check_base(ckpt)
    converters = [CONVERTERS.get(fmt) for fmt in formats]
    for conv in converters:
        if (reason := unsupported(conv, spec)) is not None:
            raise EdgekitError(reason)
    base = load_source(checkpoint)
    graphs = build_variants(ckpt, base, adapters, lengths)
    for conv in converters:
        for variants in graphs:
            conv.check_many(spec, [v.graph for v in variants])
    bundle = Path(bundle)
    check_output_dir(bundle, "bundle", overwrite)
    with bundle_lock(bundle):  # one writer at a time; the manifest is saved after each artifact
        remove_stale_staging(bundle)
        manifest = manifest_for(dataclasses.replace(base, lengths=tuple(lengths)), bundle, overwrite)
        manifest.adapters = [adapter_summary(a) for a in adapters]
        for variants in graphs:
            for v in variants:
                write_golden(bundle, v.reference, golden_graph(v.graph.name, v.graph.source.graph))
        for variants in graphs:
            for conv in converters:
                package_one(conv, variants, bundle, manifest, spec, threads,
                            record=lambda entry: record_entries(bundle, manifest, [entry]))
        return write_documents(bundle, load_manifest(bundle))  # model card + app code of the verified variants


def adapter_summary(adapter: Adapter) -> dict[str, Any]:
    """What the manifest records of an adapter: identity, base, LoRA shape, domain and metrics."""
    m = adapter.meta
    return {"name": adapter.name, "path": str(adapter.path), "sha256": adapter.sha256, "base_sha256": adapter.base_sha256,
            "domain": m.get("domain"), "data": m.get("data"), "description": m.get("data_description"),
            "rank": m["rank"], "alpha": m["alpha"], "target_modules": m["target_modules"],
            "metric": m.get("metric"), "before": m.get("before"), "after": m.get("after")}


def package_one(conv: Converter, variants: list[Variant], bundle: Path, manifest: Manifest, spec: QuantSpec,
                threads: int, record: Callable[[ArtifactEntry], None] | None = None) -> ArtifactEntry:
    """Write one multi-variant artifact, verify every variant, keep it only if all pass; ``record``
    saves its manifest entry (see ``conversion.write_entry``)."""
    source = variants[0].graph.source
    name = f"{source.artifact_base}_{spec.tag}_adapters{conv.suffix}"
    entry = ArtifactEntry(format=conv.name, precision=spec.tag, status=FAILED, runtime=conv.runtime,
                          graph=source.graph)
    metadata = artifact_metadata(manifest, conv.name, spec.tag, *io_spec(source, variants[0].reference)) | {
        "graph": source.graph, "variants": [v.graph.name for v in variants], "adapters": manifest.adapters}
    tolerance = tolerance_for(spec)

    def fill(staged: Path) -> None:
        written = conv.export_many([v.graph for v in variants], staged, spec, metadata)
        info = conv.inspect(staged)
        entry.inputs, entry.outputs = [t.to_dict() for t in info.inputs], [t.to_dict() for t in info.outputs]
        entry.op_histogram = info.op_histogram
        results = {v.graph.name: verify_artifact(conv, staged, v.reference, tolerance, threads, v.graph.name)
                   for v in variants}
        failed = [f"{n}: {failure_text(conv.name, r)}" for n, r in results.items() if r["status"] == "failed"]
        if failed:
            raise EdgekitError(f"{conv.name} multi-adapter artifact disagrees with PyTorch ({'; '.join(failed)})")
        total = size_bytes(staged) + sum(size_bytes(f) for f in written.side_files)
        entry.size_bytes, entry.sha256 = total, sha256_path(staged)
        entry.variants = [{"name": v.graph.name, "adapter": v.adapter.name if v.adapter else None,
                           "select": written.select[v.graph.name], "verification": results[v.graph.name]}
                          for v in variants]
        base_size = _base_size(conv, variants[0], spec, metadata)
        entry.verification = combined(results) | {
            "base_size_bytes": base_size, "size_ratio_vs_base": total / base_size, "variants": len(variants),
            "side_files": {f.name: {"size_bytes": size_bytes(f), "sha256": sha256_path(f)} for f in written.side_files},
            "quantization": QuantPlan(spec).summary()}
        for f in written.side_files:
            os.replace(f, bundle / f.name)  # beside the artifact, just before it is renamed in

    return write_entry(entry, bundle / name, fill, record)


def _base_size(conv: Converter, base: Variant, spec: QuantSpec, metadata: dict[str, Any]) -> int:
    """Size of the base alone written by the same ``export_many`` (the yardstick of the size goal)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-base-") as tmp:
        path = Path(tmp) / f"base{conv.suffix}"
        written = conv.export_many([base.graph], path, spec, metadata | {"variants": [base.graph.name], "adapters": []})
        return size_bytes(path) + sum(size_bytes(f) for f in written.side_files)
