"""``--require ACCELERATOR [--min-coverage PCT]``: fail when an artifact would fall back from the accelerator."""

from __future__ import annotations

from typing import Any, Iterable

from edgekit.errors import EdgekitError
from edgekit.placement.report import ACCELERATORS


class PlacementGateFailed(EdgekitError):
    """An artifact's coverage on the required accelerator is below the minimum, or unknown."""


def check_required(entries: Iterable[Any], accelerator: str, min_coverage: float = 1.0) -> list[str]:
    """Check every written artifact whose format can target ``accelerator`` (its manifest ``placement`` has
    that key): coverage ≥ ``min_coverage`` (0..1). Returns one line per artifact that passed; raises
    PlacementGateFailed with one line naming the first failing artifact, its coverage and its first offending
    ops. Unknown coverage (not measurable here) fails: a gate never passes on what it could not see."""
    if accelerator not in ACCELERATORS:
        raise EdgekitError(f"--require {accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
    if not 0.0 <= min_coverage <= 1.0:
        raise EdgekitError(f"--min-coverage must be a percentage in 0..100, not {100 * min_coverage:g}")
    judged, passed = [], []
    for entry in entries:
        report = (entry.placement or {}).get(accelerator) if entry.file else None
        if report is None:
            continue
        judged.append(entry)
        where = entry.file
        coverage = _checked(report, where, accelerator)
        if coverage is None:
            raise PlacementGateFailed(f"--require {accelerator}: {where}: coverage unknown "
                                      f"({report.get('not_run') or 'no ops reported'}); gate only the formats "
                                      f"that can be measured here (--to), or bench on the device")
        if coverage + 1e-12 < min_coverage:
            raise PlacementGateFailed(f"--require {accelerator}: {where}: {coverage:.1%} of ops on {accelerator} "
                                      f"< {min_coverage:.0%} ({report.get('source', '?')}); first offenders: "
                                      f"{offender_text(report.get('offenders', []))}")
        passed.append(f"{where}: {coverage:.1%} on {accelerator} ({report.get('source', '?')})")
    if not judged:
        raise PlacementGateFailed(f"--require {accelerator}: no artifact written here can target {accelerator} "
                                  f"(formats that can: see `edgekit list formats`)")
    return passed


def _checked(report: Any, where: str, accelerator: str) -> float | None:
    """The coverage of a recorded report (a manifest is untrusted: a damaged one is an error, not a crash)."""
    coverage = report.get("coverage") if isinstance(report, dict) else "?"
    numeric = isinstance(coverage, (int, float)) and not isinstance(coverage, bool) and 0.0 <= coverage <= 1.0
    offenders = report.get("offenders", []) if isinstance(report, dict) else None
    if not (coverage is None or numeric) or not isinstance(offenders, list) or not all(
            isinstance(o, dict) and {"op", "first", "reason", "count"} <= set(o) for o in offenders):
        raise PlacementGateFailed(f"--require {accelerator}: {where}: its recorded placement is damaged "
                                  f"(expected coverage 0..1 and a list of offenders); re-run edgekit convert")
    return coverage


def offender_text(offenders: list[dict[str, Any]], limit: int = 3) -> str:
    """``gather ×2 at 'x_12' (gather runs on the CPU: …; fix: …)``, for the first ``limit`` groups."""
    parts = []
    for o in offenders[:limit]:
        count = f" ×{o['count']}" if o["count"] > 1 else ""
        fix = f"; fix: {o['fix']}" if o.get("fix") else ""
        parts.append(f"{o['op']}{count} at {o['first']!r} ({o['reason']}{fix})")
    return "; ".join(parts) or "(none listed)"
