"""TFLite/LiteRT export (litert-torch), verified and benchmarked in the LiteRT interpreter (XNNPACK)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.quiet import quiet
from edgekit.converters.tflite._compat import has_lowering, ops_details
from edgekit.converters.tflite.flatbuffer import pack_model
from edgekit.converters.tflite.weights import quantize_weights
from edgekit.converters.base import (
    ArtifactInfo, Converter, ModelSource, Runner, RunnerUnavailable, Switcher, TensorInfo, Written, conversion_error,
    register_converter,
)
from edgekit.converters.tflite.adapters import signature_model, signature_runner, signature_switcher
from edgekit.converters.tflite.rewrites import private_dequantize
from edgekit.converters.tflite.tensors import IONames, feed_value, name_io, signature_order
from edgekit.errors import EdgekitError, require
from edgekit.graph import NamedGraph
from edgekit.converters.tflite.placement import tflite_placement
from edgekit.placement import Placement
from edgekit.quant.spec import QuantMethods, QuantSpec, Scheme

METADATA_NAME = "edgekit"  # name of the flatbuffer metadata entry holding edgekit's JSON
QUANT: QuantMethods = QuantMethods("tflite")  # scheme → fn(source, spec, prepared) returning an edge model


@register_converter("tflite")
class TFLiteConverter(Converter):
    suffix = ".tflite"
    runtime = "litert-interpreter"
    extra = "tflite"
    quant_methods = QUANT
    # several graphs as signatures of one .tflite (adapters.py); weight-only schemes quantize the written
    # file (ai-edge-quantizer), so shared weights stay shared
    multi_graph_schemes = ("fp32", "int8-weight", "int4-weight")
    accelerators = ("xnnpack", "gpu", "npu")  # placement.py: observed on XNNPACK here; GPU and NPU need a phone

    def export(self, source: ModelSource, path: Path, quant: QuantSpec | str, metadata: dict[str, Any],
               *, prepared: Any = None) -> list[str]:
        spec = QuantSpec.parse(quant)
        write = QUANT.get(spec)
        try:
            with quiet():
                model = write(source, spec, prepared)
                model.export(str(path))
        except EdgekitError:
            raise
        except Exception as exc:
            raise conversion_error(self.name, exc, convertible=_lowerable,
                                   unconvertible=lambda: _first_unlowered_op(source)) from exc
        embed_metadata(path, metadata, {_default_signature(): (source.input_names, source.output_names)})
        return list(model.changes)

    def inspect(self, path: Path) -> ArtifactInfo:
        interpreter = _load_interpreter(path, threads=1)
        ops = Counter(op["op_name"] for op in ops_details(interpreter))
        return ArtifactInfo(
            inputs=[_tensor_info(d) for d in interpreter.get_input_details()],
            outputs=[_tensor_info(d) for d in interpreter.get_output_details()],
            op_histogram=dict(ops),
            metadata=read_metadata(path),
        )

    def placement(self, path: Path, accelerator: str) -> Placement:
        """Where the ops run on ``accelerator`` (``converters/tflite/placement.py``)."""
        return tflite_placement(path, accelerator)

    def export_many(self, graphs: list[NamedGraph], path: Path, quant: QuantSpec | str,
                    metadata: dict[str, Any]) -> Written:
        """One .tflite with one signature per graph (adapters.py); each distinct constant is stored once."""
        spec = QuantSpec.parse(quant)
        self.check_many(spec)
        try:
            with quiet():
                model = Flatbuffer(signature_model(graphs))
                (WeightOnly(model, spec) if spec.quantizes else model).export(str(path))
        except EdgekitError:
            raise
        except Exception as exc:
            raise conversion_error(self.name, exc, convertible=_lowerable) from exc
        embed_metadata(path, metadata, {g.name: (g.source.input_names, g.source.output_names) for g in graphs})
        return Written({g.name: {"signature": g.name} for g in graphs})

    def switcher(self, path: Path, threads: int) -> Switcher:
        """One interpreter, one signature runner per variant: switching is calling another runner."""
        return signature_switcher(_load_interpreter(path, threads), _signature_order(path))

    def runner(self, path: Path, threads: int, variant: str | None = None) -> Runner | RunnerUnavailable:
        interpreter = _load_interpreter(path, threads)
        if variant is not None:  # one signature of an export_many artifact
            return signature_runner(interpreter, variant, _signature_order(path))
        with quiet():
            interpreter.allocate_tensors()
        ins = interpreter.get_input_details()
        outs = interpreter.get_output_details()

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            for detail, value in zip(ins, inputs):
                interpreter.set_tensor(detail["index"], feed_value(detail, value))
            interpreter.invoke()
            return [_from_output(d, interpreter.get_tensor(d["index"])) for d in outs]

        return run


@dataclass
class Flatbuffer:
    """A converted LiteRT model, serialized in memory and written from Python: a full disk is then an
    OSError (one failed artifact, the other formats go on) instead of LLVM's fatal ``_exit(1)`` inside
    LiteRT's own file writer, which ends the whole process."""

    model: Any  # litert_torch's converted model
    changes: list[str] = field(default_factory=list)  # what was done to the graph before converting it

    def export(self, path: str) -> None:
        write_flatbuffer(self.model, Path(path))


def write_flatbuffer(model: Any, path: Path) -> None:
    """Write a litert_torch model's flatbuffer to ``path`` (serialized in memory first)."""
    path.write_bytes(model.model_content())


@QUANT.register(Scheme.FP32)
def _fp32(source: ModelSource, spec: QuantSpec, prepared: Any):
    return Flatbuffer(require("litert_torch", "tflite").convert(source.module, source.example_inputs))


@QUANT.register(Scheme.INT8_WEIGHT)
@QUANT.register(Scheme.INT4_WEIGHT)
def _weight_only(source: ModelSource, spec: QuantSpec, prepared: Any):
    """The float model, its weights then quantized by ai-edge-quantizer (float compute)."""
    return WeightOnly(_fp32(source, spec, prepared), spec)


@dataclass
class WeightOnly:
    """An edge model whose ``export`` writes the float flatbuffer, then quantizes its weights."""

    model: Any
    spec: QuantSpec

    @property
    def changes(self) -> list[str]:
        return list(getattr(self.model, "changes", []))

    def export(self, path: str) -> None:
        self.model.export(path)
        quantize_weights(Path(path), self.spec)


@QUANT.register(Scheme.INT8_STATIC)
@QUANT.register(Scheme.INT8_DYNAMIC)
def _int8_pt2e(source: ModelSource, spec: QuantSpec, prepared: Any):
    """The shared PT2E graph with q/dq left unfolded, which the LiteRT converter lowers to int8 kernels.

    Static int8 gets int8 inputs and outputs (the first quantize and last dequantize are folded into
    the graph's I/O); their scale and zero point are in the manifest, and the runner applies them."""
    litert_torch = require("litert_torch", "tflite")
    from litert_torch.quantize.quant_config import QuantConfig

    if prepared is None:
        raise EdgekitError(f"tflite {spec.tag} export needs a prepared PT2E graph (edgekit.quant.plan_quantization)")
    graph = prepared.converted(fold_quantize=False)
    changes = private_dequantize(graph)
    return Flatbuffer(litert_torch.convert(graph, source.example_inputs,
                                           quant_config=QuantConfig(pt2e_quantizer=prepared.quantizer)), changes)


def embed_metadata(path: Path, metadata: dict[str, Any], names: dict[str, IONames] | None = None) -> None:
    """Finish the flatbuffer: give each signature in ``names`` the model's I/O names (signature keys and
    I/O tensors, ``tensors.name_io``), add a ``metadata`` entry named ``edgekit`` holding the JSON (its I/O
    entries corrected to the graph's real dtypes and int8 scale/zero point) and shorten internal
    tensor names (the converter writes the whole PyTorch module path into each). Identical numeric
    vectors (per-channel zero points above all) are written once (``flatbuffer.py``)."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    if any((b.offset or 0) > 1 for b in model.buffers or []):
        raise EdgekitError(f"{path}: buffers stored outside the flatbuffer; cannot embed metadata")
    name_io(model, names or {})
    main = model.subgraphs[0]
    metadata = {**metadata, "inputs": _io_entries(schema, main, main.inputs, metadata.get("inputs", [])),
                "outputs": _io_entries(schema, main, main.outputs, metadata.get("outputs", []))}
    for subgraph in model.subgraphs:
        _shorten_tensor_names(subgraph)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    path.write_bytes(pack_model(model, path.stat().st_size))


def _io_entries(schema: Any, subgraph: Any, indices: Any, entries: list[dict]) -> list[dict]:
    """The metadata's input/output entries with the dtype the graph really has, plus scale and zero
    point where that dtype is a quantized integer (an app quantizes inputs and dequantizes outputs)."""
    dtype_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    fixed = []
    for entry, index in zip(entries, list(indices)):
        tensor = subgraph.tensors[index]
        entry = {**entry, "dtype": dtype_names.get(tensor.type, entry.get("dtype"))}
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale) and entry["dtype"] in ("int8", "uint8", "int16"):
            entry["quantization"] = {"scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}
        fixed.append(entry)
    return fixed + entries[len(fixed):]


def _shorten_tensor_names(subgraph: Any) -> None:
    """Rename tensors other than the subgraph's inputs and outputs to ``t<index>``; the names apps
    use (I/O tensors and signature keys) are untouched."""
    keep = set(list(subgraph.inputs)) | set(list(subgraph.outputs))
    for index, tensor in enumerate(subgraph.tensors):
        if index not in keep:
            tensor.name = f"t{index}".encode()


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


def _signature_order(path: Path) -> dict[str, IONames]:
    """Each signature's input and output keys in model order, read from the file."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    return signature_order(schema.Model.GetRootAs(path.read_bytes(), 0))


def _default_signature() -> str:
    """The signature key litert-torch gives a model converted without a name (``serving_default``)."""
    with quiet():  # imported already by the conversion; quiet in case it was not (LiteRT logs at import)
        return require("litert_torch.model", "tflite").DEFAULT_SIGNATURE_NAME


def _tensor_info(detail: dict) -> TensorInfo:
    scale, zero = detail.get("quantization", (0.0, 0))
    quant = (float(scale), int(zero)) if scale and np.dtype(detail["dtype"]).kind in "iu" else None
    return TensorInfo(detail["name"], tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name, quant)


def _from_output(detail: dict, value: np.ndarray) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return value
    return ((value.astype(np.float32) - zero) * scale).astype(np.float32)


def _lowerable(target: Any) -> bool:
    """False only for a core-ATen operator that litert-torch has no lowering for."""
    import torch

    return not isinstance(target, torch._ops.OpOverload) or has_lowering(target)


def _first_unlowered_op(source: ModelSource) -> str | None:
    """The first core-ATen operator of the model that litert-torch has no lowering for."""
    import torch

    try:
        with quiet():
            program = source.exported_program().run_decompositions()
    except Exception:  # noqa: BLE001 - diagnosis only; the original error is reported otherwise
        return None
    for node in program.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            if not has_lowering(node.target):
                return str(node.target)
    return None

TFLiteConverter.precisions = tuple(QUANT.names())  # what `edgekit list formats` shows
