"""Quantization method × format: size, accuracy (clean and a harder noisy+shifted test set), median
latency, speed-up over the same format's fp32 artifact and over PyTorch eager.

    python benchmarks/quant_matrix.py CHECKPOINT [--methods fp32,int8,...] [--formats onnx,tflite,coreml]
                                      [--runs 100] [--out benchmarks/results/quant_matrix.json]

Prints a table and writes JSON. Latency is timed round-robin over all artifacts (one call of each per
round), so load on a shared machine affects every row alike. Core ML cannot run on Linux: its rows have
size and accuracy from the MIL reference evaluator, no latency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

import edgekit

METHODS = "fp32,int8,int8-dynamic,int8-weight,int4-weight,palettize4"
Run = Callable[[list[np.ndarray]], list[np.ndarray]]  # a runner: batch-1 input arrays → output arrays


class LabelledSet(NamedTuple):
    """Batch-1 input tuples with their true labels."""

    inputs: list[tuple[np.ndarray, ...]]
    labels: np.ndarray
    description: str


def harder(reference: LabelledSet, seed: int = 0) -> LabelledSet:
    """The test split with Gaussian noise (σ = 0.3 in normalized units, ~0.1 of the pixel range) and a random
    shift of up to 2 px: the float CNN scores ~68% there (σ 0.6 left it near chance; σ 0.2 at ~89% too easy)."""
    gen = np.random.default_rng(seed)
    samples = []
    for (x,) in reference.inputs:
        shifted = np.roll(x, tuple(gen.integers(-2, 3, size=2)), axis=(2, 3))
        samples.append(((shifted + gen.normal(0, 0.3, x.shape)).astype(np.float32),))
    return LabelledSet(samples, reference.labels, f"noisy+shifted {reference.description}")


def accuracy(run: Run, test: LabelledSet) -> float:
    """Top-1 accuracy of ``run`` (its first output) on ``test``."""
    return float(np.mean([int(np.argmax(run(list(x))[0])) == int(y) for x, y in zip(test.inputs, test.labels)]))


def measure(method: str, formats: list[str], args: argparse.Namespace, test: LabelledSet, hard: LabelledSet,
            out: Path, runners: dict[Any, Callable[[], object]]) -> list[dict]:
    """Convert with ``method`` to every format that supports it; accuracy now, latency later (interleaved)."""
    spec = edgekit.QuantSpec.parse(method, calib_samples=args.calib_samples)
    usable = [f for f in formats if spec.scheme in edgekit.CONVERTERS.get(f).quant_methods]
    if not usable:
        return []
    bundle = edgekit.convert(args.checkpoint, to=usable, quant=spec, out=out, threads=args.threads)
    rows = []
    for fmt in usable:
        entry = next(a for a in bundle.artifacts if a["format"] == fmt and a["precision"] == spec.tag)
        row = {"method": spec.tag, "format": fmt, "status": entry["status"], "size_bytes": entry["size_bytes"],
               "accuracy": entry["verification"].get("accuracy"), "error": entry["error"]}
        if entry["file"]:
            run = bundle.runner(entry["file"], args.threads)
            if isinstance(run, edgekit.RunnerUnavailable):  # Core ML on Linux: accuracy only
                run = edgekit.CONVERTERS.get(fmt).reference_runner(bundle.path / entry["file"])
                row["accuracy_method"] = "mil-reference"
            else:
                inputs = list(test.inputs[0])
                runners[(spec.tag, fmt)] = lambda run=run, inputs=inputs: run(inputs)
            if run is not None:
                row["hard_accuracy"] = accuracy(run, hard)
        rows.append(row)
    return rows


def add_latency(rows: list[dict], runners: dict[Any, Callable[[], object]], torch_call: Callable[[], object],
                args: argparse.Namespace) -> float:
    """Median latency of every runnable artifact and of PyTorch eager, timed round-robin so that load
    changes on a shared machine reach all of them alike. Returns PyTorch's median."""
    stats = edgekit.time_interleaved({**runners, "pytorch": torch_call}, warmup=args.runs // 5, runs=args.runs,
                                     threads=args.threads)
    for row in rows:
        found = stats.get((row["method"], row["format"]))
        row["median_ms"] = found.median_ms if found else None
    return stats["pytorch"].median_ms


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
    model = edgekit.load(args.checkpoint)
    reference = edgekit.reference(args.checkpoint)  # the recipe's whole test split, as convert verifies on
    test = LabelledSet(reference.inputs, reference.labels, reference.description)
    hard = harder(test)

    def torch_run(xs: list[np.ndarray]) -> list[np.ndarray]:
        return [model(*(torch.from_numpy(x) for x in xs)).numpy()]

    rows: list[dict] = []
    runners: dict[Any, Callable[[], object]] = {}
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        torch_row = {"accuracy": accuracy(torch_run, test), "hard_accuracy": accuracy(torch_run, hard)}
        x = tuple(torch.from_numpy(v) for v in test.inputs[0])
        for method in args.methods.split(","):
            rows += measure(method, args.formats.split(","), args, test, hard, Path(tmp) / method, runners)
        torch_row["median_ms"] = add_latency(rows, runners, lambda: model(*x), args)
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
