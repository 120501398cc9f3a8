"""`edgekit verify BUNDLE`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json
from edgekit.commands.validate import positive_int


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle folder (with manifest.json)")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--source", type=Path, metavar="PATH",
                   help="the model the bundle was converted from (checkpoint folder or .pt2); its sha256 must be the "
                        "recorded one. Without it, the recorded source is used only when it lies outside the bundle "
                        "and is unchanged, else the bundle's golden files")
    p.add_argument("--tolerance", action="append", default=[], metavar="[OUTPUT:]KEY=VALUE,...",
                   help="parity tolerance per output, as for convert (the manifest's recorded ones apply only when "
                        "given again here; a named output needs --source)")
    add_json_flag(p)


@command("verify", "re-check a bundle: files vs manifest, embedded metadata, parity with PyTorch", configure)
def run(args: argparse.Namespace) -> int:
    import edgekit

    bundle = edgekit.Bundle.load(args.bundle)
    report = bundle.verify(threads=args.threads, source=args.source, tolerance=args.tolerance or None)
    if args.json:
        print_json({"bundle": args.bundle, "reference": report.reference, "results": report.results})
    else:
        edgekit.print_table(report.rows(), f"{bundle.manifest.name}: verified on {report.reference}", columns="verify")
    return 1 if any(r["status"] == "failed" for r in report.results) else 0
