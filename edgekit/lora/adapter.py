"""Adapter files: ``adapter.safetensors`` (PEFT key names) + ``adapter.json`` (what, for which base, how well).

The base checkpoint's sha256 is stored in both files; an adapter refuses to load onto any other base.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit.checkpoint import Checkpoint
from edgekit.errors import EdgekitError
from edgekit.io import atomic_output, folder_holding, sha256_path
from edgekit.lora.layers import inject_lora, load_lora_state, merge_lora

WEIGHTS, META = "adapter.safetensors", "adapter.json"
ADAPTER_FORMAT = 1


class AdapterMismatchError(EdgekitError):
    """An adapter was trained for a different base checkpoint."""


@dataclass
class Adapter:
    """A loaded adapter: its tensors (PEFT keys) and metadata."""

    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path  # the adapter folder

    @property
    def name(self) -> str:
        """A short identifier: the metadata's name (domain or data folder), else the folder name."""
        return safe_name(self.meta.get("name") or self.path.name)

    @property
    def base_sha256(self) -> str:
        return self.meta["base_sha256"]

    @property
    def sha256(self) -> str:
        return self.meta.get("weights_sha256") or sha256_path(self.path / WEIGHTS)

    def check_base(self, checkpoint: Checkpoint) -> None:
        """Raise AdapterMismatchError naming both sha256s when ``checkpoint`` is not this adapter's base."""
        if checkpoint.sha256 != self.base_sha256:
            raise AdapterMismatchError(
                f"adapter {self.path} was trained for base checkpoint sha256 {self.base_sha256}, "
                f"but {checkpoint.path} has sha256 {checkpoint.sha256}; adapt that checkpoint instead")

    def applied_to(self, checkpoint: Checkpoint, *, merge: bool = False) -> torch.nn.Module:
        """A copy of the checkpoint's model with this adapter (merged into the weights with ``merge``)."""
        self.check_base(checkpoint)
        model = copy.deepcopy(checkpoint.model)
        inject_lora(model, list(self.meta["target_modules"]), int(self.meta["rank"]), float(self.meta["alpha"]))
        load_lora_state(model, self.state)
        model.eval()
        return merge_lora(model) if merge else model


def safe_name(text: str) -> str:
    """A name usable as a TFLite signature, Core ML function and file name: [A-Za-z0-9_], not starting with a digit."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(text)).strip("_") or "adapter"
    return f"a_{name}" if name[0].isdigit() else name


def save_adapter(directory: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``directory/adapter.safetensors`` and ``directory/adapter.json`` atomically."""
    from safetensors.torch import save_file

    header = {"format": "pt", "edgekit_adapter": str(ADAPTER_FORMAT), "base_sha256": meta["base_sha256"],
              "rank": str(meta["rank"]), "alpha": str(meta["alpha"])}
    with atomic_output(directory, kind="adapter") as tmp:
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS), metadata=header)
        full = {"adapter_format": ADAPTER_FORMAT, **meta, "weights_sha256": sha256_path(tmp / WEIGHTS)}
        (tmp / META).write_text(json.dumps(full, indent=2, default=str))
    return Path(directory)


def load_adapter(path: str | Path) -> Adapter:
    """Load an adapter folder, or its ``adapter.safetensors`` / ``adapter.json`` file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    directory = folder_holding(path, WEIGHTS, META)
    if directory is None:
        raise EdgekitError(f"{path} is not an edgekit adapter (expected a folder with {WEIGHTS} and {META}; "
                           "make one with `edgekit adapt`)")
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        state = load_file(str(directory / WEIGHTS))
        with safe_open(str(directory / WEIGHTS), framework="pt") as f:
            header = f.metadata() or {}
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as exc:
        raise EdgekitError(f"adapter {directory} is damaged: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    _check_meta(meta, directory / META)
    if header.get("base_sha256", meta["base_sha256"]) != meta["base_sha256"]:
        raise EdgekitError(f"adapter {directory}: {WEIGHTS} and {META} name different base checkpoints")
    return Adapter(state, meta, directory)


# adapter.json keys read back, and the type each must have
REQUIRED_META: dict[str, tuple[type, ...]] = {"base_sha256": (str,), "rank": (int,), "alpha": (int, float),
                                             "target_modules": (list,)}


def _check_meta(meta: Any, path: Path) -> None:
    """adapter.json: an object with ``REQUIRED_META`` of the right types (rank >= 1, finite alpha > 0)."""
    if not isinstance(meta, dict):
        raise EdgekitError(f"adapter {path} is damaged: expected a JSON object")
    for key, kinds in REQUIRED_META.items():
        if key not in meta:
            raise EdgekitError(f"adapter {path} lacks {key!r}")
        value = meta[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise EdgekitError(f"adapter {path}: {key} = {json.dumps(value)[:60]} has the wrong type "
                               f"(expected {' or '.join(k.__name__ for k in kinds)})")
    if meta["rank"] < 1 or not (math.isfinite(meta["alpha"]) and meta["alpha"] > 0):
        raise EdgekitError(f"adapter {path}: rank {meta['rank']} / alpha {meta['alpha']} out of range "
                           "(rank >= 1, alpha a finite number > 0)")
    if not all(isinstance(t, str) for t in meta["target_modules"]):
        raise EdgekitError(f"adapter {path}: target_modules must be a list of module names")


def load_adapters(paths: list[str | Path]) -> list[Adapter]:
    """Load several adapters; their names must be distinct (they name signatures and functions)."""
    adapters = [load_adapter(p) for p in paths]
    names = [a.name for a in adapters]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EdgekitError(f"adapters share the name {dupes[0]!r}; give each a distinct folder or `adapt --name`")
    return adapters
