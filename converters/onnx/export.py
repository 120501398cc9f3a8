"""ONNX export (torch.onnx dynamo exporter), verified and benchmarked in ONNX Runtime."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from edgekit.quiet import quiet
from edgekit.converters.base import (
    ArtifactInfo, Converter, ModelSource, Runner, RunnerUnavailable, Switcher, TensorInfo, Written, conversion_error,
    register_converter,
)
from edgekit.converters.onnx.adapters import adapter_switcher, graph_weights, write_adapters
from edgekit.errors import EdgekitError, first_line, require
from edgekit.converters.onnx.placement import onnx_placement
from edgekit.converters.onnx.qdq import activations_to_uint8
from edgekit.converters.onnx.session import SESSION_CONFIG_KEY, open_session
from edgekit.converters.onnx.weights import quantize_weights_int8
from edgekit.graph import NamedGraph
from edgekit.placement import Placement
from edgekit.quant.spec import QuantMethods, QuantSpec, Scheme

METADATA_KEY = "edgekit"
NARROW_WEIGHT_QMAX = 63  # 7-bit int8 weights, where ORT's x86 int8 kernels would saturate (ort_weight_qmax)
QUANT: QuantMethods = QuantMethods("onnx")  # scheme → fn(source, path, spec, prepared) writing the .onnx
# precision → ONNX Runtime session config entries stored in the model for apps (and applied by the runner).
# Weight-only int8: let ORT fold each DequantizeLinear of an int8 weight into a float weight when the
# session loads; by default it keeps them (for QDQ fusion) and dequantizes on every call (2.7x slower).
SESSION_CONFIG: dict[str, dict[str, str]] = {"int8-weight": {"session.disable_quant_qdq": "1"}}


@register_converter("onnx")
class OnnxConverter(Converter):
    suffix = ".onnx"
    runtime = "onnxruntime"
    extra = "onnx"
    quant_methods = QUANT
    # several graphs in one .onnx (adapters.py); int8-weight: shared and per-graph weights int8 (DequantizeLinear)
    multi_graph_schemes = ("fp32", "int8-weight")
    accelerators = ("xnnpack", "npu")  # placement.py: the EP that runs each node, where the wheel has it

    def export(self, source: ModelSource, path: Path, quant: QuantSpec | str, metadata: dict[str, Any],
               *, prepared: Any = None) -> list[str] | None:
        require("onnxscript", self.extra)
        spec = QuantSpec.parse(quant)
        write = QUANT.get(spec)
        try:
            with quiet():
                changes = write(source, path, spec, prepared)
        except EdgekitError:
            raise
        except Exception as exc:
            raise conversion_error(self.name, exc) from exc
        embed_metadata(path, metadata)
        return changes

    def inspect(self, path: Path) -> ArtifactInfo:
        onnx = require("onnx", self.extra)
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
            raise EdgekitError(f"{path} is not a valid ONNX model: {first_line(exc, 300)}") from None
        return ArtifactInfo(
            inputs=[_tensor_info(v) for v in model.graph.input],
            outputs=[_tensor_info(v) for v in model.graph.output],
            op_histogram=dict(Counter(n.op_type for n in model.graph.node)),
            metadata={p.key: p.value for p in model.metadata_props},
        )

    def runner(self, path: Path, threads: int, variant: str | None = None) -> Runner | RunnerUnavailable:
        run = adapter_switcher(open_session(path, threads), path)
        return lambda inputs: run(variant, inputs)

    def switcher(self, path: Path, threads: int) -> Switcher:
        """One session; each variant's ``.onnx_adapter`` is loaded once and activated per call."""
        return adapter_switcher(open_session(path, threads), path)

    def placement(self, path: Path, accelerator: str) -> Placement:
        """Which execution provider runs each node (``converters/onnx/placement.py``)."""
        return onnx_placement(path, accelerator)

    def export_many(self, graphs: list[NamedGraph], path: Path, quant: QuantSpec | str,
                    metadata: dict[str, Any]) -> Written:
        """One .onnx for every graph: the weights that differ between them are inputs defaulting to zeros,
        each graph's values an ``.onnx_adapter`` file beside it (adapters.py)."""
        spec = QuantSpec.parse(quant)
        self.check_many(spec)
        template, own = graph_weights(graphs)
        self.export(template.source, path, QuantSpec(), metadata)  # fp32; int8-weight is applied on the shared graph
        return write_adapters(path, graphs, own, int8=spec.scheme is Scheme.INT8_WEIGHT)

    def check_many(self, quant: QuantSpec | str, graphs: list[NamedGraph] | None = None) -> None:
        """Also: every graph's own weights have the same names and shapes (they fill the same inputs)."""
        super().check_many(quant, graphs)
        if graphs:
            graph_weights(graphs)


def export_program(program, source: ModelSource, path: Path, rewrite: Callable[[Any], Any] | None = None) -> None:
    """Export with the dynamo exporter, without its per-node provenance (``pkg.torch.*`` metadata
    props: module paths and stack traces, ~7% of an fp32 CNN's file and ~3x its int8 weights);
    ``rewrite(model_proto)`` edits the in-memory model before the one write."""
    import onnx
    import torch

    onnx_program = torch.onnx.export(program, source.example_inputs, dynamo=True,
                                     input_names=list(source.input_names), output_names=list(source.output_names))
    model = onnx_program.model_proto
    for node in model.graph.node:
        del node.metadata_props[:]
    if rewrite is not None:
        rewrite(model)
    onnx.save(model, str(path))


@QUANT.register(Scheme.FP32)
def _fp32(source: ModelSource, path: Path, spec: QuantSpec, prepared: Any) -> None:
    export_program(source.exported_program(), source, path)


@QUANT.register(Scheme.INT8_STATIC)
def _int8_static(source: ModelSource, path: Path, spec: QuantSpec, prepared: Any) -> list[str] | None:
    """The shared PT2E calibration, weights folded to int8: QDQ that ORT fuses into QLinearConv."""
    import torch

    if prepared is None:
        raise EdgekitError("onnx int8 export needs a calibrated graph (edgekit.quant.plan_quantization)")
    qmax, why = ort_weight_qmax()
    graph = prepared.converted(fold_quantize=True, weight_qmax=qmax)
    # activations as uint8: ORT's x86 kernels' U8S8 form, so every int8 conv and add is fused (qdq.py)
    export_program(torch.export.export(graph, source.example_inputs), source, path, rewrite=activations_to_uint8)
    return [f"int8 weights narrowed to 7 bits (±{qmax}): {why}"] if why else None


def ort_weight_qmax() -> tuple[int | None, str]:
    """Full 8-bit weights (ONNX Runtime's own default, ``reduce_range=False``), except on an x86 host without
    VNNI, where ORT's u8s8 kernels add pairs of products in int16 and saturate with full-range weights (ORT's
    ``reduce_range`` exists for them): there 7-bit, and why. Phones (Arm dot-product kernels) and VNNI hosts
    have no such overflow; the foreign MobileNetV2 kept 99% top-1 agreement with 8-bit weights, 97% with 7-bit."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return None, ""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        flags = ""
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return None, ""
    return NARROW_WEIGHT_QMAX, ("this x86 host has no VNNI (or does not say), where ONNX Runtime's int8 "
                                "convolutions saturate with 8-bit weights")


@QUANT.register(Scheme.INT8_WEIGHT)
def _int8_weight(source: ModelSource, path: Path, spec: QuantSpec, prepared: Any) -> None:
    """The fp32 graph with int8 weights behind DequantizeLinear (float compute; ``weights.py``)."""
    import onnx

    _fp32(source, path, spec, None)
    model = onnx.load(str(path))
    if not quantize_weights_int8(model):
        raise EdgekitError("onnx int8-weight: the graph has no Conv/Gemm/MatMul weight initializers to quantize")
    onnx.save(model, str(path))


@QUANT.register(Scheme.INT8_DYNAMIC)
def _int8_dynamic(source: ModelSource, path: Path, spec: QuantSpec, prepared: Any) -> None:
    """ONNX Runtime dynamic quantization of the fp32 graph (int8 weights, activations scaled per call)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _fp32(source, fp32, spec, None)
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8,
                         per_channel=spec.granularity.value == "per-channel")


def embed_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store the metadata as ONNX ``metadata_props`` (``edgekit`` JSON, ``labels`` JSON list, and the
    session config entries the precision needs)."""
    import onnx

    model = onnx.load(str(path))
    entries = {METADATA_KEY: json.dumps(metadata)}
    if metadata.get("labels"):
        entries["labels"] = json.dumps(metadata["labels"])
    if metadata.get("precision") in SESSION_CONFIG:
        entries[SESSION_CONFIG_KEY] = json.dumps(SESSION_CONFIG[metadata["precision"]])
    onnx.helper.set_model_props(model, entries)
    model.producer_name, model.producer_version = "edgekit", str(metadata.get("edgekit_version", ""))
    onnx.save(model, str(path))


def _tensor_info(value) -> TensorInfo:
    import onnx

    t = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
    return TensorInfo(value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name)


OnnxConverter.precisions = tuple(QUANT.names())  # what `edgekit list formats` shows
