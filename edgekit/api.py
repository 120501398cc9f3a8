"""The public Python API: a small face over the library, the same steps the CLI runs.

    bundle = edgekit.convert(model, (x,), to=["onnx", "tflite"], quant=edgekit.QuantSpec.parse("int8"),
                             calib=calib_array, out="my_bundle")
    bundle.verify().ok; bundle.bench(threads=2); edgekit.Bundle.load("my_bundle")
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edgekit.artifact import Manifest, load_manifest
from edgekit.converters import ModelSource
from edgekit.errors import EdgekitError
from edgekit.quant import QuantSpec

Model = str | Path | torch.nn.Module | torch.export.ExportedProgram


@dataclass
class VerifyReport:
    """``Bundle.verify()``: one result per artifact and the inputs parity ran on."""

    results: list[dict[str, Any]]
    reference: str

    @property
    def ok(self) -> bool:
        """Every artifact passed (none failed, at least one checked)."""
        return bool(self.results) and all(r["status"] != "failed" for r in self.results)


@dataclass
class Bundle:
    """An artifact bundle on disk: its folder and its manifest."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Open a bundle folder (its manifest is checked like any untrusted input)."""
        return cls(Path(path), load_manifest(path))

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.manifest.artifacts]

    def verify(self, *, threads: int = 2, source: str | Path | None = None) -> VerifyReport:
        """Re-check files against the manifest and re-run parity, as ``edgekit verify``."""
        from edgekit.verify.bundle import verify_bundle

        self.manifest, results, reference = verify_bundle(self.path, threads=threads, source=source)
        return VerifyReport(results, reference)

    def bench(self, *, threads: int = 2, warmup: int = 20, runs: int = 200) -> list[dict[str, Any]]:
        """Host latency of every artifact on its golden inputs: the rows of ``edgekit bench BUNDLE``."""
        from edgekit.bench import bench_bundle
        from edgekit.report import build_rows
        from edgekit.verify.bundle import golden_reference

        for name, value, least in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
            if value < least:
                raise EdgekitError(f"Bundle.bench: {name} must be at least {least}, got {value}")
        inputs = list(golden_reference(self.path).inputs[0]) if (self.path / "golden.npz").is_file() else []
        results = bench_bundle(self.path, self.manifest, inputs, threads=threads, warmup=warmup, runs=runs)
        return build_rows(self.manifest, results)


def convert(model: Model, example_inputs: Sequence[torch.Tensor] | None = None, *,
            to: Sequence[str] = ("onnx", "tflite", "coreml"), quant: str | QuantSpec = "fp32",
            calib: str | Path | np.ndarray | None = None, out: str | Path, threads: int = 2,
            overwrite: bool = False, name: str = "model") -> Bundle:
    """Export ``model`` to each format in ``to``, verify every artifact against PyTorch, write a bundle.

    ``model`` is an ``nn.Module`` (with ``example_inputs``), a ``torch.export.ExportedProgram``, a ``.pt2``
    path or an edgekit checkpoint folder. ``calib`` (int8) is an array of samples, a ``.npy``/``.npz`` or an
    image folder. A failed format is recorded in the manifest and raises nothing; check ``bundle.artifacts``."""
    from edgekit.conversion import convert_graphs
    from edgekit.converters import CONVERTERS
    from edgekit.sources import graph_sources, reference_for

    spec = quant if isinstance(quant, QuantSpec) else QuantSpec.parse(quant)
    formats = list(to)
    if not formats:
        raise EdgekitError(f"to= names no format; give one or more of: {', '.join(CONVERTERS.names())}")
    for fmt in formats:
        CONVERTERS.get(fmt).check_precision(spec)
    sources = graph_sources(_source(model, example_inputs, name))
    manifest = convert_graphs(sources, formats, out, [reference_for(s) for s in sources], precision=spec,
                              threads=threads, quant_options={"calib": calib}, overwrite=overwrite)
    return Bundle(Path(out), manifest)


def _source(model: Model, example_inputs: Sequence[torch.Tensor] | None, name: str) -> ModelSource:
    """A ModelSource for any model the API takes."""
    from edgekit.sources import load_source

    if isinstance(model, (str, Path)):
        return load_source(model)
    if isinstance(model, torch.export.ExportedProgram):
        args = tuple(example_inputs) if example_inputs is not None else tuple((model.example_inputs or ((),))[0])
        return _in_memory(model.module(), args, name, exported=model)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise EdgekitError("edgekit.convert(module, example_inputs): an nn.Module needs its example inputs, "
                               "e.g. (torch.randn(1, 3, 224, 224),)")
        return _in_memory(model.eval(), tuple(example_inputs), name)
    raise EdgekitError(f"edgekit.convert: model is a {type(model).__name__}; expected an nn.Module, an "
                       "ExportedProgram, a .pt2 path or an edgekit checkpoint folder")


def _in_memory(module: torch.nn.Module, args: tuple, name: str,
               exported: torch.export.ExportedProgram | None = None) -> ModelSource:
    from edgekit.sources import default_output_names

    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise EdgekitError("example_inputs must be a non-empty tuple of tensors (batch 1), e.g. (x,)")
    state = (exported.state_dict if exported is not None else module.state_dict()).items()
    digest = hashlib.sha256()
    for key, tensor in sorted(state):
        digest.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    with torch.no_grad():
        out = module(*args)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    return ModelSource(
        name=name, module=module, example_inputs=args, input_names=tuple(f"input_{i}" for i in range(len(args))),
        output_names=default_output_names(n_out),
        sha256=digest.hexdigest(), origin=f"<in-memory {type(module).__name__}>", kind="module", exported=exported)


@dataclass
class Trained:
    """``edgekit.train``: the checkpoint folder and the training metrics."""

    checkpoint: Path
    metrics: dict[str, Any]


def train(recipe: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> Trained:
    """Train a recipe (a bundled name or a .toml path) into ``out/checkpoint`` (default ``runs/<name>``)."""
    from edgekit.io import check_output_dir
    from edgekit.recipe import load_recipe
    from edgekit.train import train_recipe

    loaded = load_recipe(recipe)
    out = Path(out) if out is not None else Path("runs") / loaded.name
    check_output_dir(out, "run", overwrite)
    path, result = train_recipe(loaded, out)
    return Trained(path, result.metrics)


def adapt(checkpoint: str | Path, *, domain: str | None = None, data: str | Path | None = None,
          out: str | Path | None = None, overwrite: bool = False, **options: Any) -> Path:
    """Train a LoRA adapter (``options``: rank, alpha, targets, steps, examples, lr, seed) for a checkpoint
    on a registered ``domain`` or your ``data``; returns the adapter folder."""
    from edgekit.checkpoint import load_checkpoint
    from edgekit.config import dataclass_from_dict
    from edgekit.io import check_output_dir
    from edgekit.lora import AdaptOptions, adapt_checkpoint
    from edgekit.lora.adapter import safe_name

    ckpt = load_checkpoint(checkpoint)
    adapter_name = safe_name(domain or Path(data or "adapter").stem)
    out = Path(out) if out is not None else ckpt.path.parent / "adapters" / adapter_name
    check_output_dir(out, "adapter", overwrite)
    checked = dataclass_from_dict(AdaptOptions, dict(options), "edgekit.adapt")  # unknown keys and ranges named
    return adapt_checkpoint(ckpt, out, domain=domain, data=data, options=checked, name=adapter_name).path


def load(checkpoint: str | Path) -> torch.nn.Module:
    """The eval-mode model of an edgekit checkpoint folder (safetensors + JSON; nothing unpickled)."""
    from edgekit.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint).model

