"""The recipe's ``[adapt]`` step inside `edgekit run`: train the adapter, then package base + adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.lora.train import AdaptResult
    from edgekit.recipe import Recipe


def adapt_step(recipe: Recipe, checkpoint: Path, out: Path) -> AdaptResult:
    """Train the recipe's adapter into ``out/adapters/<name>``; returns the AdaptResult."""
    from edgekit.lora.adapter import safe_name
    from edgekit.lora.train import AdaptOptions, adapt_checkpoint

    spec = recipe.adapt
    name = safe_name(spec.name or spec.domain or Path(spec.data).stem)
    options = AdaptOptions(rank=spec.rank, alpha=spec.alpha, targets=tuple(spec.targets), steps=spec.steps,
                           examples=spec.examples, lr=spec.lr, seed=recipe.seed, threads=recipe.train.threads)
    return adapt_checkpoint(checkpoint, out / "adapters" / name, domain=spec.domain or None,
                            data=spec.data or None, options=options, name=name)


def package_step(recipe: Recipe, checkpoint: Path, adapter_path: Path,
                 out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Package base + adapter into ``out/bundle_adapters`` for the recipe's formats that support its
    precision, bench every variant and switching; returns report rows and a report section."""
    from edgekit.bench.host import bench_bundle
    from edgekit.lora.pack_base import PACKAGERS
    from edgekit.lora.package import package_adapters
    from edgekit.report import build_rows
    from edgekit.verify.bundle import golden_reference

    spec = recipe.export.quant_spec()
    formats, skipped = [], {}
    for fmt in recipe.export.formats:
        try:
            PACKAGERS.get(fmt).check(spec, [])
            formats.append(fmt)
        except EdgekitError as exc:
            skipped[fmt] = str(exc)
    bundle = out / "bundle_adapters"
    section: dict[str, Any] = {"bundle": str(bundle), "skipped": skipped}
    if not formats:
        return [], section
    manifest = package_adapters(checkpoint, [adapter_path], formats, bundle, precision=spec,
                                threads=recipe.bench.threads)
    b = recipe.bench
    results = bench_bundle(bundle, manifest, list(golden_reference(bundle).inputs[0]),
                           threads=b.threads, warmup=b.warmup, runs=b.runs)
    section["artifacts"] = [{"file": e.file, "format": e.format, "status": e.status, "error": e.error,
                             "size_bytes": e.size_bytes, "variants": e.variants,
                             **{k: e.verification.get(k) for k in ("base_size_bytes", "size_ratio_vs_base")}}
                            for e in manifest.artifacts]
    return build_rows(manifest, results), section
