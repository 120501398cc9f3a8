"""Ahead-of-time compilation of a .tflite for an NPU (``edgekit convert --npu qualcomm:SM8650``).

Uses ``ai_edge_litert.aot.aot_compile``. That function does not raise when a backend fails (it
defaults to keep_going=True): it lists the failure in ``failed_backends`` and leaves a 0-byte
.tflite behind. So the result is checked, 0-byte outputs are deleted, and a failure is an error
that names what to install. Compilation happens in a temporary folder inside the output folder
and the finished file is moved into place (no half-written artifact).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import EdgekitError, require
from edgekit.registry import Registry

NPU_COMPILERS: Registry[Callable[[Path, str, Path], Path]] = Registry("NPU vendor")
SDK_PACKAGE = "ai-edge-litert-sdk-qualcomm"


def parse_npu_target(text: str) -> tuple[str, str]:
    """``qualcomm:SM8650`` -> ("qualcomm", "SM8650"); the SoC part is required."""
    vendor, _, soc = text.partition(":")
    if not vendor or not soc:
        raise EdgekitError(f"NPU target {text!r} must look like VENDOR:SOC, e.g. qualcomm:SM8650 "
                           f"(vendors: {', '.join(NPU_COMPILERS.names())})")
    return vendor.lower(), soc.upper()


def compile_npu(model: str | os.PathLike[str], target: str, output_dir: str | os.PathLike[str]) -> Path:
    """Compile ``model`` for ``target`` (VENDOR:SOC) into ``output_dir``; returns the new .tflite."""
    vendor, soc = parse_npu_target(target)
    model_path = Path(model)
    if not model_path.is_file() or model_path.suffix.lower() != ".tflite":
        raise EdgekitError(f"{model_path} is not a .tflite file; NPU compilation starts from a LiteRT model")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return NPU_COMPILERS.get(vendor)(model_path, soc, out)


def _sdk_installed() -> bool:
    try:
        import ai_edge_litert_sdk_qualcomm  # noqa: F401

        return True
    except ImportError:
        return False


def _install_hint() -> str:
    try:
        version = "==" + importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return (f"install Qualcomm's SDK for LiteRT: pip install {SDK_PACKAGE}{version} (it downloads the "
            "Qualcomm AI Runtime (QAIRT) while installing, so install it with network access; an offline "
            "install leaves it without the libraries)")


def _error_details(message: str) -> str:
    """What the log file named in "See /tmp/x.error for details" says went wrong, in a few words.

    The file is the compiler's; it is read and deleted so no temp litter is left behind.
    """
    match = re.search(r"See (\S+\.error) for details", message)
    if not match or not os.path.isfile(match.group(1)):
        return ""
    with open(match.group(1), encoding="utf-8", errors="replace") as fh:
        log = fh.read()
    os.unlink(match.group(1))
    missing = sorted(set(re.findall(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", log)))
    if missing:
        return f"missing librar{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}"
    lines = [ln.strip() for ln in log.splitlines() if re.search(r"\bERROR\b|Failed|failed", ln)]
    return " | ".join(lines[-3:])[:400]


def _delete_empty_outputs(folder: Path) -> list[str]:
    removed = []
    for path in folder.rglob("*.tflite"):
        if path.stat().st_size == 0:
            path.unlink()
            removed.append(path.name)
    return removed


def _failure(result: Any, soc: str, removed: list[str]) -> EdgekitError:
    reasons = []
    for backend, error in result.failed_backends:
        details = _error_details(error)
        error = re.sub(r"\s*See \S+\.error for details\.?", "", error).rstrip(". ")
        reasons.append(f"{backend.target_id}: {error}" + (f" ({details})" if details else ""))
    hint = _install_hint() if not _sdk_installed() else f"check the QAIRT libraries that {SDK_PACKAGE} installed"
    text = f"Qualcomm AOT compilation for {soc} failed: {'; '.join(reasons) or 'no model was produced'}"
    if removed:
        text += f"; deleted the empty output it left ({', '.join(removed)})"
    return EdgekitError(f"{text}. To fix it, {hint}")


@NPU_COMPILERS.register("qualcomm")
def compile_qualcomm(model: Path, soc: str, output_dir: Path) -> Path:
    """AOT-compile for a Snapdragon SoC (e.g. SM8650) with ai_edge_litert.aot; needs Qualcomm's SDK."""
    require("ai_edge_litert", "tflite")
    from ai_edge_litert.aot import aot_compile as aot
    from ai_edge_litert.aot.vendors.qualcomm import target as qualcomm

    valid = [m.value for m in qualcomm.SocModel if m != qualcomm.SocModel.ALL]
    if soc not in valid:
        raise EdgekitError(f"unknown Qualcomm SoC {soc!r}; ai-edge-litert knows: {', '.join(valid)}")
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".aot-") as tmp:
        with contextlib.redirect_stdout(sys.stderr):  # it prints progress; keep stdout clean for --json
            result = aot.aot_compile(str(model), output_dir=tmp, keep_going=True,
                                     target=qualcomm.Target(qualcomm.SocModel(soc)))
        removed = _delete_empty_outputs(Path(tmp))
        if result.failed_backends or not result.models_with_backend:
            raise _failure(result, soc, removed)
        compiled = Path(result.models_with_backend[0][1].path)
        if not compiled.is_file() or compiled.stat().st_size == 0:
            raise EdgekitError(f"Qualcomm AOT compilation for {soc} reported success but wrote no model")
        dest = output_dir / f"{model.stem}_qualcomm_{soc}.tflite"
        os.replace(compiled, dest)  # same file system: atomic
    return dest
