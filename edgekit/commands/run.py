"""`edgekit run RECIPE`: the whole pipeline."""

from __future__ import annotations

import argparse
import sys

from edgekit.commands.base import command
from edgekit.commands.output import add_run_folder_flags, show_rows


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", default="cnn_digits",
                   help="recipe .toml path or bundled recipe name (default: cnn_digits)")
    add_run_folder_flags(p)


@command("run", "train → convert → verify → bench → report, for one recipe", configure)
def run(args: argparse.Namespace) -> int:
    import edgekit
    from edgekit.progress import status

    recipe = edgekit.load_recipe(args.recipe)
    outcome = edgekit.run(recipe, args.out, overwrite=args.overwrite)
    show_rows(args, outcome.rows, f"{recipe.name}: {outcome.report['reference']}", data=outcome.report)
    line = ["edgekit", "run", args.recipe, *(["--out", str(args.out)] if args.out else []),
            *(["--overwrite"] if args.overwrite else []), *(["--json"] if args.json else [])]
    html = edgekit.write_html_report(outcome.report_path, command=line)  # the pipeline's page, with this command
    status(f"report: {outcome.report_path}, {html}")
    gate = outcome.report.get("placement_gate")
    if gate and not gate["passed"]:
        print(f"edgekit: error: {gate['message']}", file=sys.stderr)
    return 0 if outcome.ok else 1
