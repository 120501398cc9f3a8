"""The pipeline's steps as verbs: ``load_recipe``, ``train``, ``run``, ``adapt``, ``load``, ``create_model``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from edgekit.models import EdgeModel
    from edgekit.pipeline import RunOutcome
    from edgekit.recipe import Recipe


@dataclass
class Trained:
    """``edgekit.train`` (or ``Trained.load(checkpoint)``): the checkpoint folder, its held-out metrics, the model
    family and its config values."""

    checkpoint: Path
    metrics: dict[str, Any]
    family: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, checkpoint: str | Path) -> Trained:
        """What an existing checkpoint folder records (weights and meta.json are checked, nothing unpickled)."""
        from edgekit.checkpoint import load_checkpoint
        from edgekit.models import config_to_dict

        ckpt = load_checkpoint(checkpoint)
        return cls(ckpt.path, dict(ckpt.meta.get("metrics") or {}), ckpt.meta["family"],
                   config_to_dict(ckpt.model.config))


@dataclass
class Adapted:
    """``edgekit.adapt``: the adapter folder and what its adapter.json records (name, rank, domain, metric before
    and after, …). Path-like: give it wherever an adapter folder is expected (``convert(adapters=[...])``)."""

    path: Path
    meta: dict[str, Any]

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def load_recipe(recipe: str | Path | Recipe) -> Recipe:
    """A recipe, validated: a bundled name (``cnn_digits``) or a .toml path; a loaded ``Recipe`` is returned as is.
    Change one with ``dataclasses.replace`` before ``edgekit.train`` / ``edgekit.run``."""
    from edgekit.recipe import Recipe, load_recipe as parse

    return recipe if isinstance(recipe, Recipe) else parse(recipe)


def train(recipe: str | Path | Recipe, out: str | Path | None = None, *, overwrite: bool = False) -> Trained:
    """Train a recipe (a bundled name, a .toml path or a loaded ``Recipe``) into ``out/checkpoint`` (default
    ``runs/<name>``)."""
    from edgekit.io import check_output_dir
    from edgekit.training.run import train_recipe

    loaded = load_recipe(recipe)
    out = _run_folder(loaded, out)
    check_output_dir(out, "run", overwrite)
    from edgekit.models import config_to_dict

    path, result = train_recipe(loaded, out)  # the trained model is at hand: no need to read it back
    return Trained(path, dict(result.metrics), loaded.model["family"], config_to_dict(result.model.config))


def _run_folder(recipe: Recipe, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("runs") / recipe.name


def run(recipe: str | Path | Recipe, out: str | Path | None = None, *, overwrite: bool = False) -> RunOutcome:
    """The whole pipeline, as ``edgekit run``: train, convert to the recipe's formats, verify, bench and write
    ``out/report.json`` (default ``runs/<name>``). Returns ``.rows`` (the report table), ``.report``,
    ``.report_path`` and ``.ok``."""
    from edgekit.pipeline import run_pipeline

    loaded = load_recipe(recipe)
    return run_pipeline(loaded, _run_folder(loaded, out), overwrite=overwrite)


def adapt(checkpoint: str | Path, *, domain: str | None = None, data: str | Path | None = None,
          out: str | Path | None = None, overwrite: bool = False, name: str | None = None,
          **options: Any) -> Adapted:
    """Train a LoRA adapter (``options``: rank, alpha, targets, steps, examples, lr, seed) for a checkpoint
    on a registered ``domain`` or your ``data``; ``name`` (default: the domain or data name) names it and its
    folder (default: ``adapters/<name>`` beside the checkpoint)."""
    from edgekit.checkpoint import load_checkpoint
    from edgekit.config import dataclass_from_dict
    from edgekit.io import check_output_dir
    from edgekit.lora import AdaptOptions, adapt_checkpoint
    from edgekit.lora.adapter import safe_name

    ckpt = load_checkpoint(checkpoint)
    adapter_name = safe_name(name or domain or Path(data or "adapter").stem)
    out = Path(out) if out is not None else ckpt.path.parent / "adapters" / adapter_name
    check_output_dir(out, "adapter", overwrite)  # before training
    checked = dataclass_from_dict(AdaptOptions, dict(options), "edgekit.adapt")  # unknown keys and ranges named
    result = adapt_checkpoint(ckpt, out, domain=domain, data=data, options=checked, name=adapter_name)
    return Adapted(result.path, result.meta)


def load(checkpoint: str | Path) -> torch.nn.Module:
    """The eval-mode model of an edgekit checkpoint folder (safetensors + JSON; nothing unpickled)."""
    from edgekit.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint).model


def create_model(family: str, **config: Any) -> EdgeModel:
    """A new model of a registered family (``edgekit.FAMILIES``: cnn, ssm, transformer, …) from its config values,
    e.g. ``create_model("ssm", head="byte_lm", d_model=128)``; a wrong key or value names it and the options."""
    from edgekit.models import create_model as build

    return build(family, config)
