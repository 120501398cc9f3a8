"""Quantization method × format: size, accuracy (clean and a harder noisy+shifted test set), median
latency, speed-up over the same format's fp32 artifact and over PyTorch eager.

    python benchmarks/quant_matrix.py CHECKPOINT [--methods fp32,int8,...] [--formats onnx,tflite,coreml]
                                      [--runs 100] [--out benchmarks/results/quant_matrix.json]

Prints a table and writes JSON. Core ML cannot run on Linux: its rows have size only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgekit.bench import bench_torch
from edgekit.bench.host import bench_artifact
from edgekit.convert import convert_model
from edgekit.converters import CONVERTERS, RunnerUnavailable
from edgekit.quant import QuantSpec
from edgekit.sources import load_source, reference_for
from edgekit.verify import ReferenceData, compare, reference_from_model, tolerance_for

METHODS = "fp32,int8,int8-dynamic,int8-weight,int4-weight,palettize4"


def harder(source, reference: ReferenceData, seed: int = 0) -> ReferenceData:
    """The test split with Gaussian noise (σ = 0.6 in normalized units) and a random shift of up to 3 px."""
    gen = np.random.default_rng(seed)
    samples = []
    for (x,) in reference.inputs:
        shifted = np.roll(x, tuple(gen.integers(-3, 4, size=2)), axis=(2, 3))
        samples.append((torch.from_numpy((shifted + gen.normal(0, 0.6, x.shape)).astype(np.float32)),))
    return reference_from_model(source.module, samples, reference.labels, f"noisy+shifted {reference.description}")


def measure(method: str, formats: list[str], source, reference, hard, bundle: Path, args) -> list[dict]:
    spec = QuantSpec.parse(method, calib_samples=args.calib_samples)
    usable = [f for f in formats if spec.scheme in CONVERTERS.get(f).quant_methods]
    if not usable:
        return []
    manifest = convert_model(source, usable, bundle, reference, precision=spec)
    rows = []
    for fmt in usable:
        entry = next(a for a in manifest.artifacts if a.format == fmt and a.precision == spec.tag)
        row = {"method": spec.tag, "format": fmt, "status": entry.status, "size_bytes": entry.size_bytes,
               "accuracy": entry.verification.get("accuracy"), "error": entry.error}
        if entry.file:
            run = CONVERTERS.get(fmt).runner(bundle / entry.file, args.threads)
            if not isinstance(run, RunnerUnavailable):
                row["hard_accuracy"] = compare(run, hard, tolerance_for("int8"), method=fmt).get("accuracy")
                bench = bench_artifact(fmt, bundle / entry.file, list(reference.inputs[0]), threads=args.threads,
                                       warmup=args.runs // 5, runs=args.runs)
                row["median_ms"] = bench.latency.median_ms if bench.latency else None
        rows.append(row)
    return rows


def add_ratios(rows: list[dict], torch_ms: float) -> None:
    base = {r["format"]: r for r in rows if r["method"] == "fp32"}
    for r in rows:
        fp32 = base.get(r["format"], {})
        r["size_vs_fp32"] = r["size_bytes"] / fp32["size_bytes"] if r["size_bytes"] and fp32.get("size_bytes") else None
        ms = r.get("median_ms")
        r["speedup_vs_fp32"] = fp32["median_ms"] / ms if ms and fp32.get("median_ms") else None
        r["speedup_vs_pytorch"] = torch_ms / ms if ms else None


def print_rows(rows: list[dict], torch_row: dict) -> None:
    def f(v, spec):
        return "—" if v is None else format(v, spec)

    print(f"pytorch eager: accuracy {torch_row['accuracy']:.2%}, noisy {torch_row['hard_accuracy']:.2%}, "
          f"median {torch_row['median_ms']:.3f} ms")
    head = f"{'method':<13}{'format':<8}{'size':>10}{'×fp32':>7}{'acc':>8}{'noisy acc':>10}{'ms':>8}{'×fp32':>7}{'×torch':>7}"
    print(head)
    for r in rows:
        print(f"{r['method']:<13}{r['format']:<8}{f(r['size_bytes'], ',d'):>10}{f(r['size_vs_fp32'], '.2f'):>7}"
              f"{f(r['accuracy'], '.2%'):>8}{f(r.get('hard_accuracy'), '.2%'):>10}{f(r.get('median_ms'), '.3f'):>8}"
              f"{f(r['speedup_vs_fp32'], '.2f'):>7}{f(r['speedup_vs_pytorch'], '.2f'):>7}"
              + (f"  {r['error']}" if r["error"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--formats", default="onnx,tflite,coreml")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quant_matrix.json"))
    args = parser.parse_args()
    source = load_source(args.checkpoint)
    reference = reference_for(source)
    hard = harder(source, reference)
    labels = reference.labels
    torch_row = {"accuracy": float(np.mean([o[0].argmax() == y for o, y in zip(reference.outputs, labels)])),
                 "hard_accuracy": float(np.mean([o[0].argmax() == y for o, y in zip(hard.outputs, labels)]))}
    x = tuple(torch.from_numpy(v) for v in reference.inputs[0])
    torch_row["median_ms"] = bench_torch(source.module, x, threads=args.threads, warmup=args.runs // 5,
                                         runs=args.runs).latency.median_ms
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            rows += measure(method, args.formats.split(","), source, reference, hard, Path(tmp) / method, args)
    add_ratios(rows, torch_row["median_ms"])
    print_rows(rows, torch_row)
    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_avg_1m": os.getloadavg()[0]},
              "checkpoint": str(args.checkpoint), "pytorch": torch_row, "hard_set": hard.description, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
