"""`edgekit verify BUNDLE`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json
from edgekit.commands.validate import positive_int
from edgekit.report.table import stdout_console

MARKS = {"passed": "✅", "failed": "❌"}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle folder (with manifest.json)")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--source", type=Path, metavar="PATH",
                   help="the model the bundle was converted from (checkpoint folder or .pt2); its sha256 must be the "
                        "recorded one. Without it, the recorded source is used only when it lies outside the bundle "
                        "and is unchanged, else the bundle's golden files")
    add_json_flag(p)


@command("verify", "re-check a bundle: files vs manifest, embedded metadata, parity with PyTorch", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.verify.bundle import verify_bundle

    manifest, results, reference = verify_bundle(args.bundle, threads=args.threads, source=args.source)
    if args.json:
        print_json({"bundle": args.bundle, "reference": reference, "results": results})
    else:
        table = Table(title=f"{manifest.name}: verified on {reference}")
        for col in ("", "artifact", "max |Δ|", "top-1 agree", "accuracy", "note"):
            table.add_column(col)
        for r in results:
            v = r.get("verification", {})
            table.add_row(MARKS.get(r["status"], "❎"), r["file"] or r["format"],
                          f"{v['max_abs_diff']:.1e}" if "max_abs_diff" in v else "—",
                          f"{v['top1_agreement']:.2%}" if "top1_agreement" in v else "—",
                          f"{v['accuracy']:.2%}" if "accuracy" in v else "—",
                          r.get("reason") or ("" if r["status"] == "passed" else r["status"]))
        stdout_console().print(table)
    return 1 if any(r["status"] == "failed" for r in results) else 0
