"""`edgekit train RECIPE`: train a recipe's model and save a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe .toml path or bundled recipe name (see `edgekit list recipes`)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<recipe name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder edgekit did not create (its other files are kept)")
    add_json_flag(p)


@command("train", "train a recipe's model; writes OUT/checkpoint (safetensors + meta.json)", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.io import check_output_dir
    from edgekit.recipe import load_recipe
    from edgekit.training.run import train_recipe

    recipe = load_recipe(args.recipe)
    out = check_output_dir(args.out or Path("runs") / recipe.name, "run", args.overwrite)  # before training
    path, result = train_recipe(recipe, out)
    if args.json:
        print_json({"checkpoint": str(path), "metrics": result.metrics})
    else:
        m = result.metrics
        scores = ", ".join(f"{k.replace('_', ' ')} {v:.2%}" if k.endswith("accuracy") else f"{k.replace('_', ' ')} {v:.4g}"
                           for k, v in m.items() if k.startswith(("test_", "val_")))
        print(f"checkpoint: {path}\n{scores}, {m['epochs']} epochs in {m['train_seconds']:.1f} s")
    return 0
