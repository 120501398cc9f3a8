"""Where models come from: an edgekit checkpoint or a user's `torch.export.save` file (.pt2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from edgekit.checkpoint import META, WEIGHTS, load_checkpoint
from edgekit.data import load_dataset
from edgekit.graph import ModelSource
from edgekit.errors import EdgekitError
from edgekit.io import sha256_path
from edgekit.pt2 import NAME_PATTERN, default_output_names, flat_outputs, load_pt2
from edgekit.pt2 import example_inputs as pt2_example_inputs
from edgekit.sample_inputs import input_ranges, random_input, read_sample_inputs
from edgekit.verify import ReferenceData, reference_from_model

PT2_META = "edgekit.json"  # optional extra file inside a .pt2 with labels and preprocessing
RANDOM_REFERENCE_SAMPLES = 200


def load_source(path: str | Path, *, labels: str | None = None, meta: str | None = None) -> ModelSource:
    """A ModelSource from a checkpoint folder or a .pt2; ``labels``/``meta`` files add metadata."""
    path = Path(path)
    extra = _read_meta_file(meta) if meta else {}  # the user's files first: they fail before a model loads
    if labels:
        extra["labels"] = _read_labels(labels)
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
    _apply_metadata(source, extra, f"--labels {labels}" if labels else f"--meta {meta}", f"--meta {meta}")
    return source


def _apply_metadata(source: ModelSource, extra: dict[str, Any], labels_from: str, names_from: str) -> None:
    """Labels, preprocessing and (for a .pt2) I/O names, each checked against the model; ``*_from`` name
    where they came from (a flag and its file, or a .pt2's embedded entry) for the error."""
    if "labels" in extra:
        classes = _output_classes(source)
        if classes is not None and len(extra["labels"]) != classes:
            raise EdgekitError(f"{labels_from}: {len(extra['labels'])} labels for a model with {classes} output "
                               f"classes ({source.origin}); give exactly {classes}")
        source.labels = extra["labels"]
    source.preprocessing = extra.get("preprocessing", source.preprocessing)
    for key, have in (("input_names", source.input_names), ("output_names", source.output_names)):
        if key not in extra:
            continue
        if source.kind != "pt2":
            raise EdgekitError(f"{names_from}: {key} applies to a .pt2 model; a checkpoint's come from its family")
        if len(extra[key]) != len(have):
            raise EdgekitError(f"{names_from}: {key} has {len(extra[key])} names; the model has {len(have)}")
        _check_names(extra[key], f"{names_from}: {key}")
        setattr(source, key, tuple(extra[key]))
    both = sorted(set(source.input_names) & set(source.output_names))
    if both and ("input_names" in extra or "output_names" in extra):
        raise EdgekitError(f"{names_from}: {both[0]!r} names both an input and an output; every I/O name "
                           "must be unique")


def _check_names(names: list[str], where: str) -> None:
    """I/O names valid in every format (Core ML and TFLite signatures need identifiers) and unique."""
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise EdgekitError(f"{where}: {name!r} is not a valid I/O name; names must match "
                               "[A-Za-z_][A-Za-z0-9_]* (letters, digits, _; not starting with a digit), "
                               "as Core ML and TFLite signatures need")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EdgekitError(f"{where}: {repeated[0]!r} appears more than once; names must be unique")


def _output_classes(source: ModelSource) -> int | None:
    """The size of the first output's last axis (the classes of a classifier), from one run on its example."""
    with torch.no_grad():
        out = source.module(*source.example_inputs)
    first = out[0] if isinstance(out, (tuple, list)) else out
    return int(first.shape[-1]) if isinstance(first, torch.Tensor) and first.ndim else None


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
    """A .pt2's program with its outputs as one flat tuple named from their pytree (dict keys, fields), integer
    inputs drawn in their valid range (``input_ranges``), inputs named by the exported signature."""
    program, extra = load_pt2(path)  # never unpickles; the archive's sample inputs are not read
    args = pt2_example_inputs(program, path)
    where = f"{path}: entry extra/{PT2_META}"
    meta = _check_meta(_pt2_meta(path, extra.get(PT2_META, "")), where)
    program, outputs = flat_outputs(program)
    inputs = tuple(s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT")
    source = ModelSource(
        name=path.stem, module=program.module(), example_inputs=tuple(args), input_names=inputs,
        output_names=outputs, sha256=sha256_path(path), origin=str(path), kind="pt2",
        exported=program, input_ranges=input_ranges(program),
    )
    _apply_metadata(source, meta, where, where)  # checked like --meta: types, label count, name counts
    return source


def _pt2_meta(path: Path, text: str) -> dict[str, Any]:
    """The optional ``extra/edgekit.json`` of a .pt2 (plain JSON text): labels, preprocessing, I/O names."""
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgekitError(f"{path}: entry extra/{PT2_META} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise EdgekitError(f"{path}: entry extra/{PT2_META} must be a JSON object, e.g. {{\"labels\": [...]}}")
    return meta


def _read_labels(path: str) -> list[str]:
    """--labels: one class per line, or (``.json``) a JSON list of names; at least one."""
    text = _read_text(path, "--labels")
    if path.endswith(".json"):
        labels = _name_list(_parse_json(path, text, "--labels"), f"--labels {path}", "a JSON list of class names")
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise EdgekitError(f"--labels {path} lists no class names; give one per line or a JSON list")
    return labels


# --meta keys and what each value must be
_META_KEYS = {
    "labels": "a non-empty list of class-name strings",
    "input_names": "a non-empty list of name strings",
    "output_names": "a non-empty list of name strings",
    "preprocessing": "a JSON object (layout, scale, mean, std, ...)",
}


def _read_meta_file(path: str) -> dict[str, Any]:
    """--meta: a JSON object whose keys are ``_META_KEYS``, each of its type."""
    return _check_meta(_parse_json(path, _read_text(path, "--meta"), "--meta"), f"--meta {path}")


def _check_meta(meta: Any, where: str) -> dict[str, Any]:
    """Model metadata (``--meta``, or a .pt2's ``edgekit.json``): a JSON object of ``_META_KEYS``, each of its type."""
    if not isinstance(meta, dict):
        raise EdgekitError(f"{where}: expected a JSON object with keys {', '.join(sorted(_META_KEYS))}")
    unknown = sorted(set(meta) - set(_META_KEYS))
    if unknown:
        raise EdgekitError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(_META_KEYS))}")
    for key, value in meta.items():
        if key == "preprocessing":
            if not isinstance(value, dict):
                raise EdgekitError(f"{where}: {key} = {value!r} must be {_META_KEYS[key]}")
        else:
            _name_list(value, f"{where}: {key}", _META_KEYS[key])
    return meta


def _name_list(value: Any, where: str, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise EdgekitError(f"{where} = {json.dumps(value)[:80]} must be {what}")
    return value


def _parse_json(path: str, text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgekitError(f"{flag} {path} is not valid JSON: {exc}") from None


def _read_text(path: str, flag: str = "file") -> str:
    """A user's UTF-8 text file; a missing file, a folder or binary data names the file and the flag."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EdgekitError(f"{flag} {path} is not UTF-8 text (byte {exc.start}); expected a text file") from None
    except OSError as exc:
        raise EdgekitError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None


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


def reference_for(source: ModelSource, *, seed: int = 0, sample_inputs: str | Path | None = None) -> ReferenceData:
    """The user's ``sample_inputs`` (a .npz keyed by input name, see ``edgekit.sample_inputs``) when given;
    else held-out real inputs for a checkpoint (its recipe's test split); seeded random inputs otherwise
    (integer inputs in their ``input_ranges``: token ids below the embedding's rows, padding masks)."""
    # a torch.export program is specialised to its example shapes, so it runs one sample at a time
    chunk = 128 if source.kind == "checkpoint" else 1
    if sample_inputs is not None:
        samples = read_sample_inputs(sample_inputs, source)
        return reference_from_model(source.module, samples, None, f"{Path(sample_inputs).name} ({len(samples)})",
                                    chunk=chunk, output_names=source.output_names)
    if source.kind == "checkpoint":
        recipe = json.loads((Path(source.origin) / META).read_text()).get("recipe")
        if recipe:
            return _recipe_test_split(source, recipe)
    gen = torch.Generator().manual_seed(seed)
    samples = [_random_sample(source, gen) for _ in range(RANDOM_REFERENCE_SAMPLES)]
    integers = any(not x.is_floating_point() for x in source.example_inputs)
    what = "seeded random inputs (floats normal, integers in range)" if integers else "seeded random normal inputs"
    return reference_from_model(source.module, samples, None, f"{what} ({len(samples)})", chunk=chunk,
                                output_names=source.output_names)


def _recipe_test_split(source: ModelSource, recipe: dict[str, Any]) -> ReferenceData:
    options = {k: v for k, v in recipe["data"].items() if k != "source"} | {"seed": recipe.get("seed", 0)}
    data = load_dataset(recipe["data"]["source"], **options)
    if source.samples is None:
        samples = [(x[None],) for x in data.test.inputs]
    else:
        samples = source.samples(data.test.inputs)
    labels = data.test.labels.numpy()[:len(samples)] if source.labelled else None
    where = f" → {source.graph}" if source.graph else ""
    return reference_from_model(source.module, samples, labels, f"{data.name} test split{where} ({len(samples)})",
                                output_names=source.output_names)


def _random_sample(source: ModelSource, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One seeded input tuple: standard-normal floats, integers in their known range (``input_ranges``;
    0/1 where unknown), masks as padding masks."""
    ranges = source.input_ranges or (None,) * len(source.example_inputs)
    return tuple(random_input(tuple(x.shape), x.dtype, r, name, gen)
                 for x, r, name in zip(source.example_inputs, ranges, source.input_names))
