"""`edgekit convert MODEL --to onnx,tflite,coreml`: export, verify, and write a bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, parse_formats, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="edgekit checkpoint folder, or a .pt2 file saved with torch.export.save")
    p.add_argument("--to", dest="formats", default="onnx,tflite,coreml",
                   help="comma-separated formats (see `edgekit list formats`; default: all)")
    p.add_argument("--precision", default="fp32", help="fp32 (default) or fp16 where the format supports it")
    p.add_argument("--out", type=Path, help="bundle folder (default: beside the model)")
    p.add_argument("--labels", help="class names: a text file (one per line) or a JSON list")
    p.add_argument("--meta", help="JSON with labels, preprocessing, input_names, output_names (for .pt2)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads while verifying (default 2)")
    p.add_argument("--npu", metavar="VENDOR:SOC",
                   help="also compile the TFLite artifact ahead of time for an NPU, e.g. qualcomm:SM8650")
    add_json_flag(p)


def default_bundle(model: str) -> Path:
    path = Path(model)
    if path.is_dir():
        return path.parent / "bundle"
    if path.name in ("model.safetensors", "meta.json"):
        return path.parent.parent / "bundle"
    return path.with_name(f"{path.stem}_bundle")


@command("convert", "export a model to ONNX / TFLite / Core ML, verify each artifact, write a bundle", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.convert import convert_model
    from edgekit.converters import CONVERTERS
    from edgekit.progress import status
    from edgekit.report.table import CONVERT_COLUMNS, print_table
    from edgekit.report.rows import build_rows
    from edgekit.sources import load_source, reference_for

    formats = parse_formats(args.formats)
    for fmt in formats:
        CONVERTERS.get(fmt).check_precision(args.precision)
    source = load_source(args.model, labels=args.labels, meta=args.meta)
    reference = reference_for(source)
    bundle = args.out or default_bundle(args.model)
    manifest = convert_model(source, formats, bundle, reference, precision=args.precision, threads=args.threads)
    entries = [manifest.entry(fmt) for fmt in formats]
    if args.npu:
        from edgekit.npu import compile_bundle_for_npu

        entries.append(compile_bundle_for_npu(bundle, manifest, args.npu))
    if args.json:
        print_json({"bundle": str(bundle), "artifacts": [e.to_dict() for e in entries]})
    else:
        rows = [r for r in build_rows(manifest, []) if r["format"] in formats]
        print_table(rows, f"{source.name} → {bundle} (verified on {reference.description})", columns=CONVERT_COLUMNS)
    status(f"bundle: {bundle}")
    failed = [e for e in entries if e.status == "failed"]
    for entry in failed:
        print(f"edgekit: error: {entry.error}", file=sys.stderr)
    return 1 if failed else 0
