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
        return self.meta["weights_sha256"]  # present: load_checkpoint checks REQUIRED_META

    @property
    def labels(self) -> list[str] | None:
        return self.meta.get("labels")


def save_checkpoint(model: EdgeModel, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/meta.json`` atomically."""
    from safetensors.torch import save_file

    family = getattr(type(model), "family_name", None)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(directory, kind="checkpoint") as tmp:
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
    meta = read_meta(directory / META)
    try:
        model = create_model(meta["family"], meta["config"])
    except EdgekitError as exc:
        raise EdgekitError(f"{directory / META}: {exc}") from None
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise EdgekitError(f"checkpoint {directory / WEIGHTS} is damaged: {exc}") from None
    _check_state(model, state, directory / WEIGHTS)
    model.load_state_dict(state)
    return Checkpoint(model.eval(), meta, directory)


REQUIRED_META = {"family": str, "config": dict, "weights_sha256": str}


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's meta.json: a JSON object with ``REQUIRED_META``; any fault names the file and key."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"checkpoint {path} is damaged: not valid JSON ({exc})") from None
    except OSError as exc:
        raise EdgekitError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not isinstance(meta, dict):
        raise EdgekitError(f"checkpoint {path} is damaged: expected a JSON object, got {type(meta).__name__}")
    for key, kind in REQUIRED_META.items():
        if not isinstance(meta.get(key), kind):
            what = "is missing" if key not in meta else f"is {type(meta[key]).__name__}, expected {kind.__name__}"
            raise EdgekitError(f"checkpoint {path} is damaged: key {key!r} {what}")
    return meta


def _check_state(model: EdgeModel, state: dict[str, Any], path: Path) -> None:
    """Every tensor present, none extra, each of the model's shape; the first mismatch is named."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise EdgekitError(f"checkpoint {path} does not match its meta.json config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    for key, want in expected.items():
        if tuple(state[key].shape) != tuple(want.shape):
            raise EdgekitError(f"checkpoint {path} does not match its meta.json config: {key} has shape "
                               f"{tuple(state[key].shape)}, the config's model needs {tuple(want.shape)}")
