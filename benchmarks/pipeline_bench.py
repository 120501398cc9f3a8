"""Measure the default pipeline on this machine: stage wall times, accuracy, per-runtime latency.

    python benchmarks/pipeline_bench.py [--recipe cnn_digits] [--out benchmarks/results/pipeline.json]

Prints the report table and writes JSON (machine facts, stage seconds, training metrics, rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import edgekit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cnn_digits")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline.json"))
    args = parser.parse_args()
    recipe = edgekit.load_recipe(args.recipe)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = edgekit.run(recipe, Path(tmp) / recipe.name)
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "load_avg_1m": os.getloadavg()[0]},
        "recipe": recipe.name,
        "stage_seconds": outcome.report["stage_seconds"],
        "training": outcome.report["training"],
        "rows": outcome.rows,
    }
    edgekit.print_table(outcome.rows, f"{recipe.name}")
    print(json.dumps({"stage_seconds": result["stage_seconds"], "test_accuracy": result["training"]["test_accuracy"]}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
