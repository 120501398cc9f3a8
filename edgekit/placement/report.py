"""One shape for every placement answer: which op runs where, why, and how to fix it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# what ``--require`` accepts; each converter declares the subset it can answer for (``Converter.accelerators``)
ACCELERATORS = ("ane", "gpu", "npu", "xnnpack")


class Where(str, Enum):
    """Where one op runs with respect to the accelerator asked about."""

    ON = "on"  # runs on the accelerator
    PENALTY = "penalty"  # runs on it, but slowly (e.g. a layout the Neural Engine pads); counts as covered
    OFF = "off"  # falls back (CPU, another device): each boundary ON↔OFF is a device switch


@dataclass(frozen=True)
class OpPlacement:
    """One op of the artifact, in program order."""

    op: str  # op type as the artifact names it ("conv", "GATHER", "MatMul")
    name: str  # the op's own name in the artifact (node / output tensor name)
    where: Where
    reason: str = ""  # why it is not ON (a rule with its source, a delegate's message)
    fix: str = ""  # what would move it on ("export with --precision fp16")
    flops: float = 0.0  # estimated work; 0 where unknown


@dataclass
class Placement:
    """Where an artifact's ops run on one accelerator, and how that was found out.

    ``source`` says how: "lint" (written rules, a prediction), "MLComputePlan", "ORT profile",
    "XNNPACK delegate", "GPU analyzer", "QNN delegate log". ``not_run`` is set, with the reason, when it could
    not be determined here; then there are no ops and no coverage (a gate treats that as failing)."""

    accelerator: str
    source: str
    ops: list[OpPlacement] = field(default_factory=list)
    not_run: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.not_run is None and bool(self.ops)

    @property
    def coverage(self) -> float | None:
        """Share of ops ON or PENALTY (None when unknown)."""
        if not self.known:
            return None
        return sum(o.where != Where.OFF for o in self.ops) / len(self.ops)

    @property
    def flops_coverage(self) -> float | None:
        """Share of estimated FLOPs ON or PENALTY (None when unknown or no op has an estimate)."""
        total = sum(o.flops for o in self.ops)
        if not self.known or total <= 0:
            return None
        return sum(o.flops for o in self.ops if o.where != Where.OFF) / total

    @property
    def islands(self) -> int:
        """Maximal runs of covered ops in program order: each boundary is a device switch."""
        runs, inside = 0, False
        for o in self.ops:
            covered = o.where != Where.OFF
            runs += covered and not inside
            inside = covered
        return runs

    def offenders(self, limit: int = 5) -> list[dict[str, Any]]:
        """The ops that fall back, grouped by (op, reason), largest group first, with the first op's name."""
        groups: dict[tuple[str, str], list[OpPlacement]] = {}
        for o in self.ops:
            if o.where == Where.OFF:
                groups.setdefault((o.op, o.reason), []).append(o)
        ranked = sorted(groups.values(), key=lambda g: (-len(g), -sum(o.flops for o in g)))
        return [{"op": g[0].op, "count": len(g), "first": g[0].name, "reason": g[0].reason, "fix": g[0].fix}
                for g in ranked[:limit]]

    def summary(self) -> str:
        """One cell: ``ane 92% (3 islands)``, or ``ane not run``."""
        if self.coverage is None:
            return f"{self.accelerator} not run"
        islands = f", {self.islands} islands" if self.islands > 1 else ""
        return f"{self.accelerator} {self.coverage:.0%}{islands}"

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``placement[accelerator]``: totals, offenders and the per-op list."""
        return {"accelerator": self.accelerator, "source": self.source, "not_run": self.not_run,
                "coverage": self.coverage, "flops_coverage": self.flops_coverage, "ops": len(self.ops),
                "ops_on": sum(o.where == Where.ON for o in self.ops),
                "ops_penalty": sum(o.where == Where.PENALTY for o in self.ops),
                "islands": self.islands, "offenders": self.offenders(), "notes": self.notes,
                "op_types_off": dict(Counter(o.op for o in self.ops if o.where == Where.OFF)),
                "per_op": [{"op": o.op, "name": o.name, "where": o.where.value, "reason": o.reason,
                            "fix": o.fix, "flops": o.flops} for o in self.ops]}


def placement_cell(placement: dict[str, dict[str, Any]]) -> str:
    """A table cell from a manifest entry's ``placement``: ``ane 92% · xnnpack 100%`` (unknown ones left out)."""
    parts = []
    for accelerator, report in placement.items() if isinstance(placement, dict) else ():
        coverage = report.get("coverage") if isinstance(report, dict) else None
        if isinstance(coverage, (int, float)) and 0.0 <= coverage <= 1.0:
            islands = report.get("islands", 0)
            islands = islands if isinstance(islands, int) else 0
            parts.append(f"{accelerator} {coverage:.0%}" + (f" ({islands} islands)" if islands > 1 else ""))
    return " · ".join(parts)
