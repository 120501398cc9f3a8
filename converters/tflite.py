"""TFLite/LiteRT export (litert-torch), verified and benchmarked in the LiteRT interpreter (XNNPACK)."""

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
from edgekit.errors import EdgekitError, UnsupportedOpError, require

METADATA_NAME = "edgekit"  # name of the flatbuffer metadata entry holding edgekit's JSON


@register_converter("tflite")
class TFLiteConverter(Converter):
    suffix = ".tflite"
    runtime = "litert-interpreter"
    extra = "tflite"

    def export(self, source: ModelSource, path: Path, precision: str, metadata: dict[str, Any]) -> None:
        try:
            with quiet():
                litert_torch = require("litert_torch", self.extra)
                litert_torch.convert(source.module, source.example_inputs).export(str(path))
        except Exception as exc:
            op = _first_unlowered_op(source)
            raise (UnsupportedOpError(op, self.name) if op else conversion_error(self.name, exc)) from exc
        _embed_metadata(path, metadata)

    def inspect(self, path: Path) -> ArtifactInfo:
        interpreter = _load_interpreter(path, threads=1)
        ops = Counter(op["op_name"] for op in interpreter._get_ops_details())
        return ArtifactInfo(
            inputs=[_tensor_info(d) for d in interpreter.get_input_details()],
            outputs=[_tensor_info(d) for d in interpreter.get_output_details()],
            op_histogram=dict(ops),
            metadata=read_metadata(path),
        )

    def runner(self, path: Path, threads: int) -> Runner | RunnerUnavailable:
        interpreter = _load_interpreter(path, threads)
        with quiet():
            interpreter.allocate_tensors()
        ins = [d["index"] for d in interpreter.get_input_details()]
        outs = [d["index"] for d in interpreter.get_output_details()]

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            for index, value in zip(ins, inputs):
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            return [interpreter.get_tensor(i) for i in outs]

        return run


def _embed_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Add a flatbuffer ``metadata`` entry named ``edgekit`` whose buffer holds the JSON."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    if any((b.offset or 0) > 1 for b in model.buffers or []):
        raise EdgekitError(f"{path}: buffers stored outside the flatbuffer; cannot embed metadata")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    builder = flatbuffers.Builder(path.stat().st_size + 65536)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def read_metadata(path: Path) -> dict[str, str]:
    """edgekit's metadata entries of a .tflite file (name → UTF-8 text)."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    found = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = entry.Name().decode()
        if name == METADATA_NAME:
            found[name] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode()
    return found


def _load_interpreter(path: Path, threads: int):
    interp_mod = require("ai_edge_litert.interpreter", "tflite")
    try:
        with quiet():
            return interp_mod.Interpreter(model_path=str(path), num_threads=threads)
    except (ValueError, RuntimeError) as exc:
        raise EdgekitError(f"the LiteRT interpreter cannot load {path}: {str(exc).splitlines()[0][:200]}") from None


def _tensor_info(detail: dict) -> TensorInfo:
    return TensorInfo(detail["name"], tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name)


def _first_unlowered_op(source: ModelSource) -> str | None:
    """The first core-ATen operator of the model that litert-torch has no lowering for."""
    import torch
    from litert_torch.backend import lowerings

    try:
        program = source.exported_program().run_decompositions()
    except Exception:  # noqa: BLE001 - diagnosis only; the original error is reported otherwise
        return None
    for node in program.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            if lowerings.lookup(node.target) is None:
                return str(node.target)
    return None
