"""Checkpoints: weights in safetensors, everything else in JSON. Nothing is ever unpickled."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.io import atomic_output, folder_holding, sha256_path
from edgekit.models import EdgeModel, config_to_dict, create_model

WEIGHTS, META = "model.safetensors", "meta.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode and its metadata."""

    model: EdgeModel
    meta: dict[str, Any]
    path: Path

    @property
    def sha256(self) -> str:
        return self.meta["weights_sha256"]

    @property
    def labels(self) -> list[str] | None:
        return self.meta.get("labels")


def save_checkpoint(model: EdgeModel, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/meta.json`` atomically."""
    from safetensors.torch import save_file

    family = getattr(type(model), "family_name", None)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(directory) as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "family": str(family)})
        full = {"family": family, "config": config_to_dict(model.config), **meta,
                "weights_sha256": sha256_path(tmp / WEIGHTS)}
        (tmp / META).write_text(json.dumps(full, indent=2, default=str))
    return Path(directory)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder (or its model.safetensors) into an eval-mode model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = folder_holding(path, WEIGHTS, META)
    if directory is None:
        raise EdgekitError(f"{path} is not an edgekit checkpoint (expected a folder with {WEIGHTS} and {META})")
    try:
        meta = json.loads((directory / META).read_text())
        model = create_model(meta["family"], meta["config"])
        state = load_file(str(directory / WEIGHTS))
    except (json.JSONDecodeError, KeyError, SafetensorError) as exc:
        raise EdgekitError(f"checkpoint {directory} is damaged: {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EdgekitError(f"checkpoint {directory} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return Checkpoint(model.eval(), meta, directory)
