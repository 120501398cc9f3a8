"""Where models come from: an edgekit checkpoint or a user's `torch.export.save` file (.pt2)."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.checkpoint import META, WEIGHTS, load_checkpoint
from edgekit.converters.base import ModelSource
from edgekit.errors import EdgekitError
from edgekit.io import sha256_path
from edgekit.verify import ReferenceData, reference_from_model

PT2_META = "edgekit.json"  # optional extra file inside a .pt2 with labels and preprocessing
RANDOM_REFERENCE_SAMPLES = 200


def load_source(path: str | Path, *, labels: str | None = None, meta: str | None = None) -> ModelSource:
    """A ModelSource from a checkpoint folder or a .pt2; ``labels``/``meta`` files add metadata."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path} does not exist; expected an edgekit checkpoint folder or a .pt2 file")
    if path.is_dir() or path.name in (WEIGHTS, META):
        source = _from_checkpoint(path)
    elif path.suffix == ".pt2":
        source = _from_pt2(path)
    else:
        raise EdgekitError(
            f"{path} is not a model edgekit can read; expected an edgekit checkpoint folder "
            "(model.safetensors + meta.json) or a .pt2 file written by torch.export.save"
        )
    extra = _read_meta_file(meta) if meta else {}
    if labels:
        extra["labels"] = _read_labels(labels)
    source.labels = extra.get("labels", source.labels)
    source.preprocessing = extra.get("preprocessing", source.preprocessing)
    return source


def _from_checkpoint(path: Path) -> ModelSource:
    ckpt = load_checkpoint(path)
    model = ckpt.model
    return ModelSource(
        name=ckpt.meta.get("recipe", {}).get("name") or ckpt.path.parent.name or "model",
        module=model, example_inputs=model.example_inputs(),
        input_names=tuple(model.input_names), output_names=tuple(model.output_names),
        sha256=ckpt.sha256, origin=str(ckpt.path), kind="checkpoint",
        labels=ckpt.labels, preprocessing=ckpt.meta.get("preprocessing"),
    )


def _from_pt2(path: Path) -> ModelSource:
    extra = {PT2_META: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except (zipfile.BadZipFile, RuntimeError, KeyError, ValueError, EOFError) as exc:
        raise EdgekitError(f"{path} is not a readable torch.export program: {str(exc).splitlines()[0][:200]}") from None
    args, kwargs = program.example_inputs or ((), {})
    if not args or kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        raise EdgekitError(f"{path} has no positional tensor example inputs; export it with torch.export.export(model, (x,))")
    meta = json.loads(extra[PT2_META]) if extra[PT2_META] else {}
    spec = program.graph_signature
    inputs = tuple(s.arg.name for s in spec.input_specs if s.kind.name == "USER_INPUT")
    n_out = len([s for s in spec.output_specs if s.kind.name == "USER_OUTPUT"])
    outputs = tuple(meta.get("output_names") or (["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]))
    return ModelSource(
        name=path.stem, module=program.module(), example_inputs=tuple(args),
        input_names=tuple(meta.get("input_names") or inputs), output_names=outputs,
        sha256=sha256_path(path), origin=str(path), kind="pt2", labels=meta.get("labels"),
        preprocessing=meta.get("preprocessing"), exported=program,
    )


def _read_labels(path: str) -> list[str]:
    text = _read_text(path)
    if path.endswith(".json"):
        labels = json.loads(text)
        if not isinstance(labels, list):
            raise EdgekitError(f"{path}: expected a JSON list of class names")
        return [str(x) for x in labels]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_meta_file(path: str) -> dict[str, Any]:
    try:
        meta = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise EdgekitError(f"{path}: not valid JSON: {exc}") from None
    allowed = {"labels", "preprocessing", "input_names", "output_names"}
    unknown = sorted(set(meta) - allowed)
    if unknown:
        raise EdgekitError(f"{path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(allowed))}")
    return meta


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise EdgekitError(f"cannot read {path}: {exc.strerror}") from None


def graph_sources(source: ModelSource, lengths: tuple[int, ...] = ()) -> list[ModelSource]:
    """One ModelSource per graph the model ships (its ``export_graphs``); a .pt2 is one graph.

    ``lengths`` picks the static lengths of a sequence model's prefill graphs (default: its config's)."""
    export_graphs = getattr(source.module, "export_graphs", None)
    graphs = export_graphs(tuple(lengths)) if source.kind == "checkpoint" and export_graphs else []
    if lengths and not any(g.name for g in graphs):
        raise EdgekitError(f"{source.origin} has a single graph; static lengths apply only to sequence models")
    if not any(g.name for g in graphs):
        return [source]
    return [dataclasses.replace(
        source, module=g.module, example_inputs=g.example_inputs, input_names=g.input_names,
        output_names=g.output_names, exported=None, graph=g.name, samples=g.samples, labelled=g.labelled,
        lengths=tuple(lengths)) for g in graphs]


def reference_for(source: ModelSource, *, seed: int = 0) -> ReferenceData:
    """Held-out real inputs for a checkpoint (its recipe's test split); seeded random inputs otherwise."""
    if source.kind == "checkpoint":
        recipe = json.loads((Path(source.origin) / META).read_text()).get("recipe")
        if recipe:
            return _recipe_test_split(source, recipe)
    gen = torch.Generator().manual_seed(seed)
    samples = [tuple(_random_like(x, gen) for x in source.example_inputs) for _ in range(RANDOM_REFERENCE_SAMPLES)]
    # a torch.export program is specialised to its example shapes, so it runs one sample at a time
    return reference_from_model(source.module, samples, None, f"seeded random normal inputs ({len(samples)})",
                                chunk=128 if source.kind == "checkpoint" else 1)


def _recipe_test_split(source: ModelSource, recipe: dict[str, Any]) -> ReferenceData:
    from edgekit.data import load_dataset

    options = {k: v for k, v in recipe["data"].items() if k != "source"} | {"seed": recipe.get("seed", 0)}
    data = load_dataset(recipe["data"]["source"], **options)
    if source.samples is None:
        samples = [(x[None],) for x in data.test.inputs]
    else:
        samples = source.samples(data.test.inputs)
    labels = data.test.labels.numpy()[:len(samples)] if source.labelled else None
    where = f" → {source.graph}" if source.graph else ""
    return reference_from_model(source.module, samples, labels, f"{data.name} test split{where} ({len(samples)})")


def _random_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Seeded standard-normal floats, or small non-negative integers (valid token ids) for int inputs."""
    if x.is_floating_point():
        return torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return torch.randint(0, 2, x.shape, generator=gen, dtype=x.dtype)
