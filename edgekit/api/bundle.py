"""``edgekit.Bundle``: an artifact bundle on disk, its golden data, runners, verification and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgekit.api.bench import bench as bench_target
from edgekit.artifact import ArtifactEntry, Manifest, load_manifest
from edgekit.errors import EdgekitError
from edgekit.graph import Runner, RunnerUnavailable

if TYPE_CHECKING:
    from edgekit.verify import ReferenceData

MARKS = {"passed": "✅", "failed": "❌"}  # a verify result's status; anything else (not run) is ❎


@dataclass
class VerifyReport:
    """``Bundle.verify()``: one result per artifact and the inputs parity ran on."""

    results: list[dict[str, Any]]
    reference: str

    @property
    def ok(self) -> bool:
        """Every artifact passed (none failed, at least one checked)."""
        return bool(self.results) and all(r["status"] != "failed" for r in self.results)

    def rows(self) -> list[dict[str, Any]]:
        """One row per result (mark, artifact, max_abs_diff, top1_agreement, accuracy, note): the table
        ``edgekit verify`` prints, ``edgekit.print_table(report.rows(), title, columns="verify")``."""
        rows = []
        for r in self.results:
            v = r.get("verification", {})
            rows.append({"mark": MARKS.get(r["status"], "❎"), "artifact": r["file"] or r["format"],
                         "max_abs_diff": v.get("max_abs_diff"), "top1_agreement": v.get("top1_agreement"),
                         "accuracy": v.get("accuracy"),
                         "note": r.get("reason") or ("" if r["status"] == "passed" else r["status"])})
        return rows


@dataclass
class Bundle:
    """An artifact bundle on disk: its folder and its manifest. A bundle returned by ``edgekit.convert`` also
    knows the entries that call wrote (``written``) and what they were verified on (``verified_on``)."""

    path: Path
    manifest: Manifest
    written: list[ArtifactEntry] = field(default_factory=list)
    verified_on: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Open a bundle folder (its manifest is checked like any untrusted input)."""
        return cls(Path(path), load_manifest(path))

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.manifest.artifacts]

    def rows(self) -> list[dict[str, Any]]:
        """Report rows without timings, of the formats and graphs this call wrote (a loaded bundle: of every
        artifact): the table ``edgekit convert`` prints, ``edgekit.print_table(rows, title, columns="convert")``."""
        from edgekit.report.rows import build_rows

        rows = build_rows(self.manifest, [])
        if not self.written:
            return rows
        formats, graphs = {e.format for e in self.written}, {e.graph for e in self.written}
        return [r for r in rows if r["format"] in formats and r["graph"] in graphs]

    def check_placement(self, accelerator: str, min_coverage: float = 1.0) -> list[str]:
        """The ``--require`` gate on the artifacts this call wrote (a loaded bundle: on all of them): each one
        whose format can target ``accelerator`` must have at least ``min_coverage`` (0..1) of its ops on it.
        Returns one line per artifact that passed; raises ``edgekit.placement.PlacementGateFailed`` naming the
        first that did not and its first offending ops."""
        from edgekit.placement import check_required

        return check_required(self.written or self.manifest.artifacts, accelerator, min_coverage)

    def reference(self, graph: str = "") -> ReferenceData:
        """The golden data saved beside the artifacts (of ``graph``): ``.inputs`` (one tuple of batch-1 arrays
        per sample), PyTorch's ``.outputs`` and ``.labels`` where known."""
        from edgekit.verify.bundle import golden_reference

        return golden_reference(self.path, graph)

    def runner(self, artifact: str, threads: int = 2, *, graph: str | None = None) -> Runner | RunnerUnavailable:
        """A callable running one artifact (a format name, or a file name of this bundle; ``graph`` picks among a
        sequence model's graphs) on a list of arrays; ``RunnerUnavailable(reason)`` where its runtime cannot run
        here. A failed artifact, or a file that is not the one verified, raises EdgekitError."""
        from edgekit.artifact import FAILED, bundle_path
        from edgekit.converters import CONVERTERS
        from edgekit.artifact import artifact_problem

        entry = (next((a for a in self.manifest.artifacts if a.file == artifact), None)
                 or self.manifest.entry(artifact, graph))
        if entry is None:
            files = ", ".join(a.file or a.format for a in self.manifest.artifacts) or "(none)"
            raise EdgekitError(f"{self.path} has no artifact {artifact!r}"
                               f"{f' of graph {graph!r}' if graph is not None else ''}; it has: {files}")
        failed = entry.status == FAILED or not entry.file
        problem = (f"{entry.file or entry.format} failed: {entry.error}" if failed
                   else artifact_problem(self.path, entry))
        if problem:
            raise EdgekitError(f"{self.path}: {problem}; not run")
        return CONVERTERS.get(entry.format).runner(bundle_path(self.path, entry.file), threads)

    def verify(self, *, threads: int = 2, source: str | Path | None = None,
               tolerance: Sequence[str] | None = None) -> VerifyReport:
        """Re-check files against the manifest and re-run parity, as ``edgekit verify``; ``tolerance`` as its
        ``--tolerance`` (a manifest's recorded overrides apply only when given again here)."""
        from edgekit.verify.bundle import verify_bundle
        from edgekit.verify.tolerances import parse_tolerances

        overrides = parse_tolerances([tolerance] if isinstance(tolerance, str) else list(tolerance)) if tolerance else None
        self.manifest, results, reference = verify_bundle(self.path, threads=threads, source=source,
                                                          overrides=overrides)
        return VerifyReport(results, reference)

    def bench(self, *, threads: int | None = None, warmup: int | None = None, runs: int | None = None,
              device: str = "host", options: Any = None, source: str | Path | None = None) -> list[dict[str, Any]]:
        """Latency of every artifact: the rows of ``edgekit bench BUNDLE [--device DEVICE]`` (``edgekit.bench``
        on this bundle, whose arguments these are)."""
        return bench_target(self.path, device=device, threads=threads, warmup=warmup, runs=runs, options=options,
                            source=source).rows
