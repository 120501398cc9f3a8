"""Quantization: the typed QuantSpec. Calibration (``edgekit.quant.calib``), the shared PT2E graph
(``edgekit.quant.pt2e``), planning (``edgekit.quant.plan``), per-layer SQNR, mixed precision and QAT
are imported by their module paths: this package imports only the spec, so converters can use it."""

from edgekit.quant.spec import CALIBRATION_METHODS, OP_TYPES, Granularity, QuantMethods, QuantSpec, Scheme, scheme_names

__all__ = ["CALIBRATION_METHODS", "OP_TYPES", "Granularity", "QuantMethods", "QuantSpec", "Scheme", "scheme_names"]
