"""Parity tolerances, one row per precision: how close an artifact must stay to PyTorch.

A QuantSpec picks its row (its accuracy budget, when given, is the allowed accuracy drop). Each
verification records the tolerance it used; ``recorded_tolerance`` reads it back from an untrusted
manifest, bounded by the spec recorded beside it, for ``edgekit verify``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.quant.spec import QuantSpec


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's outputs must stay to PyTorch's (see ``edgekit.verify.parity.compare``)."""

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
        """Every field, as the manifest records it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Tolerance:
        """A recorded tolerance (untrusted): every field present, a number in its range or null where allowed."""
        if not isinstance(data, dict):
            raise EdgekitError(f"it is a {type(data).__name__}, not an object")
        names = [f.name for f in fields(cls)]
        if sorted(data) != sorted(names):
            odd = sorted(set(data) ^ set(names))[0]
            raise EdgekitError(f"field {odd!r:.40} is {'unknown' if odd in data else 'missing'}; fields: {', '.join(names)}")
        for name, (low, high, nullable) in _RANGES.items():
            value = data[name]
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ((value is None and nullable) or (number and low <= value <= high)):
                allowed = f"a number in [{low:g}, {high:g}]" + (" or null" if nullable else "")
                raise EdgekitError(f"{name} is {value!r:.40}; expected {allowed}")
        return cls(**data)

    def within(self, bound: Tolerance) -> Tolerance:
        """This tolerance, tightened field by field wherever ``bound`` is stricter (never looser than ``bound``)."""
        def low(a: float | None, b: float | None, none_is_strict: bool) -> float | None:
            if a is None or b is None:
                return None if none_is_strict else (b if a is None else a)
            return min(a, b)

        # a |Δ| bound also widens the near-tie allowance of top-1 agreement: accepted only where the bound has one
        abs_diff = None if bound.max_abs_diff is None else low(self.max_abs_diff, bound.max_abs_diff, False)
        return Tolerance(abs_diff, max(self.min_top1_agreement, bound.min_top1_agreement),
                         low(self.max_accuracy_drop, bound.max_accuracy_drop, False),
                         low(self.max_mean_kl_bits, bound.max_mean_kl_bits, True),  # null: no KL escape at all
                         min(self.max_rel_error, bound.max_rel_error))


# field → (lowest, highest, may be null) of a recorded tolerance
_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_abs_diff": (0.0, math.inf, True), "min_top1_agreement": (0.0, 1.0, False),
    "max_accuracy_drop": (0.0, 1.0, True), "max_mean_kl_bits": (0.0, math.inf, True),
    "max_rel_error": (0.0, math.inf, False)}


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


def tolerance_for(spec: QuantSpec | str) -> Tolerance:
    """The row of ``spec``'s scheme, its accuracy budget (when given) as the allowed accuracy drop.
    A name (``"int8"``) stands for ``QuantSpec.parse(name)``."""
    spec = QuantSpec.parse(spec)
    row = TOLERANCES[spec.scheme.value]
    return replace(row, max_accuracy_drop=spec.budget_points / 100) if spec.budget_points is not None else row


def recorded_tolerance(verification: Any, precision: str) -> tuple[Tolerance, str]:
    """The tolerance an artifact was verified with, from its manifest entry (untrusted): the recorded one,
    never looser than what the recorded spec allows (``tolerance_for(spec)``, budget included). Returns it
    with a note saying what was rebuilt and why ("" when the recorded tolerance is used as it is)."""
    spec, why = _recorded_spec(verification, precision)
    bound = tolerance_for(spec)
    named = f"the {'default ' if why else ''}{spec.tag} tolerance" + (
        f" (budget {spec.budget_points:g} points)" if spec.budget_points is not None else "")
    prefix = f"{why}; " if why else ""
    recorded = verification.get("tolerance") if isinstance(verification, dict) else None
    if recorded is None:
        return bound, f"{prefix}manifest.json records no tolerance; checked with {named}"
    try:
        tolerance = Tolerance.from_dict(recorded)
    except EdgekitError as exc:
        return bound, f"{prefix}recorded tolerance is damaged ({exc}); checked with {named}"
    used = tolerance.within(bound)
    if used != tolerance:
        looser = ", ".join(f.name for f in fields(Tolerance) if getattr(used, f.name) != getattr(tolerance, f.name))
        return used, f"{prefix}recorded tolerance is looser than {named} allows ({looser}); checked within it"
    return used, f"{prefix}recorded tolerance used within {named}" if why else ""


def _recorded_spec(verification: Any, precision: str) -> tuple[QuantSpec, str]:
    """The QuantSpec recorded in a verification (``quantization.spec``), or else the default spec of
    ``precision`` with the reason the recorded one is not used."""
    quant = verification.get("quantization") if isinstance(verification, dict) else None
    data = quant.get("spec") if isinstance(quant, dict) else None
    default = QuantSpec.parse(precision)
    if data is None:
        return default, "manifest.json records no quantization spec"
    try:
        spec = QuantSpec.from_dict(data)
    except EdgekitError as exc:
        return default, f"recorded quantization spec is damaged ({exc})"
    if spec.tag != default.tag:
        return default, f"recorded quantization spec is {spec.tag}, the artifact {default.tag}"
    return spec, ""
