"""Measure LoRA specialization on a checkpoint: adapters per domain, merged and shared-base bundles.

    python benchmarks/lora_adapters.py CHECKPOINT [--domains digits_inverted_rotated,digits_mirrored_noisy]
        [--formats onnx,tflite,coreml] [--precisions fp32,int8-weight] [--rank 8] [--alpha 2×rank]
        [--steps 300] [--examples 200] [--lr 0.01]
        [--out benchmarks/results/lora.json]

Trains one adapter per domain (metric before/after, trainable fraction, seconds), packages base +
all adapters per format and precision (size vs the base alone written the same way, parity of every
variant) and times each variant and adapter switching. Writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import edgekit

ADAPTER_KEYS = ("name", "domain", "data_description", "rank", "alpha", "metric", "before", "after",
                "trainable_fraction", "trainable_parameters", "train_seconds", "steps", "examples", "test_examples",
                "validation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--domains", default="digits_inverted_rotated,digits_mirrored_noisy")
    parser.add_argument("--formats", default="onnx,tflite,coreml")
    parser.add_argument("--precisions", default="fp32,int8-weight")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=None, help="default: 2 × rank")
    parser.add_argument("--targets", default="")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lora.json"))
    args = parser.parse_args()
    alpha = 2.0 * args.rank if args.alpha is None else args.alpha
    options = {"rank": args.rank, "alpha": alpha, "steps": args.steps, "examples": args.examples, "lr": args.lr,
               "targets": tuple(t for t in args.targets.split(",") if t)}
    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_avg_1m": os.getloadavg()[0]}, "checkpoint": args.checkpoint,
              "settings": {k: str(v) for k, v in vars(args).items() if k != "checkpoint"} | {"alpha": alpha},
              "adapters": [], "artifacts": [], "bench": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = [_adapt(args.checkpoint, domain, Path(tmp) / domain, options, result)
                 for domain in args.domains.split(",")]
        for precision in args.precisions.split(","):
            bundle = edgekit.convert(args.checkpoint, to=args.formats.split(","), adapters=paths, quant=precision,
                                     out=Path(tmp) / f"bundle_{precision}")
            result["artifacts"] += [_artifact_row(e) for e in bundle.artifacts]
            for e in bundle.artifacts:
                print(f"{e['file']}: {e['size_bytes']:,} B, {e['verification']['size_ratio_vs_base']:.2f}x base"
                      if e["file"] else f"{e['format']} {precision}: {e['error']}")
            timed = edgekit.bench(bundle.path, threads=2, warmup=20, runs=200).results
            result["bench"] += [r.to_dict() for r in timed if r.format != "pytorch"]  # the artifacts' rows only
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


def _adapt(checkpoint: str, domain: str, out: Path, options: dict[str, Any], result: dict[str, Any]) -> Path:
    """Train one adapter for ``domain``; record and print what it learned. Returns its folder."""
    adapted = edgekit.adapt(checkpoint, domain=domain, out=out, **options)
    m = adapted.meta
    result["adapters"].append({k: m[k] for k in ADAPTER_KEYS})
    print(f"{domain}: {m['metric']} {m['before'][m['metric']]:.4f} → {m['after'][m['metric']]:.4f} "
          f"({m['trainable_fraction']:.2%} trainable, {m['train_seconds']:.0f} s)")
    return adapted.path


def _artifact_row(e: dict[str, Any]) -> dict[str, Any]:
    v = e["verification"] or {}
    return {"file": e["file"], "format": e["format"], "precision": e["precision"], "status": e["status"],
            "error": e["error"], "size_bytes": e["size_bytes"], "base_size_bytes": v.get("base_size_bytes"),
            "size_ratio_vs_base": v.get("size_ratio_vs_base"),
            "variants": [{"name": x["name"], "select": x["select"],
                          **{k: x["verification"].get(k) for k in ("status", "method", "max_abs_diff", "accuracy")}}
                         for x in e["variants"] or []]}


if __name__ == "__main__":
    main()
