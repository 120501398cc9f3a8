"""Versions of the tools that made an artifact, recorded in checkpoints and manifests."""

from __future__ import annotations

import platform
from importlib import metadata

TOOLS = ("edgekit", "torch", "numpy", "onnx", "onnxruntime", "onnxscript", "litert-torch",
         "ai-edge-litert", "coremltools", "scikit-learn", "safetensors")


def tool_versions(names: tuple[str, ...] = TOOLS) -> dict[str, str]:
    """Installed versions of ``names`` (missing packages are left out) and the Python version."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
