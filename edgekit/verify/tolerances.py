"""Parity tolerances, one row per precision: how close an artifact must stay to PyTorch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class Tolerance:
    max_abs_diff: float | None  # largest allowed |artifact output - PyTorch output|; None = not a criterion
    min_top1_agreement: float  # share of inputs whose arg-max class must match PyTorch's
    max_accuracy_drop: float | None = None  # PyTorch fp32 accuracy minus the artifact's (labelled data only)
    # unlabelled data (LM logits): pass also when the mean KL(PyTorch ‖ artifact) of the first output's
    # softmax stays within this many bits per row, even if arg-max agreement is lower (near ties)
    max_mean_kl_bits: float | None = None
    # outputs after the first (a step graph's states, a detector's boxes): ‖artifact − PyTorch‖₂ / ‖PyTorch‖₂
    # over all samples; catches states that drift or collapse where no arg-max or |Δ| bound applies
    max_rel_error: float = 1e-2

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


# Float precisions must reproduce PyTorch's numbers. Quantized ones cannot (int8 logits differ by
# ~1e-2..1e-1), so they are judged like a user would: the same top-1 class on nearly every input
# and an accuracy drop against fp32 within budget (1 point; `--accuracy-budget` sets it per run).
# 8-bit weights alone are judged like W8A8 (98%): an adapter on a hard shifted domain has many
# near ties (0.8-1.2% flips measured with 99.2% of its accuracy kept).
# Weight-only 4-bit / palettized get a looser row. The relative-error bound on outputs after the first
# (states) sits above what was measured on tiny byte LMs (fp32 0, fp16 ≤ 0.002, int8-weight ≤ 0.007,
# int8 ≤ 0.09) and far below a collapsed or zeroed state (≈ 1).
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_diff=1e-4, min_top1_agreement=1.0, max_rel_error=1e-3),
    "fp16": Tolerance(max_abs_diff=5e-2, min_top1_agreement=0.99, max_rel_error=5e-2),
    "int8": Tolerance(max_abs_diff=None, min_top1_agreement=0.98, max_accuracy_drop=0.01, max_mean_kl_bits=0.05,
                      max_rel_error=0.25),
    "int8-dynamic": Tolerance(max_abs_diff=None, min_top1_agreement=0.98, max_accuracy_drop=0.01,
                              max_mean_kl_bits=0.05, max_rel_error=0.25),
    "int8-weight": Tolerance(max_abs_diff=None, min_top1_agreement=0.98, max_accuracy_drop=0.01,
                             max_mean_kl_bits=0.05, max_rel_error=0.25),
    "int4-weight": Tolerance(max_abs_diff=None, min_top1_agreement=0.95, max_accuracy_drop=0.02, max_rel_error=0.35),
    "palettize": Tolerance(max_abs_diff=None, min_top1_agreement=0.95, max_accuracy_drop=0.02, max_rel_error=0.35),
}


def tolerance_for(precision) -> Tolerance:
    """The row for a precision name (``"int8"``), a QuantSpec, or a QuantPlan (whose accuracy budget,
    when given, replaces the row's accuracy drop)."""
    from edgekit.quant.spec import as_spec

    try:
        spec = as_spec(getattr(precision, "spec", precision))
    except EdgekitError:
        raise EdgekitError(f"no parity tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}") from None
    row = TOLERANCES[spec.scheme.value]
    budget = getattr(precision, "budget_points", None)
    return replace(row, max_accuracy_drop=budget / 100) if budget is not None else row
