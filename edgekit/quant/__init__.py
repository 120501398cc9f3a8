"""Quantization: the typed QuantSpec. Calibration (``edgekit.quant.calib``), the shared PT2E graph
(``edgekit.quant.pt2e``), planning (``edgekit.quant.plan``), per-layer SQNR, mixed precision and QAT
are imported by their module paths: this package imports only the spec, so converters can use it.
``check_calibration`` (refuse bad calibration data before any work) loads ``edgekit.quant.calib`` on first use."""

from __future__ import annotations

from typing import Any

from edgekit.quant.spec import (CALIBRATION_METHODS, OP_TYPES, CalibMethod, Granularity, QuantMethods, QuantSpec,
                                Scheme, scheme_names)

__all__ = ["CALIBRATION_METHODS", "OP_TYPES", "CalibMethod", "Granularity", "QuantMethods", "QuantSpec", "Scheme",
           "scheme_names", "check_calibration"]
_LAZY = {"check_calibration": "edgekit.quant.calib"}  # name → the module that defines it, imported on first use


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgekit.quant' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
