"""ONNX: one .onnx whose LoRA weights are graph inputs with zero initializers of the same name (so the
default is the base model), and one ``.onnx_adapter`` per adapter holding those weights.

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
from edgekit.quant.spec import QuantSpec

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

    def check(self, spec: QuantSpec, variants: list[VariantGraph]) -> None:
        super().check(spec, variants)
        shapes = [{k: v.shape for k, v in lora_weights(v).items()} for v in variants if v.adapter is not None]
        if any(s != shapes[0] for s in shapes[1:]):
            raise EdgekitError("ONNX multi-LoRA needs every adapter to have the same targets and rank "
                               "(they fill the same graph inputs); adapt them with the same --targets and --rank")

    def write(self, variants: list[VariantGraph], path: Path, spec: QuantSpec, metadata: dict[str, Any]) -> Written:
        require("onnxscript", "onnx")
        import torch

        from edgekit.converters.onnx import _embed_metadata

        adapted = [v for v in variants if v.adapter is not None]
        template = adapted[0] if adapted else variants[0]
        src = template.source
        try:
            with quiet():
                program = torch.export.export(src.module, src.example_inputs)
                onnx_program = torch.onnx.export(program, src.example_inputs, dynamo=True,
                                                 input_names=list(src.input_names), output_names=list(src.output_names))
                onnx_program.save(str(path))
        except Exception as exc:
            raise conversion_error(self.name, exc) from exc
        _expose_lora_inputs(path, lora_weights(template) if adapted else {})
        _embed_metadata(path, metadata)
        select: dict[str, dict[str, Any]] = {}
        side = []
        for v in variants:
            if v.adapter is None:
                select[v.name] = {"adapter_file": None}
                continue
            target = adapter_file(path, v.name)
            _write_adapter(target, lora_weights(v))
            select[v.name] = {"adapter_file": target.name}
            side.append(target)
        return Written(select, side)

    def runner(self, path: Path, variant: str, threads: int) -> Runner | RunnerUnavailable:
        return self.switcher(path, threads, only=variant)

    def switcher(self, path: Path, threads: int, only: str | None = None):
        """One session; each variant's adapter is loaded once and activated per call."""
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EdgekitError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
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


def _expose_lora_inputs(path: Path, weights: dict[str, np.ndarray]) -> None:
    """Zero every LoRA initializer and declare it a graph input of the same name (an overridable default);
    drop the exporter's per-node provenance (as the int8 export does) from every graph, base alone too."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    missing = [n for n in weights if n not in inits]
    if missing:
        raise EdgekitError(f"the ONNX exporter renamed or folded LoRA weight {missing[0]!r}; "
                           "it cannot be exposed as an adapter input")
    for name, value in weights.items():
        init = inits[name]
        if tuple(init.dims) != value.shape:
            raise EdgekitError(f"ONNX LoRA weight {name} has shape {tuple(init.dims)}; expected {value.shape}")
        init.CopyFrom(numpy_helper.from_array(np.zeros_like(value), name))
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(value.shape)))
    for node in model.graph.node:  # per-node exporter provenance: large and not needed
        del node.metadata_props[:]
    onnx.save(model, str(path))


def _write_adapter(path: Path, weights: dict[str, np.ndarray]) -> None:
    ort = require("onnxruntime", "onnx")
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
    fmt.export_adapter(str(path))
