"""`edgekit bench ARTIFACT|BUNDLE`: latency in each runtime beside PyTorch eager."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, show_rows
from edgekit.commands.validate import add_require_flags, non_negative_int, positive_int


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="an artifact (.onnx, .tflite, .mlpackage) or a bundle folder")
    p.add_argument("--device", default="host", help="host (default) or adb[:SERIAL]")
    p.add_argument("--threads", type=positive_int, default=2, help="fixed thread count (default 2)")
    p.add_argument("--warmup", type=non_negative_int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--runs", type=positive_int, default=200, help="timed runs (default 200)")
    p.add_argument("--out", type=Path, help="also write the report as JSON to this file")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace a file that is not an edgekit report (a folder is never replaced)")
    p.add_argument("--source", type=Path, metavar="PATH",
                   help="the bundle's source model for the PyTorch row (checkpoint folder or .pt2; its sha256 must be "
                        "the recorded one); without it, the recorded source only when outside the bundle and unchanged")
    add_require_flags(p)
    add_json_flag(p)
    from edgekit.commands.devices import add_adb_bench_arguments

    add_adb_bench_arguments(p)


@command("bench", "time artifacts in their runtimes (host, or a phone over adb)", configure)
def run(args: argparse.Namespace) -> int:
    import edgekit
    from edgekit.commands.devices import flag_options

    report = edgekit.bench(args.target, device=args.device, threads=args.threads, warmup=args.warmup, runs=args.runs,
                           options=flag_options(args), source=args.source, out=args.out, overwrite=args.overwrite)
    show_rows(args, report.rows, f"bench on {args.device}, {args.threads} threads")
    if args.require:  # after the table: the timings are shown, the gate decides the exit code
        from edgekit.progress import status

        for line in report.check_placement(args.require, args.min_coverage / 100):
            status(f"placement: {line}")
    return 0 if report.ok else 1
