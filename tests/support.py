"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import edgekit


def train_and_convert(out: Path, recipe_text: str, name: str,
                      formats: tuple[str, ...] | None = None) -> tuple[Path, Path]:
    """Write ``recipe_text`` as ``<name>.toml`` in ``out``, train it into ``out/run`` and convert every graph of
    the checkpoint to ``formats`` (default: every registered one) in ``out/bundle``, each verified.
    Returns (checkpoint, bundle)."""
    (out / f"{name}.toml").write_text(recipe_text)
    trained = edgekit.train(out / f"{name}.toml", out / "run")
    bundle = edgekit.convert(trained.checkpoint, to=formats or edgekit.CONVERTERS.names(), out=out / "bundle")
    return trained.checkpoint, bundle.path
