"""`edgekit list models|recipes|formats|devices|datasets|augmentations`."""

from __future__ import annotations

import argparse
from typing import Callable

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json
from edgekit.registry import Registry

LISTINGS: Registry[Callable[[], list[dict[str, str]]]] = Registry("listing")


@LISTINGS.register("models")
def _models() -> list[dict[str, str]]:
    from edgekit import FAMILIES

    return [{"name": n, "description": FAMILIES.get(n).summary} for n in FAMILIES]


@LISTINGS.register("recipes")
def _recipes() -> list[dict[str, str]]:
    from edgekit import bundled_recipes, load_recipe

    return [{"name": n, "description": load_recipe(n).description} for n in bundled_recipes()]


@LISTINGS.register("formats")
def _formats() -> list[dict[str, str]]:
    from edgekit import CONVERTERS

    return [{"name": n, "description": f"{c.suffix} via {c.runtime}; precisions {', '.join(c.precisions)}; "
             f"extra [{c.extra}]"} for n, c in ((n, CONVERTERS.get(n)) for n in CONVERTERS)]


@LISTINGS.register("datasets")
def _datasets() -> list[dict[str, str]]:
    from edgekit import DATASETS

    return [{"name": n, "description": (DATASETS.get(n).__doc__ or "").strip().splitlines()[0]} for n in DATASETS]


@LISTINGS.register("domains")
def _domains() -> list[dict[str, str]]:
    from edgekit import DOMAINS

    return [{"name": n, "description": f"{DOMAINS.get(n).description}; for {DOMAINS.get(n).task} models"}
            for n in DOMAINS]


@LISTINGS.register("augmentations")
def _augmentations() -> list[dict[str, str]]:
    from edgekit import AUGMENTATIONS

    return [{"name": n, "description": (AUGMENTATIONS.get(n).__doc__ or "").strip().splitlines()[0] if AUGMENTATIONS.get(n).__doc__ else ""}
            for n in AUGMENTATIONS]


@LISTINGS.register("devices")
def _devices() -> list[dict[str, str]]:
    rows = [{"name": "host", "description": "this machine: PyTorch, ONNX Runtime, LiteRT interpreter"}]
    from edgekit import DEVICE_LISTERS

    for name in DEVICE_LISTERS:
        rows += DEVICE_LISTERS.get(name)()
    return rows


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=LISTINGS.names(), help="what to list")
    add_json_flag(p)


@command("list", "list model families, bundled recipes, export formats, devices, datasets", configure)
def run(args: argparse.Namespace) -> int:
    items = LISTINGS.get(args.what)()
    if args.json:
        print_json(items)
    else:
        width = max((len(i["name"]) for i in items), default=0)
        for item in items:
            print(f"{item['name']:<{width}}  {item['description']}")
    return 0
