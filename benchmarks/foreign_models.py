"""Models nobody here wrote × format × scheme: does each convert and verify, and how long does it take.

    python benchmarks/foreign_models.py [--models bert,vit,...] [--schemes fp32,int8,int8-weight]
                                        [--formats onnx,tflite,coreml] [--threads 1]
                                        [--out benchmarks/results/foreign_models.json]

The models are tests/foreign_models.py's (transformers' classes with tiny random configs, no downloads), each
saved as a .pt2 with its sample inputs as an .npz keyed by input name. Every cell is its own
``edgekit.convert`` call (one format, one scheme; static int8 calibrated on the sample inputs), so its time
is the whole conversion: loading the .pt2, the PyTorch reference, calibration, export and verification.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import edgekit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from foreign_models import FOREIGN_MODELS, SAMPLES, save_foreign  # noqa: E402


def spec_for(scheme: str, samples: Path) -> edgekit.QuantSpec:
    """The scheme; static int8 calibrated on every sample input."""
    spec = edgekit.QuantSpec.parse(scheme)
    return edgekit.QuantSpec.parse(spec, calib_source=str(samples), calib_samples=SAMPLES) \
        if spec.needs_calibration else spec


def supports(fmt: str, scheme: str) -> bool:
    try:
        edgekit.CONVERTERS.get(fmt).check_precision(scheme)
    except edgekit.EdgekitError:
        return False
    return True


def cell(pt2: Path, npz: Path, fmt: str, scheme: str, out: Path, threads: int) -> dict[str, Any]:
    """Convert ``pt2`` to one format at one scheme; what happened and how long it took."""
    start = time.perf_counter_ns()
    try:
        bundle = edgekit.convert(pt2, to=[fmt], quant=spec_for(scheme, npz), out=out, sample_inputs=npz,
                                 threads=threads)
    except Exception as exc:  # noqa: BLE001 - a benchmark records every outcome
        return {"status": "raised", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                "seconds": (time.perf_counter_ns() - start) / 1e9}
    seconds = (time.perf_counter_ns() - start) / 1e9
    entry = next((e for e in bundle.written if e.format == fmt), None)
    if entry is None:
        return {"status": "missing", "error": "no manifest entry", "seconds": seconds}
    check = entry.verification or {}
    return {"status": entry.status, "error": entry.error, "seconds": seconds, "size_bytes": entry.size_bytes,
            "max_abs_diff": check.get("max_abs_diff"), "top1_agreement": check.get("top1_agreement"),
            "method": check.get("method"), "inputs": check.get("inputs")}


def run(models: list[str], schemes: list[str], formats: list[str], work: Path,
        threads: int) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        pt2, npz, _ = save_foreign(name, work / name)
        for scheme in schemes:
            for fmt in formats:
                if not supports(fmt, scheme):
                    continue
                result = cell(pt2, npz, fmt, scheme, work / name / f"{scheme}_{fmt}", threads)
                rows.append({"model": name, "format": fmt, "scheme": scheme, **result})
                print_row(rows[-1])
    return rows


def print_row(row: dict[str, Any]) -> None:
    mark = "✅" if row["status"] == "verified" else "❌"
    diff = "" if row.get("max_abs_diff") is None else f"max|Δ| {row['max_abs_diff']:.2g}"
    print(f"{mark} {row['model']:<10} {row['scheme']:<12} {row['format']:<7} {row['seconds']:6.1f}s  {diff:<14} "
          f"{row['error'] or ''}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(FOREIGN_MODELS))
    parser.add_argument("--schemes", default="fp32,int8,int8-weight")
    parser.add_argument("--formats", default=",".join(edgekit.CONVERTERS.names()))
    parser.add_argument("--threads", type=int, default=1, help="PyTorch's and the runtimes' threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "foreign_models.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        rows = run(args.models.split(","), args.schemes.split(","), args.formats.split(","), Path(work),
                   args.threads)
    verified = sum(r["status"] == "verified" for r in rows)
    print(f"{verified}/{len(rows)} verified, {sum(r['seconds'] for r in rows):.0f}s in all")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                                    "edgekit": edgekit.__version__,
                                    "threads": args.threads, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
