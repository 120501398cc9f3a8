"""Reports: rows joined from manifest + benchmarks, a terminal table, and report.json."""

from edgekit.report.rows import STATUS_MARK, build_rows
from edgekit.report.table import print_table, render_table

__all__ = ["STATUS_MARK", "build_rows", "print_table", "render_table"]
