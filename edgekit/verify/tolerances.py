"""Parity tolerances, one row per precision: how close an artifact must stay to PyTorch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class Tolerance:
    max_abs_diff: float  # largest allowed |artifact output - PyTorch output|
    min_top1_agreement: float  # share of inputs whose arg-max class must match PyTorch's

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_diff=1e-4, min_top1_agreement=1.0),
    "fp16": Tolerance(max_abs_diff=5e-2, min_top1_agreement=0.99),
}


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise EdgekitError(f"no parity tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}") from None
