"""The human-readable report table; columns are declared as data and picked per command."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from edgekit.errors import EdgekitError


def _fmt(spec: str, suffix: str = "") -> Callable[[Any], str]:
    return lambda v: "—" if v is None else f"{v:{spec}}{suffix}"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _runtime(row: dict[str, Any]) -> str:
    return row["runtime"] + ("" if row["target"] == "host" else f" @ {row['target']}")


@dataclass(frozen=True)
class Column:
    title: str
    cell: Callable[[dict[str, Any]], str]
    justify: str = "right"
    overflow: str = "fold"  # a word wider than the column: folded onto the next line, or cut ("ellipsis")


COLUMNS = {
    "mark": Column("", lambda r: r["mark"], "center"),
    "artifact": Column("artifact", lambda r: r["artifact"], "left"),
    "runtime": Column("runtime", _runtime, "left"),
    "size": Column("size", lambda r: _size(r["size_bytes"])),
    "accuracy": Column("accuracy", lambda r: _fmt(".2%")(r["accuracy"])),
    "max_abs_diff": Column("max |Δ|", lambda r: _fmt(".1e")(r["max_abs_diff"])),
    "top1": Column("top-1 agree", lambda r: _fmt(".1%")(r["top1_agreement"])),
    "median": Column("median ms", lambda r: _fmt(".3f")(r["median_ms"])),
    "p90": Column("p90 ms", lambda r: _fmt(".3f")(r["p90_ms"])),
    "runs": Column("runs", lambda r: _fmt("d")(r["runs"])),
    "speedup": Column("× PyTorch", lambda r: _fmt(".2f", "×")(r["speedup_vs_pytorch"])),
    "placement": Column("placement", lambda r: r.get("placement") or "—", "left"),
    "note": Column("note", lambda r: r["note"] or "", "left"),
    # `edgekit verify` (VerifyReport.rows): left-aligned, cut where too wide
    "verify_mark": Column("", lambda r: r["mark"], "left", "ellipsis"),
    "verify_artifact": Column("artifact", lambda r: r["artifact"], "left", "ellipsis"),
    "verify_max_abs_diff": Column("max |Δ|", lambda r: _fmt(".1e")(r["max_abs_diff"]), "left", "ellipsis"),
    "verify_top1": Column("top-1 agree", lambda r: _fmt(".2%")(r["top1_agreement"]), "left", "ellipsis"),
    "verify_accuracy": Column("accuracy", lambda r: _fmt(".2%")(r["accuracy"]), "left", "ellipsis"),
    "verify_note": Column("note", lambda r: r["note"], "left", "ellipsis"),
    # per-layer SQNR of a quantized artifact (its verification's quantization.layer_sqnr_db; None = exact)
    "layer": Column("layer", lambda r: r["layer"], "left", "ellipsis"),
    "op": Column("op", lambda r: r["op"], "left", "ellipsis"),
    "sqnr": Column("SQNR dB", lambda r: "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}", "right",
                   "ellipsis"),
    "int8": Column("int8", lambda r: "yes" if r["quantized"] else "float", "right", "ellipsis"),
}
REPORT_COLUMNS = ("mark", "artifact", "runtime", "size", "accuracy", "max_abs_diff", "median", "p90", "runs",
                  "speedup", "placement", "note")
CONVERT_COLUMNS = ("mark", "artifact", "runtime", "size", "accuracy", "max_abs_diff", "top1", "placement", "note")
# the tables by name: ``print_table(rows, title, columns="convert")``
TABLES = {"report": REPORT_COLUMNS, "convert": CONVERT_COLUMNS,
          "verify": ("verify_mark", "verify_artifact", "verify_max_abs_diff", "verify_top1", "verify_accuracy",
                     "verify_note"),
          "layers": ("layer", "op", "sqnr", "int8")}


def render_table(rows: list[dict[str, Any]], title: str = "", columns: tuple[str, ...] | str = REPORT_COLUMNS) -> Table:
    """A rich Table of ``rows``; ``columns`` are keys of COLUMNS, or a table's name in TABLES."""
    if isinstance(columns, str):
        if columns not in TABLES:
            raise EdgekitError(f"unknown table {columns!r}; choose one of: {', '.join(TABLES)}")
        columns = TABLES[columns]
    table = Table(title=title or None)
    for key in columns:
        column = COLUMNS[key]
        table.add_column(column.title, justify=column.justify, overflow=column.overflow)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(COLUMNS[key].cell(row) for key in columns))
    return table


def stdout_console() -> Console:
    """A console on stdout; wide enough for the table when output goes to a file or a pipe."""
    width = None if sys.stdout.isatty() else max(160, shutil.get_terminal_size((160, 24)).columns)
    return Console(width=width)


def print_table(rows: list[dict[str, Any]], title: str = "", console: Console | None = None,
                columns: tuple[str, ...] | str = REPORT_COLUMNS) -> None:
    """Print ``rows`` as a table on stdout: the report's columns, or a named table of TABLES ("convert" for
    ``Bundle.rows()``, "verify" for ``VerifyReport.rows()``, "layers" for per-layer SQNR rows)."""
    (console or stdout_console()).print(render_table(rows, title, columns))
