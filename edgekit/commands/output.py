"""Shared output helpers: a table for humans, JSON on stdout for machines."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def add_run_folder_flags(parser: argparse.ArgumentParser) -> None:
    """--out (a run folder, default runs/<recipe name>), --overwrite and --json: `edgekit run` and `edgekit train`."""
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<recipe name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder edgekit did not create (its other files are kept)")
    add_json_flag(parser)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def show_rows(args: argparse.Namespace, rows: list[dict[str, Any]], title: str, data: Any = None) -> None:
    """JSON (``data`` or the rows) with --json, else the report table."""
    if args.json:
        print_json(data if data is not None else rows)
    else:
        from edgekit import print_table

        print_table(rows, title)


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """With --json, stdout carries the JSON alone: whatever the work prints on stdout meanwhile (a
    converter's log lines, native libraries writing to file descriptor 1) goes to stderr instead."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
