"""`edgekit convert CKPT --adapters A,B`: base + N adapters in one bundle, base weights shared per format.

Every variant of every artifact is verified against the original PyTorch model (batch norm not
folded, adapter not merged) on that variant's own data: the base on the recipe's test split, each
adapter on its domain's held-out test split. The manifest lists the adapters and, per artifact,
how an app selects each variant; the size of the base alone in the same format is recorded beside it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from edgekit.artifact import FAILED, ArtifactEntry, Manifest, artifact_metadata, bundle_lock, record_entries
from edgekit.checkpoint import Checkpoint, load_checkpoint
from edgekit.converters import CONVERTERS, ModelSource, RunnerUnavailable
from edgekit.conversion import manifest_for, write_entry, write_golden
from edgekit.errors import EdgekitError
from edgekit.io import check_output_dir, remove_stale_staging, sha256_path, size_bytes
import edgekit.converters.coreml.adapters, edgekit.converters.onnx.adapters, edgekit.converters.tflite.adapters  # noqa: F401,E401  (register the packagers)
from edgekit.lora.adapter import Adapter, load_adapters
from edgekit.lora.export import domain_test_split, reference_on
from edgekit.lora.fold import export_variant, fold_batchnorm
from edgekit.lora.pack_base import BASE, PACKAGERS, Packager, VariantGraph, golden_graph
from edgekit.quant.spec import QuantSpec, as_spec
from edgekit.verify import MIL_REFERENCE, ReferenceData, compare, tolerance_for

SIZE_GOAL = 1.35  # base + adapters should stay within this multiple of the base alone


def build_variants(checkpoint: Checkpoint, base: ModelSource, adapters: list[Adapter],
                   lengths: tuple[int, ...] = ()) -> list[list[VariantGraph]]:
    """Per graph of the model, the base and one variant per adapter, each with its PyTorch reference."""
    from edgekit.sources import graph_sources, reference_for

    folded, scales = fold_batchnorm(checkpoint.model)
    per_variant: list[list[VariantGraph]] = []
    for adapter in [None, *adapters]:
        name = BASE if adapter is None else adapter.name
        module = export_variant(folded, scales, adapter)
        truth = checkpoint.model if adapter is None else adapter.applied_to(checkpoint)
        exported = graph_sources(dataclasses.replace(base, module=module, exported=None), lengths)
        originals = graph_sources(dataclasses.replace(base, module=truth, exported=None), lengths)
        found = domain_test_split(adapter, checkpoint) if adapter is not None else None
        refs = [reference_on(o, *found) if found else reference_for(o) for o in originals]
        per_variant.append([VariantGraph(name, adapter, e, r) for e, r in zip(exported, refs)])
    return [list(graph) for graph in zip(*per_variant)]  # [graph][variant]


def package_adapters(checkpoint: str | Path, adapter_paths: list[str | Path], formats: list[str], bundle: str | Path,
                     *, precision: str | QuantSpec = "fp32", threads: int = 2, lengths: tuple[int, ...] = (),
                     overwrite: bool = False) -> Manifest:
    """Write base + adapters into ``bundle`` for each format; only verified artifacts are kept, and each
    outcome is in the manifest as soon as it is known (under the bundle's lock)."""
    from edgekit.sources import load_source

    spec = as_spec(precision)
    ckpt = load_checkpoint(checkpoint)
    adapters = load_adapters(adapter_paths)
    if not adapters:
        raise EdgekitError("--adapters needs at least one adapter")
    if any(a.name == BASE for a in adapters):
        raise EdgekitError(f"an adapter may not be named {BASE!r} (the variant without adapter is)")
    for a in adapters:
        a.check_base(ckpt)
    packagers = [PACKAGERS.get(fmt) for fmt in formats]
    base = load_source(checkpoint)
    graphs = build_variants(ckpt, base, adapters, lengths)
    for packager in packagers:
        for variants in graphs:
            packager.check(spec, variants)
    bundle = Path(bundle)
    check_output_dir(bundle, "bundle", overwrite)
    with bundle_lock(bundle):  # one writer at a time; the manifest is saved after each artifact
        remove_stale_staging(bundle)
        manifest = manifest_for(dataclasses.replace(base, lengths=tuple(lengths)), bundle, overwrite)
        manifest.adapters = [adapter_summary(a) for a in adapters]
        for variants in graphs:
            for v in variants:
                write_golden(bundle, v.reference, golden_graph(v.name, v.source.graph))
        for variants in graphs:
            for p in packagers:
                package_one(p, variants, bundle, manifest, spec, threads,
                            record=lambda entry: record_entries(bundle, manifest, [entry]))
    return manifest


def adapter_summary(adapter: Adapter) -> dict[str, Any]:
    """What the manifest records of an adapter: identity, base, LoRA shape, domain and metrics."""
    m = adapter.meta
    return {"name": adapter.name, "path": str(adapter.path), "sha256": adapter.sha256, "base_sha256": adapter.base_sha256,
            "domain": m.get("domain"), "data": m.get("data"), "description": m.get("data_description"),
            "rank": m["rank"], "alpha": m["alpha"], "target_modules": m["target_modules"],
            "metric": m.get("metric"), "before": m.get("before"), "after": m.get("after")}


def package_one(packager: Packager, variants: list[VariantGraph], bundle: Path, manifest: Manifest,
                spec: QuantSpec, threads: int, record=None) -> ArtifactEntry:
    """Write one multi-variant artifact, verify every variant, keep it only if all pass; ``record``
    saves its manifest entry (see ``convert.write_entry``)."""
    source = variants[0].source
    conv = CONVERTERS.get(packager.name)
    name = f"{source.artifact_base}_{spec.tag}_adapters{packager.suffix}"
    entry = ArtifactEntry(format=packager.name, precision=spec.tag, status=FAILED, runtime=conv.runtime,
                          graph=source.graph)
    io = _io(source, variants[0].reference)
    metadata = artifact_metadata(manifest, packager.name, spec.tag, *io) | {
        "graph": source.graph, "variants": [v.name for v in variants], "adapters": manifest.adapters}

    def fill(staged: Path) -> None:
        written = packager.write(variants, staged, spec, metadata)
        info = conv.inspect(staged)
        entry.inputs, entry.outputs = [t.to_dict() for t in info.inputs], [t.to_dict() for t in info.outputs]
        entry.op_histogram = info.op_histogram
        results = {v.name: verify_variant(packager, staged, v, spec, threads) for v in variants}
        failed = ["; ".join([n, *r["problems"]]) if r.get("problems") else
                  f"{n}: max |Δ| {r['max_abs_diff']:.3g}, top-1 {r['top1_agreement']:.2%}"
                  for n, r in results.items() if r["status"] == "failed"]
        if failed:
            raise EdgekitError(f"{packager.name} multi-adapter artifact disagrees with PyTorch ({'; '.join(failed)})")
        total = size_bytes(staged) + sum(size_bytes(f) for f in written.side_files)
        entry.size_bytes, entry.sha256 = total, sha256_path(staged)
        entry.variants = [{"name": v.name, "adapter": v.adapter.name if v.adapter else None,
                           "select": written.select[v.name], "verification": results[v.name]} for v in variants]
        base_size = _base_size(packager, variants[0], spec, metadata)
        entry.verification = _bundle_verification(results, variants, total, base_size, written.side_files)
        for f in written.side_files:
            os.replace(f, bundle / f.name)  # beside the artifact, just before it is renamed in

    return write_entry(entry, bundle / name, fill, record)


def _bundle_verification(results: dict[str, dict], variants: list[VariantGraph], total: int, base_size: int,
                         side_files: list[Path]) -> dict[str, Any]:
    """The artifact's verification: the base variant's numbers (for the table), the worst status, sizes."""
    statuses = {r["status"] for r in results.values()}
    return {**results[variants[0].name],
            "status": "passed" if statuses == {"passed"} else sorted(statuses)[0],
            "method": next(iter(results.values()))["method"],
            "base_size_bytes": base_size, "size_ratio_vs_base": total / base_size, "variants": len(variants),
            "side_files": {f.name: {"size_bytes": size_bytes(f), "sha256": sha256_path(f)} for f in side_files}}


def verify_variant(packager: Packager, path: Path, variant: VariantGraph, spec: QuantSpec, threads: int) -> dict:
    """Parity of one variant with PyTorch (its runtime, or the reference evaluator where it cannot run)."""
    tolerance = tolerance_for(spec)
    run = packager.runner(path, variant.name, threads)
    if isinstance(run, RunnerUnavailable):
        reference_run = packager.reference_runner(path, variant.name)
        if reference_run is None:
            return {"status": f"not run: {run.reason}", "method": CONVERTERS.get(packager.name).runtime}
        return compare(reference_run, variant.reference, tolerance, method=MIL_REFERENCE) | {
            "runtime": f"not run: {run.reason}"}
    return compare(run, variant.reference, tolerance, method=CONVERTERS.get(packager.name).runtime)


def _base_size(packager: Packager, base: VariantGraph, spec: QuantSpec, metadata: dict[str, Any]) -> int:
    """Size of the base alone written by the same packager (the yardstick of the size goal)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-base-") as tmp:
        path = Path(tmp) / f"base{packager.suffix}"
        written = packager.write([base], path, spec, metadata | {"variants": [base.name], "adapters": []})
        return size_bytes(path) + sum(size_bytes(f) for f in written.side_files)


def _io(source: ModelSource, reference: ReferenceData | None) -> tuple[list[dict], list[dict]]:
    inputs = [{"name": n, "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
              for n, x in zip(source.input_names, source.example_inputs)]
    first = reference.outputs[0] if reference is not None and len(reference) else []
    outputs = [{"name": n, "shape": list(o.shape), "dtype": o.dtype.name} for n, o in zip(source.output_names, first)]
    return inputs, outputs


def reverify(bundle: Path, entry: ArtifactEntry, threads: int = 2) -> dict[str, Any]:
    """`edgekit verify` of a multi-adapter artifact: side files unchanged, every variant on its golden file."""
    from edgekit.artifact import bundle_path
    from edgekit.lora.bench import side_file_problem
    from edgekit.verify.bundle import golden_reference

    problem = side_file_problem(bundle, entry)  # side and adapter files inside the bundle, as recorded
    if problem:
        return {"status": "failed", "method": entry.runtime, "reason": problem}
    packager = PACKAGERS.get(entry.format)
    results = {}
    for v in entry.variants:
        reference = golden_reference(bundle, golden_graph(v["name"], entry.graph))
        variant = VariantGraph(v["name"], None, None, reference)  # type: ignore[arg-type]
        results[v["name"]] = verify_variant(packager, bundle_path(bundle, entry.file), variant,
                                            as_spec(entry.precision), threads)
    statuses = {r["status"] for r in results.values()}
    return {**next(iter(results.values())),  # the base variant's numbers for the table
            "status": "passed" if statuses == {"passed"} else sorted(statuses)[0], "variants": results}
