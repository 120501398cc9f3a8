"""``edgekit.convert``: export a model to each format, verify every artifact against PyTorch, write a bundle."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from edgekit.api.bundle import Bundle
from edgekit.converters import ModelSource
from edgekit.errors import EdgekitError
from edgekit.quant import QuantSpec

if TYPE_CHECKING:
    from edgekit.verify import ReferenceData

Model = str | Path | torch.nn.Module | torch.export.ExportedProgram
PathLike = str | os.PathLike


def convert(model: Model, example_inputs: Sequence[torch.Tensor] | None = None, *,
            to: Sequence[str] = ("onnx", "tflite", "coreml"), quant: str | QuantSpec = "fp32",
            calib: PathLike | np.ndarray | None = None, out: PathLike | None = None, threads: int = 2,
            overwrite: bool = False, name: str = "model", labels: PathLike | None = None, meta: PathLike | None = None,
            lengths: Sequence[int] = (), adapter: PathLike | None = None, adapters: Sequence[PathLike] | None = None,
            npu: str | None = None, sample_inputs: PathLike | None = None,
            tolerance: Sequence[str] | None = None, progress: Callable[[str], None] | None = None) -> Bundle:
    """Export ``model`` to each format in ``to``, verify every artifact against PyTorch, write a bundle.

    ``model`` is an ``nn.Module`` (with ``example_inputs``; ``name`` names its files), a
    ``torch.export.ExportedProgram``, a ``.pt2`` path or an edgekit checkpoint folder. ``calib`` (int8) is an
    array of samples, a ``.npy``/``.npz`` or an image folder. ``out`` defaults to ``bundle`` beside a checkpoint
    (``<name>_bundle`` beside a .pt2). A path model may take ``labels`` (a text file, one per line, or a JSON list)
    and ``meta`` (JSON: labels, preprocessing, input/output names of a .pt2); a sequence model the static prefill
    ``lengths``. With a checkpoint: ``adapter`` merges one LoRA adapter and verifies on its domain (the manifest
    records ``merged_adapter``); ``adapters`` packages the base and each adapter in one artifact per format.
    ``npu="qualcomm:SM8650"`` also compiles the TFLite artifact ahead of time. ``sample_inputs`` (an ``.npz``
    keyed by input name, each ``(N, ...)``) are the real inputs to verify on, and to calibrate on when int8 has no
    other calibration data. ``tolerance`` sets parity tolerances per output, as the CLI's ``--tolerance``
    (``["boxes:rtol=1e-3,atol=0.5"]``); they are recorded in the manifest. ``progress`` receives status lines.

    A failed format is recorded in the manifest and raises nothing: see ``bundle.written`` (the entries this call
    wrote) or ``bundle.artifacts``."""
    from edgekit.io import check_output_dir
    from edgekit.quant import check_calibration
    from edgekit.sources import reference_for

    if out is not None:
        check_output_dir(out, "bundle", overwrite)  # before anything is loaded or converted
    formats = _formats(to, npu)
    spec, calib_array = _spec(quant, calib, formats)
    if adapters is not None:
        if adapter is not None:
            raise EdgekitError("edgekit.convert: give adapter= (merge one) or adapters= (package several), not both")
        _no_adapter_extras(npu, spec, calib_array)
        return _convert_adapters(model, adapters, formats, spec, out, threads, lengths, overwrite)
    if sample_inputs is not None and adapter is not None:
        raise EdgekitError("sample_inputs= does not apply with adapter= (the adapter's domain data verifies it)")
    if adapter is not None:
        if spec.needs_calibration:  # the calibration data, checked before the adapter's reference runs
            for graph in _graphs(_source(model, example_inputs, name), lengths):
                check_calibration(graph, spec, calib_array)
        sources, references, merged = _merged(model, adapter, lengths)
        overrides = _tolerances(tolerance, sources)
    else:
        sources, merged = _graphs(_source(model, example_inputs, name, labels, meta), lengths), None
        overrides = _tolerances(tolerance, sources)
        spec = _with_sample_inputs(spec, calib_array, sources, sample_inputs)  # checked before any model run
        references = [reference_for(s, sample_inputs=sample_inputs) for s in sources]
    return _write(sources, references, formats, spec, calib_array, merged,
                  Path(out) if out is not None else _default_out(model, sources[0].name if merged else ""),
                  threads=threads, overwrite=overwrite, npu=npu, progress=progress, tolerances=overrides)


def _with_sample_inputs(spec: QuantSpec, calib_array: np.ndarray | None, sources: list[ModelSource],
                        sample_inputs: PathLike | None) -> QuantSpec:
    """Check the sample inputs against the model (a cheap read, before any work) and let them calibrate a
    static int8 conversion that has no other calibration data; check the calibration data as cheaply."""
    from edgekit.quant import check_calibration
    from edgekit.sample_inputs import read_sample_inputs

    if sample_inputs is not None:
        if len(sources) > 1:
            raise EdgekitError(f"sample_inputs= applies to a model of one graph; {sources[0].origin} has "
                               f"{len(sources)} ({', '.join(s.graph for s in sources)})")
        read_sample_inputs(sample_inputs, sources[0])
        if spec.needs_calibration and spec.calib_source is None and calib_array is None:
            spec = QuantSpec.parse(spec, calib_source=os.fspath(sample_inputs))
    for source in sources:
        check_calibration(source, spec, calib_array)
    return spec


def _tolerances(texts: Sequence[str] | None, sources: list[ModelSource]):
    """Per-output tolerance overrides parsed from ``--tolerance`` texts, checked against the model's outputs."""
    if not texts:
        return None
    from edgekit.verify.tolerances import check_output_names, parse_tolerances

    if isinstance(texts, str):
        texts = [texts]
    overrides = parse_tolerances(list(texts))
    check_output_names(overrides, [name for source in sources for name in source.output_names])
    return overrides


def _formats(to: Sequence[str], npu: str | None) -> list[str]:
    """The registered formats of ``to``; an ``npu`` target (checked) needs tflite among them."""
    from edgekit.converters import CONVERTERS
    from edgekit.npu import check_npu_target

    formats = list(to)
    if not formats:
        raise EdgekitError(f"to= names no format; give one or more of: {', '.join(CONVERTERS.names())}")
    for fmt in formats:
        CONVERTERS.get(fmt)
    if npu is not None:
        check_npu_target(npu)
        if "tflite" not in formats:
            raise EdgekitError(f"--npu {npu} compiles the TFLite artifact; add tflite to --to (got {','.join(formats)})")
    return formats


def _spec(quant: str | QuantSpec, calib: PathLike | np.ndarray | None,
          formats: list[str]) -> tuple[QuantSpec, np.ndarray | None]:
    """The QuantSpec (a calibration path becomes part of it: the manifest records it) and a calibration array,
    checked against each format's precisions."""
    from edgekit.converters import CONVERTERS

    spec = QuantSpec.parse(quant)
    calib_array = calib if isinstance(calib, np.ndarray) else None
    if calib is not None and calib_array is None:
        if spec.calib_source is not None:
            raise EdgekitError(f"calibration data given twice: quant.calib_source {spec.calib_source!r} and "
                               f"calib={os.fspath(calib)!r}; give one")
        spec = QuantSpec.parse(spec, calib_source=os.fspath(calib))
    for fmt in formats:
        CONVERTERS.get(fmt).check_precision(spec)
    return spec, calib_array


def reference(model: Model, example_inputs: Sequence[torch.Tensor] | None = None, *, graph: str = "") -> ReferenceData:
    """The data ``edgekit.convert`` verifies ``model`` on, in full: a checkpoint's recipe test split (inputs,
    PyTorch's outputs, labels), otherwise seeded random inputs shaped like ``example_inputs``. ``graph`` picks one
    graph of a sequence model (its name, e.g. "step"; "" = the first). ``Bundle.reference()`` holds only the
    first few of these samples (the bundle's golden file)."""
    from edgekit.sources import reference_for

    sources = _graphs(_source(model, example_inputs, "model"), ())
    chosen = [s for s in sources if s.graph == graph] if graph else sources[:1]
    if not chosen:
        raise EdgekitError(f"edgekit.reference: the model has no graph {graph!r}; it has: "
                           f"{', '.join(s.graph for s in sources)}")
    return reference_for(chosen[0])


def _graphs(source: ModelSource, lengths: Sequence[int]) -> list[ModelSource]:
    """One source per graph of the model (a sequence model: prefill at each static length, and step)."""
    from edgekit.sources import graph_sources

    lengths = tuple(int(n) for n in lengths)
    if any(n < 2 for n in lengths):
        raise EdgekitError(f"lengths={list(lengths)}: every length must be at least 2")
    return graph_sources(source, lengths)


def _merged(model: Model, adapter: PathLike,
            lengths: Sequence[int]) -> tuple[list[ModelSource], list[ReferenceData], dict]:
    """The checkpoint with ``adapter`` merged: its graphs, references on the adapter's domain, and what the
    manifest records of the adapter."""
    from edgekit.adapter_bundle import adapter_summary
    from edgekit.lora.export import adapter_references, merged_source

    source, loaded, ckpt = merged_source(_checkpoint_path(model, "adapter="), adapter)
    sources = _graphs(source, lengths)
    return sources, adapter_references(sources, loaded, ckpt), adapter_summary(loaded)


def _checkpoint_path(model: Model, what: str) -> PathLike:
    if not isinstance(model, (str, os.PathLike)):
        raise EdgekitError(f"edgekit.convert: {what} needs an edgekit checkpoint folder as the model, "
                           f"not a {type(model).__name__}")
    return model


def _write(sources: list[ModelSource], references: list[ReferenceData], formats: list[str], spec: QuantSpec,
           calib_array: np.ndarray | None, merged: dict | None, bundle: Path, *, threads: int, overwrite: bool,
           npu: str | None, progress: Callable[[str], None] | None, tolerances=None) -> Bundle:
    """Convert every graph to every format into ``bundle``, record a merged adapter, compile for an NPU."""
    from edgekit.artifact import bundle_lock, record_entries
    from edgekit.conversion import convert_graphs, converted_entries
    from edgekit.npu import compile_bundle_for_npu

    manifest = convert_graphs(sources, formats, bundle, references, quant=spec, calib_array=calib_array,
                              threads=threads, overwrite=overwrite, progress=progress or (lambda _: None),
                              tolerances=tolerances)
    if merged is not None:  # record which adapter was merged into the weights
        manifest.source["merged_adapter"] = merged
        with bundle_lock(bundle):
            record_entries(bundle, manifest, [])
    written = converted_entries(manifest, sources, formats)  # with formats' extra graphs (Core ML step_stateful)
    if npu is not None:
        tflite = next((e for e in written if e.format == "tflite"), None)
        written.append(compile_bundle_for_npu(bundle, manifest, npu, tflite))
    return Bundle(bundle, manifest, written, "; ".join(r.description for r in references))


def _no_adapter_extras(npu: str | None, spec: QuantSpec, calib_array: np.ndarray | None) -> None:
    """What a base + adapters bundle cannot take (say it with the CLI's flags, as the library's messages do)."""
    given = (("--npu", npu is not None), ("--calib", spec.calib_source is not None or calib_array is not None),
             ("--qat", spec.qat_epochs > 0), ("--accuracy-budget", spec.budget_points is not None),
             ("--min-sqnr", spec.min_sqnr_db is not None))
    unsupported = [flag for flag, present in given if present]
    if unsupported:
        raise EdgekitError(f"{unsupported[0]} does not apply to --adapters bundles; merge one adapter with --adapter")


def _convert_adapters(model: Model, adapters: Sequence[PathLike], formats: list[str], spec: QuantSpec,
                      out: PathLike | None, threads: int, lengths: Sequence[int], overwrite: bool) -> Bundle:
    """The base and every adapter in one artifact per format and graph, each variant verified on its own data."""
    from edgekit.adapter_bundle import package_adapters
    from edgekit.io import check_output_dir

    checkpoint = _checkpoint_path(model, "adapters=")
    bundle = Path(out) if out is not None else _default_out(checkpoint, "adapters")
    check_output_dir(bundle, "bundle", overwrite)
    manifest = package_adapters(checkpoint, [os.fspath(a) for a in adapters], formats, bundle, quant=spec,
                                threads=threads, lengths=tuple(lengths), overwrite=overwrite)
    return Bundle(bundle, manifest, [e for e in manifest.artifacts if e.format in formats])


def _default_out(model: Model, variant: str = "") -> Path:
    """``bundle`` beside a checkpoint (``bundle_<variant>`` for an adapted model), ``<stem>_bundle`` beside a
    .pt2; an in-memory model has no place of its own."""
    if not isinstance(model, (str, os.PathLike)):
        raise EdgekitError("edgekit.convert: give out= (the bundle folder) for an in-memory model")
    path = Path(model)
    folder = f"bundle_{variant}" if variant else "bundle"
    if path.is_dir():
        return path.parent / folder
    if path.name in ("model.safetensors", "meta.json"):
        return path.parent.parent / folder
    return path.with_name(f"{path.stem}_bundle")


def _source(model: Model, example_inputs: Sequence[torch.Tensor] | None, name: str,
            labels: PathLike | None = None, meta: PathLike | None = None) -> ModelSource:
    """A ModelSource for any model the API takes."""
    from edgekit.sources import load_source

    if isinstance(model, (str, os.PathLike)):
        return load_source(model, labels=_text(labels), meta=_text(meta))
    if labels is not None or meta is not None:
        raise EdgekitError("edgekit.convert: labels= and meta= are files for a checkpoint or .pt2 path; "
                           f"not for a {type(model).__name__}")
    if isinstance(model, torch.export.ExportedProgram):
        return _from_program(model, example_inputs, name)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise EdgekitError("edgekit.convert(module, example_inputs): an nn.Module needs its example inputs, "
                               "e.g. (torch.randn(1, 3, 224, 224),)")
        return _in_memory(model.eval(), tuple(example_inputs), name)
    raise EdgekitError(f"edgekit.convert: model is a {type(model).__name__}; expected an nn.Module, an "
                       "ExportedProgram, a .pt2 path or an edgekit checkpoint folder")


def _text(path: PathLike | None) -> str | None:
    return None if path is None else os.fspath(path)


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


def _from_program(program: torch.export.ExportedProgram, example_inputs: Sequence[torch.Tensor] | None,
                  name: str) -> ModelSource:
    """An in-memory ExportedProgram as a .pt2 file would load: flat named outputs, inputs named by its signature,
    integer inputs in their valid range."""
    import dataclasses

    from edgekit.pt2 import flat_outputs
    from edgekit.sample_inputs import input_ranges, user_input_names

    flat, output_names = flat_outputs(program)
    args = tuple(example_inputs) if example_inputs is not None else tuple((program.example_inputs or ((),))[0])
    source = _in_memory(flat.module(), args, name, exported=flat)
    return dataclasses.replace(source, input_names=tuple(user_input_names(flat)), output_names=output_names,
                               input_ranges=input_ranges(flat))
