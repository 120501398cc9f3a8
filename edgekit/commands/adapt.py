"""`edgekit adapt CHECKPOINT --domain NAME | --data PATH`: train a LoRA adapter for a base checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json
from edgekit.commands.validate import float_in, non_negative_int, positive_float, positive_int


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="base edgekit checkpoint folder")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--domain", help="a registered domain (see `edgekit list domains`)")
    where.add_argument("--data", help="your own examples: an image folder (one subfolder per label) or a text file")
    p.add_argument("--rank", type=positive_int, default=8, help="LoRA rank r (default 8)")
    p.add_argument("--alpha", type=positive_float, default=16.0, help="LoRA alpha; updates are scaled by alpha/r (default 16)")
    p.add_argument("--targets", default="",
                   help="comma-separated globs of module names to adapt, e.g. 'layers.*.in_proj' "
                        "(default per family: cnn every full conv + linear, ssm in/out projections, transformer "
                        "attention projections; a byte LM's tied output projection is head.output)")
    p.add_argument("--steps", type=positive_int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--examples", type=positive_int, default=200, help="training examples to use (default 200)")
    p.add_argument("--lr", type=float_in(0, 1, low_open=True), default=1e-2, help="AdamW learning rate (default 0.01)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--name", help="adapter name (signature/function names in bundles; default: domain or data name)")
    p.add_argument("--out", type=Path, help="adapter folder (default: beside the checkpoint, adapters/<name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder edgekit did not create (its other files are kept)")
    add_json_flag(p)


@command("adapt", "train a LoRA adapter for a checkpoint on a domain or your data; writes adapter.safetensors + .json",
         configure)
def run(args: argparse.Namespace) -> int:
    import edgekit

    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    result = edgekit.adapt(args.checkpoint, domain=args.domain, data=args.data, out=args.out, overwrite=args.overwrite,
                           name=args.name, rank=args.rank, alpha=args.alpha, targets=targets, steps=args.steps,
                           examples=args.examples, lr=args.lr, seed=args.seed)
    m = result.meta
    if args.json:
        print_json({"adapter": str(result.path), **m})
        return 0
    metric = m["metric"]
    fmt = (lambda v: f"{v:.2%}") if metric == "accuracy" else (lambda v: f"{v:.4f}")
    print(f"adapter: {result.path}\n{m['data_description']}\n"
          f"{metric.replace('_', ' ')} on held-out {m['test_examples']}: {fmt(m['before'][metric])} → "
          f"{fmt(m['after'][metric])}; rank {m['rank']}, {m['trainable_parameters']:,} trainable parameters "
          f"({m['trainable_fraction']:.2%} of {m['base_parameters']:,}), {m['steps']} steps on {m['examples']} "
          f"examples in {m['train_seconds']:.1f} s")
    return 0
