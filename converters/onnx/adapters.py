"""ONNX: one .onnx whose LoRA weights are graph inputs with zero initializers of the same name (so the
default is the base model; stored sparse, they cost a few bytes), and one ``.onnx_adapter`` per adapter
holding those weights. Weight-only int8 bundles hold base and LoRA weights as int8 + per-channel scales.

An app loads the model once and each adapter once (``onnxruntime.LoraAdapter``) and picks one per
call: ``RunOptions.add_active_adapter(adapter)``; with no active adapter the zeros give the base.
All adapters must have the same targets and rank (they fill the same inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters._quiet import quiet
from edgekit.converters.base import Runner, RunnerUnavailable, conversion_error
from edgekit.errors import EdgekitError, require
from edgekit.lora.layers import lora_layers
from edgekit.lora.pack_base import Packager, VariantGraph, Written, register_packager
from edgekit.quant.spec import QuantSpec, Scheme

ADAPTER_SUFFIX = ".onnx_adapter"


def adapter_file(path: Path, variant: str) -> Path:
    """``model_fp32_adapters.onnx`` → ``model_fp32_adapters.<variant>.onnx_adapter`` beside it."""
    return path.with_name(f"{path.stem}.{variant}{ADAPTER_SUFFIX}")


def lora_weights(variant: VariantGraph) -> dict[str, np.ndarray]:
    """The variant's LoRA tensors by their names in the exported graph (module path of the graph)."""
    module = variant.source.module
    return {f"{name}.{part}.{pname}": p.detach().numpy().astype(np.float32)
            for name, layer in lora_layers(module).items() for part in ("lora_A", "lora_B")
            for pname, p in getattr(layer, part).named_parameters()}


@register_packager("onnx")
class OnnxPackager(Packager):
    suffix = ".onnx"
    # int8-weight: base weights and every adapter's LoRA weights int8 per output channel (DequantizeLinear)
    schemes = ("fp32", "int8-weight")

    def check(self, spec: QuantSpec, variants: list[VariantGraph]) -> None:
        super().check(spec, variants)
        shapes = [{k: v.shape for k, v in lora_weights(v).items()} for v in variants if v.adapter is not None]
        if any(s != shapes[0] for s in shapes[1:]):
            raise EdgekitError("ONNX multi-LoRA needs every adapter to have the same targets and rank "
                               "(they fill the same graph inputs); adapt them with the same --targets and --rank")

    def write(self, variants: list[VariantGraph], path: Path, spec: QuantSpec, metadata: dict[str, Any]) -> Written:
        require("onnxscript", "onnx")
        import torch

        from edgekit.converters.onnx.export import embed_metadata, export_program

        adapted = [v for v in variants if v.adapter is not None]
        template = adapted[0] if adapted else variants[0]
        src = template.source
        try:
            with quiet():
                export_program(torch.export.export(src.module, src.example_inputs), src, path)
        except Exception as exc:
            raise conversion_error(self.name, exc) from exc
        int8 = spec.scheme is Scheme.INT8_WEIGHT
        _rewrite_for_adapters(path, lora_weights(template) if adapted else {}, int8)
        embed_metadata(path, metadata)
        select: dict[str, dict[str, Any]] = {}
        side = []
        for v in variants:
            if v.adapter is None:
                select[v.name] = {"adapter_file": None}
                continue
            target = adapter_file(path, v.name)
            _write_adapter(target, _int8_lora(lora_weights(v)) if int8 else lora_weights(v))
            select[v.name] = {"adapter_file": target.name}
            side.append(target)
        return Written(select, side)

    def runner(self, path: Path, variant: str, threads: int) -> Runner | RunnerUnavailable:
        return self.switcher(path, threads, only=variant)

    def switcher(self, path: Path, threads: int, only: str | None = None):
        """One session; each variant's adapter is loaded once and activated per call."""
        ort = require("onnxruntime", "onnx")
        from edgekit.converters.onnx.export import open_session

        session = open_session(path, threads)
        names = [i.name for i in session.get_inputs() if ".lora_A." not in i.name and ".lora_B." not in i.name]
        run_options: dict[str, Any] = {}
        loaded: list[Any] = []  # LoraAdapter objects must outlive the run options that point to them

        def options_for(variant: str):
            if variant not in run_options:
                file = adapter_file(path, variant)
                ro = ort.RunOptions()
                if file.is_file():
                    adapter = ort.LoraAdapter()
                    adapter.Load(str(file))
                    ro.add_active_adapter(adapter)
                    loaded.append(adapter)
                run_options[variant] = ro
            return run_options[variant]

        def run(variant: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
            return session.run(None, dict(zip(names, inputs)), options_for(variant))

        if only is not None:
            return lambda inputs: run(only, inputs)
        return run


def _rewrite_for_adapters(path: Path, weights: dict[str, np.ndarray], int8: bool) -> None:
    """Declare every LoRA weight a graph input whose default is zeros (a sparse initializer with no
    non-zero values: a few bytes however large the weight). ``int8``: the base weights become int8
    (``onnx_weights``) and each LoRA input is split into an int8 input and a scale input that a
    DequantizeLinear turns back into the float weight (both default to zeros: the base)."""
    import onnx

    from edgekit.converters.onnx.weights import quantize_weights_int8

    if not weights and not int8:
        return
    model = onnx.load(str(path))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    missing = [n for n in weights if n not in inits]
    if missing:
        raise EdgekitError(f"the ONNX exporter renamed or folded LoRA weight {missing[0]!r}; "
                           "it cannot be exposed as an adapter input")
    for name, value in weights.items():
        if tuple(inits[name].dims) != value.shape:
            raise EdgekitError(f"ONNX LoRA weight {name} has shape {tuple(inits[name].dims)}; expected {value.shape}")
        graph.initializer.remove(inits[name])
    if int8:
        quantize_weights_int8(model)  # the base's; LoRA weights are no longer initializers
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
    """Each LoRA weight as ``<name>_int8`` (int8) + ``<name>_scale`` (one float: per-channel scales of
    ``lora_B`` would add half as many bytes as its int8 values at rank 8)."""
    from edgekit.converters.onnx.weights import symmetric_int8

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
