"""Ahead-of-time NPU compilation of a bundle's verified .tflite, recorded in the manifest."""

from __future__ import annotations

from pathlib import Path

from edgekit.artifact import EXPORTED, ArtifactEntry, Manifest, bundle_lock, bundle_path, record_entries
from edgekit.converters.tflite.npu import NPU_COMPILERS, compile_npu, parse_npu_target
from edgekit.errors import EdgekitError
from edgekit.io import sha256_path, size_bytes


def check_npu_target(target: str) -> tuple[str, str]:
    """``VENDOR:SOC`` syntax and a registered vendor, checked before anything is converted."""
    vendor, soc = parse_npu_target(target)
    if vendor not in NPU_COMPILERS:
        raise EdgekitError(f"NPU vendor {vendor!r} in {target!r} is unknown; VENDOR:SOC with VENDOR one of: "
                           f"{', '.join(NPU_COMPILERS.names())} (e.g. qualcomm:SM8650)")
    if not soc.replace("_", "").replace("-", "").isalnum():
        raise EdgekitError(f"NPU SoC {soc!r} in {target!r} is not a SoC name like SM8650")
    return vendor, soc


def compile_bundle_for_npu(bundle: Path, manifest: Manifest, target: str,
                           tflite: ArtifactEntry | None = None) -> ArtifactEntry:
    """Compile the bundle's verified TFLite artifact (``tflite``: that entry; default the bundle's first) for
    ``target`` (``qualcomm:SM8650``)."""
    parse_npu_target(target)
    tflite = tflite or manifest.entry("tflite")
    if tflite is None or tflite.status != "verified" or not tflite.file:
        raise EdgekitError("--npu needs a verified TFLite artifact; add tflite to --to")
    compiled = compile_npu(bundle_path(bundle, tflite.file), target, bundle)
    entry = ArtifactEntry(
        format="tflite", precision=tflite.precision, status=EXPORTED, file=compiled.name,
        runtime=f"litert-npu ({target})", size_bytes=size_bytes(compiled), sha256=sha256_path(compiled),
        inputs=tflite.inputs, outputs=tflite.outputs, compiled_for=target,
        verification={"status": f"not run: needs a phone with {target}"},
    )
    with bundle_lock(bundle):
        record_entries(bundle, manifest, [entry])
    return entry
