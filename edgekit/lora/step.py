"""The recipe's ``[adapt]`` step inside `edgekit run`: train the adapter (packaging it with the base is
the pipeline's ``package_step``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.lora.adapter import safe_name
from edgekit.lora.train import AdaptOptions, AdaptResult, adapt_checkpoint

if TYPE_CHECKING:
    from edgekit.recipe import Recipe


def adapt_step(recipe: Recipe, checkpoint: Path, out: Path) -> AdaptResult:
    """Train the recipe's adapter into ``out/adapters/<name>``; returns the AdaptResult."""
    spec = recipe.adapt
    name = safe_name(spec.name or spec.domain or Path(spec.data).stem)
    options = AdaptOptions(rank=spec.rank, alpha=spec.alpha, targets=tuple(spec.targets), steps=spec.steps,
                           examples=spec.examples, lr=spec.lr, seed=recipe.seed, threads=recipe.train.threads)
    return adapt_checkpoint(checkpoint, out / "adapters" / name, domain=spec.domain or None,
                            data=spec.data or None, options=options, name=name)
