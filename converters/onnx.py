"""ONNX export (torch.onnx dynamo exporter), verified and benchmarked in ONNX Runtime."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters._quiet import quiet
from edgekit.converters.base import (
    ArtifactInfo, Converter, ModelSource, Runner, RunnerUnavailable, TensorInfo, conversion_error,
    register_converter,
)
from edgekit.errors import EdgekitError, require

METADATA_KEY = "edgekit"


@register_converter("onnx")
class OnnxConverter(Converter):
    suffix = ".onnx"
    runtime = "onnxruntime"
    extra = "onnx"

    def export(self, source: ModelSource, path: Path, precision: str, metadata: dict[str, Any]) -> None:
        require("onnxscript", self.extra)
        import torch

        try:
            with quiet():
                program = torch.onnx.export(
                    source.exported_program(), source.example_inputs, dynamo=True,
                    input_names=list(source.input_names), output_names=list(source.output_names),
                )
                program.save(str(path))
        except Exception as exc:
            raise conversion_error(self.name, exc) from exc
        _embed_metadata(path, metadata)

    def inspect(self, path: Path) -> ArtifactInfo:
        onnx = require("onnx", self.extra)
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
            raise EdgekitError(f"{path} is not a valid ONNX model: {_first_line(exc)}") from None
        return ArtifactInfo(
            inputs=[_tensor_info(v) for v in model.graph.input],
            outputs=[_tensor_info(v) for v in model.graph.output],
            op_histogram=dict(Counter(n.op_type for n in model.graph.node)),
            metadata={p.key: p.value for p in model.metadata_props},
        )

    def runner(self, path: Path, threads: int) -> Runner | RunnerUnavailable:
        ort = require("onnxruntime", self.extra)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EdgekitError(f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from None
        names = [i.name for i in session.get_inputs()]

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            return session.run(None, dict(zip(names, inputs)))

        return run


def _embed_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store the metadata as ONNX ``metadata_props`` (``edgekit`` JSON, ``labels`` JSON list)."""
    import onnx

    model = onnx.load(str(path))
    entries = {METADATA_KEY: json.dumps(metadata)}
    if metadata.get("labels"):
        entries["labels"] = json.dumps(metadata["labels"])
    onnx.helper.set_model_props(model, entries)
    model.producer_name, model.producer_version = "edgekit", str(metadata.get("edgekit_version", ""))
    onnx.save(model, str(path))


def _tensor_info(value) -> TensorInfo:
    import onnx

    t = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
    return TensorInfo(value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
