"""`edgekit report RUN_OR_BUNDLE [--html PATH] [--open]`: one self-contained HTML page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekit.commands.base import command


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path,
                   help="a run folder (with report.json, from `edgekit run`) or a bundle (with manifest.json)")
    p.add_argument("--html", type=Path, metavar="PATH", help="where to write the page (default: report.html in SOURCE)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--overwrite", action="store_true", help="replace a file at --html that edgekit did not write")


@command("report", "an HTML report (tables, plots, placement, versions) of a run or a bundle", configure)
def run(args: argparse.Namespace) -> int:
    import edgekit
    from edgekit.progress import status

    line = ["edgekit", "report", str(args.source), *(["--html", str(args.html)] if args.html else []),
            *(["--open"] if args.open else []), *(["--overwrite"] if args.overwrite else [])]
    path = edgekit.write_html_report(args.source, args.html, command=line, overwrite=args.overwrite)
    status(f"report: {path}")
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print(f"edgekit: no web browser found; open {path} yourself", file=sys.stderr)
    return 0
