"""edgekit: one PyTorch model in; verified, quantized, benchmarked phone artifacts out.

The public API (``edgekit.convert``, ``Bundle``, ``QuantSpec``, ``train``, ``adapt``, ``load``,
``EdgekitError``) is loaded on first use, so ``import edgekit`` and the CLI stay quick.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name → the module that defines it
_PUBLIC = {
    "convert": "edgekit.api", "Bundle": "edgekit.api", "VerifyReport": "edgekit.api", "train": "edgekit.api",
    "Trained": "edgekit.api", "adapt": "edgekit.api", "load": "edgekit.api",
    "QuantSpec": "edgekit.quant.spec", "EdgekitError": "edgekit.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
