"""`edgekit app-code BUNDLE --lang swift|kotlin [--out DIR]`."""

from __future__ import annotations

import argparse

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json

LANGS = ("swift", "kotlin")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle folder (with manifest.json)")
    p.add_argument("--lang", action="append", choices=LANGS, required=True,
                   help="swift (Core ML wrappers) or kotlin (LiteRT and ONNX Runtime Android wrappers); repeatable")
    p.add_argument("--out", metavar="DIR",
                   help="a new folder, or one holding only edgekit app code, replaced whole (default: BUNDLE/app, "
                        "refreshed under the bundle's lock and recorded in its manifest)")
    add_json_flag(p)


@command("app-code", "generate typed Swift / Kotlin wrappers and a golden self-test from a bundle", configure)
def run(args: argparse.Namespace) -> int:
    import edgekit

    written = edgekit.app_code(args.bundle, args.lang, args.out)
    if args.json:
        print_json({"bundle": args.bundle, "files": [str(p) for p in written]})
    else:
        for path in written:
            print(path)
    return 0
