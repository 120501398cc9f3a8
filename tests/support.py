"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path


def train_and_convert(out: Path, recipe_text: str, name: str,
                      formats: tuple[str, ...] = ("onnx", "tflite", "coreml")) -> tuple[Path, Path]:
    """Write ``recipe_text`` as ``<name>.toml`` in ``out``, train it there and convert every graph of the
    checkpoint to ``formats`` in ``out/bundle``, each verified. Returns (checkpoint, bundle)."""
    from edgekit.conversion import convert_graphs
    from edgekit.recipe import load_recipe
    from edgekit.sources import graph_sources, load_source, reference_for
    from edgekit.train import train_recipe

    (out / f"{name}.toml").write_text(recipe_text)
    checkpoint, _ = train_recipe(load_recipe(out / f"{name}.toml"), out)
    sources = graph_sources(load_source(checkpoint))
    convert_graphs(sources, list(formats), out / "bundle", [reference_for(s) for s in sources])
    return checkpoint, out / "bundle"
