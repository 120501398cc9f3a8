"""SSM vs Transformer byte LMs, trained the same way on the same data: quality, latency, memory, size.

    python benchmarks/ssm_vs_transformer.py [--train-seconds 600] [--ssm CKPT --transformer CKPT]
        [--lengths 128,1024,4096] [--contexts 128,1024,4096] [--runs 10] [--work runs/ssm_vs_transformer]
        [--out benchmarks/results/ssm_vs_transformer.json]

Without checkpoints it trains ``recipes/ssm_lm.toml`` and ``recipes/transformer_lm.toml`` (same corpus,
split, batch and learning rate; about the same parameter count) one after the other, each capped at
``--train-seconds`` of wall time on this machine: the same CPU budget. Quality is held-out bits per byte on
the test files. Latency and memory use the trained configurations (random weights of the same shapes
where a longer context than trained is needed: latency does not depend on the values). Per runtime
(ONNX Runtime, LiteRT): prefill latency vs L, per-token step latency vs context length, peak memory of
the step artifact vs context length, and artifact sizes. Writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from seq_scaling import FORMATS, plot, sweep  # noqa: E402

import edgekit  # noqa: E402

RECIPES = {"ssm": "ssm_lm", "transformer": "transformer_lm"}


def trained(family: str, args: argparse.Namespace) -> Path:
    """The family's checkpoint: given, or trained from its recipe within the time budget."""
    given = getattr(args, family)
    if given:
        return Path(given)
    recipe = edgekit.load_recipe(RECIPES[family])
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, max_seconds=args.train_seconds))
    print(f"training {recipe.name} for up to {args.train_seconds:.0f} s", flush=True)
    return edgekit.train(recipe, args.work / family).checkpoint


def quality(path: Path) -> dict:
    """Parameters, config and held-out metrics recorded in the checkpoint."""
    trained = edgekit.Trained.load(path)
    return {"checkpoint": str(path), "params": sum(p.numel() for p in edgekit.load(path).parameters()),
            "config": trained.config, "metrics": trained.metrics}


def sweep_config(config: dict) -> dict:
    """The trained configuration without the keys the sweep sets per point."""
    return {k: v for k, v in config.items() if k not in ("export_lengths", "max_context")}


def main() -> None:
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ssm", help="a trained ssm byte-LM checkpoint (default: train recipes/ssm_lm.toml)")
    parser.add_argument("--transformer", help="a trained transformer byte-LM checkpoint (default: train it)")
    parser.add_argument("--train-seconds", type=float, default=600.0)
    parser.add_argument("--lengths", type=ints, default=[128, 1024, 4096])
    parser.add_argument("--contexts", type=ints, default=[128, 1024, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("runs/ssm_vs_transformer"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ssm_vs_transformer.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {family: quality(trained(family, args)) for family in RECIPES}
    for family, q in models.items():
        print(f"{family}: {q['params']:,} params, test bits/byte {q['metrics'].get('test_bits_per_byte')}")
    rows = sweep({f: sweep_config(q["config"]) for f, q in models.items()}, args, memory=True)
    result = {"models": models, "train_seconds_budget": args.train_seconds, "threads": args.threads,
              "runs": args.runs, "rows": rows,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    title = "  ".join(f"{f}: {q['params'] / 1e3:.0f}k params, {q['metrics'].get('test_bits_per_byte', float('nan')):.3f}"
                      f" bits/byte" for f, q in models.items())
    plot(rows, args.out.with_suffix(".png"), ("prefill", "step", "memory"), title)
    print(f"runtimes {', '.join(FORMATS)}; wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
