"""ONNX with several named graphs (``OnnxConverter.export_many``): one .onnx whose weights that differ
between the graphs are graph inputs with zero initializers of the same name (stored sparse, they cost a
few bytes), and one ``.onnx_adapter`` per graph holding its values. For base + LoRA adapters those are
the LoRA factors: the zeros give the base. Weight-only int8 artifacts hold the shared weights and every
graph's own weights as int8 + scales.

The weights to expose are found by value: a parameter whose bytes are in every graph (the base tensors
that LoRA variants share) stays a constant; the others are the graph's own. Every graph that has own
weights must have the same names and shapes (they fill the same inputs).

An app loads the model once and each adapter once (``onnxruntime.LoraAdapter``) and picks one per
call: ``RunOptions.add_active_adapter(adapter)``; with no active adapter the zeros are used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.base import Switcher, Written
from edgekit.converters.onnx.weights import quantize_weights_int8, symmetric_int8
from edgekit.errors import EdgekitError, require
from edgekit.graph import NamedGraph

ADAPTER_SUFFIX = ".onnx_adapter"


def adapter_file(path: Path, variant: str) -> Path:
    """``model_fp32_adapters.onnx`` → ``model_fp32_adapters.<variant>.onnx_adapter`` beside it."""
    return path.with_name(f"{path.stem}.{variant}{ADAPTER_SUFFIX}")


def graph_weights(graphs: list[NamedGraph]) -> tuple[NamedGraph, dict[str, dict[str, np.ndarray]]]:
    """The graph the .onnx is exported from (the first with own weights) and, per graph name, its own
    weights by parameter name (the name the exporter gives their initializers); raise naming the graphs
    when two graphs' own weights differ in names or shapes."""
    params = [{n: p.detach().numpy() for n, p in g.source.module.named_parameters()} for g in graphs]
    shared = set.intersection(*({_value_key(v) for v in p.values()} for p in params))
    own = {g.name: {n: v.astype(np.float32) for n, v in p.items() if _value_key(v) not in shared}
           for g, p in zip(graphs, params)}
    template = next((g for g in graphs if own[g.name]), graphs[0])
    want = {n: v.shape for n, v in own[template.name].items()}
    for g in graphs:
        got = {n: v.shape for n, v in own[g.name].items()}
        if got and got != want:
            raise EdgekitError(f"ONNX multi-graph artifacts need every graph's own weights to have the same names and "
                               f"shapes (they fill the same graph inputs); {g.name} and {template.name} differ. "
                               "LoRA adapters: adapt them with the same --targets and --rank")
    return template, own


def _value_key(value: np.ndarray) -> tuple[tuple[int, ...], str, bytes]:
    """Shape, dtype and a digest of the bytes: equal for the same tensor in two graphs."""
    return value.shape, value.dtype.str, hashlib.sha256(np.ascontiguousarray(value).data).digest()


def write_adapters(path: Path, graphs: list[NamedGraph], own: dict[str, dict[str, np.ndarray]], int8: bool) -> Written:
    """Turn the exported .onnx at ``path`` into the shared graph (own weights → zero-default inputs; ``int8``:
    weights int8) and write each graph's own weights as an ``.onnx_adapter`` beside it."""
    template = next((w for w in own.values() if w), {})
    _rewrite_for_adapters(path, template, int8)
    written = Written({})
    for g in graphs:
        if not own[g.name]:
            written.select[g.name] = {"adapter_file": None}
            continue
        target = adapter_file(path, g.name)
        _write_adapter(target, _int8_lora(own[g.name]) if int8 else own[g.name])
        written.select[g.name] = {"adapter_file": target.name}
        written.side_files.append(target)
    return written


def adapter_switcher(session: Any, path: Path) -> Switcher:
    """``run(variant, inputs)`` on one ONNX Runtime session of ``path``: each variant's adapter file is
    loaded once and activated per call; a variant without one (or ``None``) runs on the defaults."""
    ort = require("onnxruntime", "onnx")
    names = [i.name for i in session.get_inputs()]  # inputs with a default (the adapter weights) are not listed
    run_options: dict[str | None, Any] = {}
    loaded: list[Any] = []  # LoraAdapter objects must outlive the run options that point to them

    def options_for(variant: str | None) -> Any:
        if variant not in run_options:
            file = adapter_file(path, variant) if variant is not None else None
            run_options[variant] = None
            if file is not None and file.is_file():
                adapter = ort.LoraAdapter()
                adapter.Load(str(file))
                run_options[variant] = ort.RunOptions()
                run_options[variant].add_active_adapter(adapter)
                loaded.append(adapter)
        return run_options[variant]

    def run(variant: str | None, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, inputs)), options_for(variant))

    return run


def _rewrite_for_adapters(path: Path, weights: dict[str, np.ndarray], int8: bool) -> None:
    """Declare every adapter weight a graph input whose default is zeros (a sparse initializer with no
    non-zero values: a few bytes however large the weight). ``int8``: the shared weights become int8
    (``weights.py``) and each adapter input is split into an int8 input and a scale input that a
    DequantizeLinear turns back into the float weight (both default to zeros)."""
    import onnx

    if not weights and not int8:
        return
    model = onnx.load(str(path))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    missing = [n for n in weights if n not in inits]
    if missing:
        raise EdgekitError(f"the ONNX exporter renamed or folded weight {missing[0]!r}; "
                           "it cannot be exposed as an adapter input")
    for name, value in weights.items():
        if tuple(inits[name].dims) != value.shape:
            raise EdgekitError(f"ONNX weight {name} has shape {tuple(inits[name].dims)}; expected {value.shape}")
        graph.initializer.remove(inits[name])
    if int8:
        quantize_weights_int8(model)  # the shared weights; adapter weights are no longer initializers
    for name, value in weights.items():
        if not int8:
            _add_zero_input(graph, name, value)
            continue
        for part, like in _int8_lora({name: value}).items():
            _add_zero_input(graph, part, like)
        graph.node.insert(0, onnx.helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name],
                                                   name=f"{name}_dequantize"))
    onnx.save(model, str(path))


def _add_zero_input(graph: Any, name: str, like: np.ndarray) -> None:
    """A graph input ``name`` shaped and typed like ``like``, defaulting to all zeros (a sparse
    initializer; a scalar, which cannot be sparse, a dense one)."""
    import onnx
    from onnx import numpy_helper

    if like.ndim == 0:
        graph.initializer.append(numpy_helper.from_array(np.zeros_like(like), name))
    else:
        values = numpy_helper.from_array(np.zeros(0, like.dtype), name)
        indices = numpy_helper.from_array(np.zeros(0, np.int64), f"{name}_indices")
        graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(values, indices, list(like.shape)))
    graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(like.dtype),
                                                          list(like.shape)))


def _int8_lora(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each adapter weight as ``<name>_int8`` (int8) + ``<name>_scale`` (one float: per-channel scales of
    ``lora_B`` would add half as many bytes as its int8 values at rank 8)."""
    out = {}
    for name, value in weights.items():
        out[f"{name}_int8"], out[f"{name}_scale"] = symmetric_int8(value, None)
    return out


def _write_adapter(path: Path, weights: dict[str, np.ndarray]) -> None:
    ort = require("onnxruntime", "onnx")
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
    fmt.export_adapter(str(path))
