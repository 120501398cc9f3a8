"""Quantization: a typed QuantSpec, calibration, one PT2E calibration shared by every format,
per-layer SQNR, accuracy-budgeted mixed precision and QAT. Heavy imports happen inside functions."""

from edgekit.quant.spec import QuantMethods, QuantSpec, Scheme, as_spec, scheme_names


def __getattr__(name: str):
    if name in ("QuantPlan", "plan_quantization"):  # imports torch; loaded on first use
        from edgekit.quant import plan

        return getattr(plan, name)
    raise AttributeError(name)


__all__ = ["QuantMethods", "QuantPlan", "QuantSpec", "Scheme", "as_spec", "plan_quantization", "scheme_names"]
