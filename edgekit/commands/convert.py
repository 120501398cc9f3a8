"""`edgekit convert MODEL --to onnx,tflite,coreml`: export, verify, and write a bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json, stdout_to_stderr
from edgekit.commands.validate import (add_require_flags, float_in, format_list, non_negative_float, non_negative_int,
                                       npu_target, positive_int)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="edgekit checkpoint folder, or a .pt2 file saved with torch.export.save")
    p.add_argument("--to", dest="formats", type=format_list, default="onnx,tflite,coreml",
                   help="comma-separated formats (see `edgekit list formats`; default: all)")
    p.add_argument("--precision", default="fp32", help="fp32 (default) or fp16 where the format supports it")
    p.add_argument("--quant", metavar="SCHEME",
                   help="quantize: int8 (static W8A8, calibrated), int8-dynamic, int8-weight, int4-weight, "
                        "palettizeN; `edgekit list formats` shows what each format supports (overrides --precision)")
    p.add_argument("--calib", metavar="DATA",
                   help="calibration inputs: an .npz keyed by input name (any model; the --sample-inputs format), or for a "
                        "model of one float input a .npy or an image folder (default: --sample-inputs, else the "
                        "recipe's training split)")
    p.add_argument("--sample-inputs", metavar="FILE.npz",
                   help="real inputs to verify on (and to calibrate int8 on, without --calib): an .npz whose keys "
                        "are the model's input names, each (N, ...) with the input's dtype")
    p.add_argument("--tolerance", action="append", default=[], metavar="[OUTPUT:]KEY=VALUE,...",
                   help="parity tolerance of one output (or of all without OUTPUT:), e.g. boxes:rtol=1e-3,atol=0.5; "
                        "keys rtol, atol, top1, snr, kind; repeat the flag per output; recorded in the manifest")
    p.add_argument("--calib-samples", type=positive_int, default=128, help="calibration samples (default 128)")
    p.add_argument("--calib-method", metavar="METHOD",
                   help="int8 calibration: histogram (default) or minmax (PT2E observers); nncf (NNCF ranges + fast "
                        "bias correction), nncf-smoothquant (+ SmoothQuant), nncf-bias-correction (full bias correction)")
    p.add_argument("--smooth-quant-alpha", type=float, metavar="ALPHA",
                   help="nncf-smoothquant: migration strength 0..1 (default: NNCF's, 0.95 for linear layers)")
    p.add_argument("--accuracy-budget", type=non_negative_float, metavar="POINTS",
                   help="int8: keep the most sensitive layers in float until the accuracy drop is within POINTS")
    p.add_argument("--min-sqnr", type=float_in(0, 100, low_open=True), metavar="DB",
                   help="int8: keep the most sensitive layers in float until the output SQNR vs fp32 reaches DB "
                        "(with --accuracy-budget: until both hold)")
    p.add_argument("--qat", type=non_negative_int, nargs="?", const=1, default=0, metavar="EPOCHS",
                   help="int8: fine-tune with fake quantization after calibration (default 1 epoch)")
    p.add_argument("--out", type=Path, help="bundle folder (default: beside the model)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not an edgekit bundle, or replace a damaged manifest or one for another model (files edgekit did not write are kept)")
    p.add_argument("--labels", help="class names: a text file (one per line) or a JSON list")
    p.add_argument("--meta", help="JSON with labels, preprocessing, input_names, output_names (for .pt2)")
    p.add_argument("--threads", type=positive_int, default=2, help="runtime threads while verifying (default 2)")
    p.add_argument("--lengths", default="",
                   help="sequence models: static lengths L of the prefill graphs, e.g. 256,1024 (default: the model's)")
    lora = p.add_mutually_exclusive_group()
    lora.add_argument("--adapter", metavar="ADAPTER",
                      help="merge this LoRA adapter (folder or adapter.safetensors) into the checkpoint, then export")
    lora.add_argument("--adapters", metavar="A,B,...",
                      help="package the base and these LoRA adapters in one bundle with shared base weights "
                           "(TFLite signatures, Core ML functions, ONNX + .onnx_adapter files)")
    p.add_argument("--npu", metavar="VENDOR:SOC", type=npu_target,
                   help="also compile the TFLite artifact ahead of time for an NPU, e.g. qualcomm:SM8650")
    add_require_flags(p)
    add_json_flag(p)


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"256,1024"`` → (256, 1024); every length a positive integer."""
    from edgekit import EdgekitError

    try:
        lengths = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EdgekitError(f"--lengths {text!r} is not a comma-separated list of integers") from None
    if any(n < 2 for n in lengths):
        raise EdgekitError(f"--lengths {text!r}: every length must be at least 2")
    return lengths


@command("convert", "export a model to ONNX / TFLite / Core ML, verify each artifact, write a bundle", configure)
def run(args: argparse.Namespace) -> int:
    import edgekit
    from edgekit.progress import status

    method = {"calib_method": args.calib_method} if args.calib_method else {}  # else the spec's default
    spec = edgekit.QuantSpec.parse(args.quant or args.precision, calib_source=args.calib,
                                   calib_samples=args.calib_samples, budget_points=args.accuracy_budget,
                                   min_sqnr_db=args.min_sqnr,
                                   qat_epochs=args.qat, smooth_quant_alpha=args.smooth_quant_alpha, **method)
    adapters = [p.strip() for p in args.adapters.split(",") if p.strip()] if args.adapters else None
    with stdout_to_stderr(args.json):
        bundle = edgekit.convert(args.model, to=args.formats, quant=spec, out=args.out, threads=args.threads,
                                 overwrite=args.overwrite, labels=args.labels, meta=args.meta,
                                 lengths=parse_lengths(args.lengths), adapter=args.adapter, adapters=adapters,
                                 npu=args.npu, sample_inputs=args.sample_inputs, tolerance=args.tolerance or None,
                                 progress=status)
    if args.json:
        listed = {"adapters": bundle.manifest.adapters} if adapters is not None else {}
        print_json({"bundle": str(bundle.path), **listed, "artifacts": [e.to_dict() for e in bundle.written]})
    elif adapters is not None:
        print_adapter_bundle(bundle.written)
    else:
        edgekit.print_table(bundle.rows(), f"{bundle.manifest.name} → {bundle.path} (verified on "
                            f"{bundle.verified_on})", columns="convert")
        print_quant_summary(bundle.written)
        print_graph_changes(bundle.written, always=bundle.manifest.source.get("kind") == "pt2")
    code = finish(bundle.path, bundle.written)
    if args.require:  # after the bundle is named: the artifacts are kept, the gate only decides the exit code
        for line in bundle.check_placement(args.require, args.min_coverage / 100):
            status(f"placement: {line}")
    return code


def print_graph_changes(entries, always: bool = False) -> None:
    """Per artifact written, what conversion did to the graph (rewrites applied, inputs cast), so a user
    knows what was shipped; printed for a user's .pt2 (``always``) or whenever something changed."""
    written = [e for e in entries if e.file]
    if not written or not (always or any(e.graph_changes for e in written)):
        return
    print("what conversion did to the graph:")
    for e in written:
        where = f"{e.format} {e.graph}".strip()
        print(f"  {where}: " + ("; ".join(e.graph_changes) or "nothing (the exported graph as it is)"))


def finish(bundle, entries) -> int:
    """Name the bundle, print each failed artifact's error; exit code 1 if any failed."""
    from edgekit.progress import status

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
    from edgekit import print_table

    if quant.get("layer_sqnr_db"):
        print_table(quant["layer_sqnr_db"], "per-layer SQNR vs fp32 (dB, higher is better)", columns="layers")
    mixed = quant.get("mixed_precision")
    if mixed:
        print(mixed_line(mixed))


def mixed_line(mixed: dict) -> str:
    """One line on the mixed-precision search: the goals asked, what was reached, the layers kept in float."""
    reached = []
    if mixed.get("budget_points") is not None:
        reached.append(f"budget {mixed['budget_points']} points, drop {mixed['drop_points']:.2f} points")
    if mixed.get("min_sqnr_db") is not None:
        reached.append(f"goal {mixed['min_sqnr_db']} dB, output SQNR {mixed['sqnr_db']} dB")
    missed = "" if mixed.get("goal_met", True) else " (goal NOT met: every layer tried)"
    kept = mixed["float_layers"]
    return (f"mixed precision: {'; '.join(reached)}{missed} on {mixed['evaluated_on']}; {len(kept)} layers kept in "
            f"float: {', '.join(kept) or 'none'}")


def print_adapter_bundle(entries) -> None:
    """Per artifact: size against the base alone; per variant: how to select it and its parity."""
    from edgekit import ADAPTER_SIZE_GOAL

    for e in entries:
        if e.error:
            print(f"{e.format}: failed: {e.error}")
            continue
        v = e.verification
        print(f"{e.file}: {e.size_bytes:,} B = {v['size_ratio_vs_base']:.2f}x the base alone "
              f"({v['base_size_bytes']:,} B; goal <= {ADAPTER_SIZE_GOAL}x), {v['status']} by {v['method']}")
        for var in e.variants:
            r = var["verification"]
            acc = f", accuracy {r['accuracy']:.2%}" if r.get("accuracy") is not None else ""
            print(f"  {var['name']:<28} {_selection(var['select'])}: max |Δ| {r.get('max_abs_diff', float('nan')):.2g}"
                  f"{acc} on {r.get('input_source', '')}")


def _selection(select: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in select.items()) if any(select.values()) else "no adapter (defaults)"
