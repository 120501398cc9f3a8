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
    p.add_argument("--quant", metavar="SCHEME",
                   help="quantize: int8 (static W8A8, calibrated), int8-dynamic, int8-weight, int4-weight, "
                        "palettizeN; `edgekit list formats` shows what each format supports (overrides --precision)")
    p.add_argument("--calib", metavar="DATA",
                   help="calibration inputs: an image folder, .npy or .npz (default: the recipe's training split)")
    p.add_argument("--calib-samples", type=int, default=128, help="calibration samples (default 128)")
    p.add_argument("--accuracy-budget", type=float, metavar="POINTS",
                   help="int8: keep the most sensitive layers in float until the accuracy drop is within POINTS")
    p.add_argument("--qat", type=int, nargs="?", const=1, default=0, metavar="EPOCHS",
                   help="int8: fine-tune with fake quantization after calibration (default 1 epoch)")
    p.add_argument("--out", type=Path, help="bundle folder (default: beside the model)")
    p.add_argument("--labels", help="class names: a text file (one per line) or a JSON list")
    p.add_argument("--meta", help="JSON with labels, preprocessing, input_names, output_names (for .pt2)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads while verifying (default 2)")
    p.add_argument("--lengths", default="",
                   help="sequence models: static lengths L of the prefill graphs, e.g. 256,1024 (default: the model's)")
    p.add_argument("--npu", metavar="VENDOR:SOC",
                   help="also compile the TFLite artifact ahead of time for an NPU, e.g. qualcomm:SM8650")
    add_json_flag(p)


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"256,1024"`` → (256, 1024); every length a positive integer."""
    from edgekit.errors import EdgekitError

    try:
        lengths = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EdgekitError(f"--lengths {text!r} is not a comma-separated list of integers") from None
    if any(n < 2 for n in lengths):
        raise EdgekitError(f"--lengths {text!r}: every length must be at least 2")
    return lengths


def default_bundle(model: str) -> Path:
    path = Path(model)
    if path.is_dir():
        return path.parent / "bundle"
    if path.name in ("model.safetensors", "meta.json"):
        return path.parent.parent / "bundle"
    return path.with_name(f"{path.stem}_bundle")


@command("convert", "export a model to ONNX / TFLite / Core ML, verify each artifact, write a bundle", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.convert import convert_graphs
    from edgekit.converters import CONVERTERS
    from edgekit.progress import status
    from edgekit.report.table import CONVERT_COLUMNS, print_table
    from edgekit.report.rows import build_rows
    from edgekit.sources import graph_sources, load_source, reference_for

    from edgekit.quant import QuantSpec

    formats = parse_formats(args.formats)
    spec = QuantSpec.parse(args.quant or args.precision, calib_samples=args.calib_samples)
    spec.check_options(args.accuracy_budget, args.qat)
    for fmt in formats:
        CONVERTERS.get(fmt).check_precision(spec)
    source = load_source(args.model, labels=args.labels, meta=args.meta)
    sources = graph_sources(source, parse_lengths(args.lengths))
    references = [reference_for(s) for s in sources]
    bundle = args.out or default_bundle(args.model)
    quant_options = {"calib": args.calib, "budget_points": args.accuracy_budget, "qat_epochs": args.qat,
                     "progress": status}
    manifest = convert_graphs(sources, formats, bundle, references, precision=spec, threads=args.threads,
                              quant_options=quant_options)
    entries = [manifest.entry(fmt, s.graph) for s in sources for fmt in formats]
    if args.npu:
        from edgekit.npu import compile_bundle_for_npu

        entries.append(compile_bundle_for_npu(bundle, manifest, args.npu))
    if args.json:
        print_json({"bundle": str(bundle), "artifacts": [e.to_dict() for e in entries]})
    else:
        graphs = {s.graph for s in sources}
        rows = [r for r in build_rows(manifest, []) if r["format"] in formats and r["graph"] in graphs]
        where = "; ".join(r.description for r in references)
        print_table(rows, f"{source.name} → {bundle} (verified on {where})", columns=CONVERT_COLUMNS)
        print_quant_summary([e for e in entries if e is not None])
    status(f"bundle: {bundle}")
    failed = [e for e in entries if e.status == "failed"]
    for entry in failed:
        print(f"edgekit: error: {entry.error}", file=sys.stderr)
    return 1 if failed else 0


def print_quant_summary(entries) -> None:
    """Per-layer SQNR table and the mixed-precision outcome of the first quantized artifact."""
    quant = next((e.verification["quantization"] for e in entries if "quantization" in e.verification), None)
    if not quant:
        return
    from edgekit.quant.report import LayerError, print_layer_table

    if quant.get("layer_sqnr_db"):
        rows = [LayerError(r["layer"], r["op"], float("inf") if r["sqnr_db"] is None else r["sqnr_db"], r["quantized"])
                for r in quant["layer_sqnr_db"]]
        print_layer_table(rows)
    mixed = quant.get("mixed_precision")
    if mixed:
        kept = ", ".join(mixed["float_layers"]) or "none"
        print(f"mixed precision: budget {mixed['budget_points']} points, drop {mixed['drop_points']:.2f} points "
              f"on {mixed['evaluated_on']}; layers kept in float: {kept}")
