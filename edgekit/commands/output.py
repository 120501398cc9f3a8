"""Shared output helpers: a table for humans, JSON on stdout for machines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgekit.report.table import print_table


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def show_rows(args: argparse.Namespace, rows: list[dict[str, Any]], title: str, data: Any = None) -> None:
    """JSON (``data`` or the rows) with --json, else the report table."""
    if args.json:
        print_json(data if data is not None else rows)
    else:
        print_table(rows, title)


def parse_formats(text: str) -> list[str]:
    return [f.strip() for f in text.split(",") if f.strip()]
