"""`edgekit verify BUNDLE`: check files against the manifest and re-run parity against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import FAILED, Manifest, load_manifest
from edgekit.converters import CONVERTERS
from edgekit.errors import EdgekitError
from edgekit.io import sha256_path
from edgekit.verify.parity import ReferenceData


def reference_for_bundle(bundle: Path, manifest: Manifest, graph: str = "") -> ReferenceData:
    """The source model's held-out data when the source is still there unchanged, else the golden file."""
    from edgekit.sources import graph_sources, load_source, reference_for

    src = manifest.source
    path = Path(src.get("path", ""))
    if path.exists():
        source = load_source(path)
        if source.sha256 == src.get("sha256"):
            match = [g for g in graph_sources(source, tuple(src.get("lengths", ()))) if g.graph == graph]
            if match:
                return reference_for(match[0])
    return golden_reference(bundle, graph)


def golden_reference(bundle: Path, graph: str = "") -> ReferenceData:
    from edgekit.convert import golden_name

    path = bundle / golden_name(graph)
    if not path.is_file():
        raise EdgekitError(f"cannot verify {bundle}: its source model is gone and it has no {path.name}")
    with np.load(path, allow_pickle=False) as z:
        ins = [z[k] for k in sorted(k for k in z.files if k.startswith("input_"))]
        outs = [z[k] for k in sorted(k for k in z.files if k.startswith("output_"))]
        labels = z["labels"] if "labels" in z.files else None
    n = len(ins[0])
    return ReferenceData([tuple(a[i:i + 1] for a in ins) for i in range(n)],
                         [[a[i:i + 1] for a in outs] for i in range(n)], labels, f"{path.name} ({n})")


def verify_bundle(bundle: str | Path, threads: int = 2) -> tuple[Manifest, list[dict[str, Any]], str]:
    """Per artifact: file present, sha256 as recorded, metadata embedded, parity within tolerance."""
    from edgekit.convert import verify_artifact

    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    references: dict[str, ReferenceData] = {}  # one per graph, built when first needed
    results = []
    for entry in manifest.artifacts:
        if entry.status == FAILED or not entry.file:
            results.append({"format": entry.format, "file": entry.file, "status": "failed",
                            "reason": f"conversion had failed: {entry.error}"})
            continue
        if entry.graph not in references:
            references[entry.graph] = reference_for_bundle(bundle, manifest, entry.graph)
        results.append(_verify_entry(bundle, entry, references[entry.graph], threads, verify_artifact))
    return manifest, results, "; ".join(r.description for r in references.values())


def _verify_entry(bundle: Path, entry, reference: ReferenceData, threads: int, verify_artifact) -> dict[str, Any]:
    path = bundle / entry.file
    out: dict[str, Any] = {"format": entry.format, "file": entry.file}
    if not path.exists():
        return out | {"status": "failed", "reason": f"{entry.file} is missing"}
    if sha256_path(path) != entry.sha256:
        return out | {"status": "failed", "reason": f"{entry.file} changed since conversion (sha256 differs)"}
    conv = CONVERTERS.get(entry.format)
    try:
        info = conv.inspect(path)
        if "edgekit" not in info.metadata:
            return out | {"status": "failed", "reason": "edgekit metadata is not embedded"}
        if entry.variants:  # base + LoRA adapters: every variant against its own golden file
            from edgekit.lora.package import reverify

            parity = reverify(bundle, entry, threads)
        else:
            parity = verify_artifact(conv, path, reference, entry.precision, threads)
    except EdgekitError as exc:
        return out | {"status": "failed", "reason": str(exc)}
    return out | {"status": parity["status"], "verification": parity}
