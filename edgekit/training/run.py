"""Recipe → trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from edgekit.checkpoint import save_checkpoint
from edgekit.data import load_dataset
from edgekit.models import create_model
from edgekit.recipe import Recipe
from edgekit.training.loop import TrainResult, train_model
from edgekit.versions import tool_versions


def train_recipe(recipe: Recipe, out_dir: str | Path) -> tuple[Path, TrainResult]:
    """Train the recipe's model on its data and save ``out_dir/checkpoint``."""
    data = load_dataset(recipe.data["source"], **recipe.data_options())
    torch.manual_seed(recipe.seed)  # the initial weights too: the same recipe and seed give the same checkpoint
    model = create_model(recipe.model["family"], recipe.model_options())
    result = train_model(model, data, recipe.train, recipe.seed)
    meta = {
        "recipe": recipe.to_dict(),
        "seed": recipe.seed,
        "metrics": result.metrics,
        "labels": data.labels,
        "preprocessing": data.preprocessing.to_dict(),
        "input_shape": [1, *data.input_shape],
        "task": data.task,
        "dataset": {"name": data.name, **data.meta, "sizes": {
            "train": len(data.train), "val": len(data.val), "test": len(data.test)}},
        "versions": tool_versions(),
    }
    path = save_checkpoint(result.model, Path(out_dir) / "checkpoint", meta)
    return path, result
