"""`edgekit train RECIPE`: train a recipe's model and save a checkpoint."""

from __future__ import annotations

import argparse

from edgekit.commands.base import command
from edgekit.commands.output import add_run_folder_flags, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe .toml path or bundled recipe name (see `edgekit list recipes`)")
    add_run_folder_flags(p)


@command("train", "train a recipe's model; writes OUT/checkpoint (safetensors + meta.json)", configure)
def run(args: argparse.Namespace) -> int:
    import edgekit

    trained = edgekit.train(args.recipe, args.out, overwrite=args.overwrite)
    path = trained.checkpoint
    if args.json:
        print_json({"checkpoint": str(path), "metrics": trained.metrics})
    else:
        m = trained.metrics
        scores = ", ".join(f"{k.replace('_', ' ')} {v:.2%}" if k.endswith("accuracy") else f"{k.replace('_', ' ')} {v:.4g}"
                           for k, v in m.items() if k.startswith(("test_", "val_")))
        print(f"checkpoint: {path}\n{scores}, {m['epochs']} epochs in {m['train_seconds']:.1f} s")
    return 0
