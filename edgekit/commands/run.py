"""`edgekit run RECIPE`: the whole pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, show_rows


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", default="cnn_digits",
                   help="recipe .toml path or bundled recipe name (default: cnn_digits)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<recipe name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder edgekit did not create (its other files are kept)")
    add_json_flag(p)


@command("run", "train → convert → verify → bench → report, for one recipe", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.pipeline import run_pipeline
    from edgekit.progress import status
    from edgekit.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    outcome = run_pipeline(recipe, args.out or Path("runs") / recipe.name, overwrite=args.overwrite)
    show_rows(args, outcome.rows, f"{recipe.name}: {outcome.report['reference']}", data=outcome.report)
    status(f"report: {outcome.report_path}")
    return 0 if outcome.ok else 1
