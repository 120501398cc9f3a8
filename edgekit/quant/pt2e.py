"""One calibration for every format: torchao PT2E with litert-torch's symmetric int8 quantizer.

``prepare_quant`` exports the model, inserts observers, runs the calibration samples once; each
converter then takes its own deep copy through ``convert_pt2e`` (``fold_quantize=False`` for
TFLite, ``True`` for ONNX and Core ML), so all three artifacts share the same scales.

``CALIBRATORS`` maps a ``QuantSpec.calib_method`` to the function that calibrates: the PT2E observers here
(``histogram``, ``minmax``), NNCF's algorithms in ``edgekit.quant.nncf_ptq``; ``edgekit.quant.calibrate`` picks one.
Each returns a ``QuantGraph``: ``converted`` copies for the formats, ``layers`` and the ``float_graph`` reference.

Users' models (a loaded ``.pt2``, transformers text models) take integer inputs: integer and bool edges
(token ids, masks, positions) are never quantized, and embedding tables stay float (litert-torch's quantizer
annotates no ``embedding``: a lookup reads one row per token, there is no matmul to run in int8).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch

from edgekit.graph import ModelSource
from edgekit.errors import EdgekitError, require
from edgekit.registry import Registry
from edgekit.quiet import quiet
from edgekit.quant.annotations import ANNOTATION_PASSES
from edgekit.quant.calib import Sample
from edgekit.quant.spec import OP_TYPES, Granularity, QuantSpec, Scheme

LAYER_OPS = tuple(f"aten.{op}.default" for op in OP_TYPES)  # what gets int8 weights
PT2E_SCHEMES = (Scheme.INT8_STATIC, Scheme.INT8_DYNAMIC)


def module_path(node: torch.fx.Node) -> str:
    """The dotted name of the innermost module a graph node came from ("" for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def op_type(node: torch.fx.Node) -> str:
    """A layer node's op type as overrides name it (``conv2d``, ``linear``; see ``edgekit.quant.spec.OP_TYPES``)."""
    return str(node.target).split(".")[1]


def layer_nodes(gm: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    """Module name → its conv/linear node, in graph order (the layers a QuantSpec can keep in float)."""
    found: dict[str, torch.fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and str(node.target) in LAYER_OPS:
            found.setdefault(module_path(node) or node.name, node)
    return found


def make_quantizer(spec: QuantSpec, fixed_qparams: bool = True):
    """litert-torch's PT2EQuantizer for ``spec``, leaving the layers its overrides keep float unannotated.
    ``fixed_qparams=False`` replaces litert's fixed-scale output annotation of sigmoid / ``_softmax`` (scale 1/256,
    which NNCF refuses: "Unknown torchao quantization spec") by the calibrated activation spec."""
    with quiet():  # litert-torch imports TensorFlow, which logs at import
        pq = require("litert_torch.quantize.pt2e_quantizer", "tflite")
    config = pq.get_symmetric_quantization_config(
        is_per_channel=spec.granularity is Granularity.PER_CHANNEL, is_qat=spec.qat,
        is_dynamic=spec.scheme is Scheme.INT8_DYNAMIC)
    if spec.calib_method == "minmax" and config.input_activation is not None and not spec.qat:
        from torchao.quantization.pt2e.observer import MinMaxObserver

        act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)

    class _Quantizer(pq.PT2EQuantizer):
        # QAT folds BatchNorm first (edgekit.quant.qat); litert's conv-bn QAT patterns fail to build on torch 2.13
        STATIC_QAT_ONLY_OPS: list = []

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for adjust in ANNOTATION_PASSES:
                adjust(model)
            if not fixed_qparams:
                _calibrate_fixed_qparams(model, config.output_activation)
            for name, node in layer_nodes(model).items():  # litert's module-name filter misreads torch 2.13 names
                annotation = node.meta.get("quantization_annotation")
                if annotation is not None and spec.keeps_float(name, op_type(node)):
                    for arg in node.args[1:]:  # weight and bias stay float; activations keep their int8 edges
                        annotation.input_qspec_map.pop(arg, None)
            return model

    return _Quantizer().set_global(config)


def _calibrate_fixed_qparams(model: torch.fx.GraphModule, calibrated: Any) -> None:
    """Give the outputs litert-torch 0.10 fixes (sigmoid, ``_softmax``: scale 1/256) the ``calibrated`` spec instead.
    Not dropped: a consumer's shared spec (a mean after a sigmoid) points at that output and torchao's grouping
    then fails with a KeyError on the producer."""
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec

    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is not None and isinstance(annotation.output_qspec, FixedQParamsQuantizationSpec):
            annotation.output_qspec = calibrated


class QuantGraph(Protocol):
    """A calibrated quantization of one model, shared by every format of a conversion."""

    spec: QuantSpec
    quantizer: Any  # the litert-torch quantizer that annotated the graph (the TFLite converter takes it)
    example_inputs: tuple[torch.Tensor, ...]
    calibration: str  # description of the calibration data

    def converted(self, fold_quantize: bool, weight_qmax: int | None = None) -> torch.fx.GraphModule:
        """A fresh copy with quantize/dequantize nodes (weight quantize folded when ``fold_quantize``)."""

    def layers(self) -> list[str]:
        """The conv/linear layers (module names) of the graph, in order."""

    def float_graph(self) -> torch.fx.GraphModule:
        """A fresh float copy of the calibrated graph (BatchNorm folded): the per-layer report's reference."""


@dataclasses.dataclass
class PreparedQuant:
    """A calibrated PT2E graph (observers filled); ``converted`` gives each target its own copy."""

    spec: QuantSpec
    prepared: torch.fx.GraphModule
    quantizer: Any
    example_inputs: tuple[torch.Tensor, ...]
    calibration: str  # description of the calibration data

    def converted(self, fold_quantize: bool, weight_qmax: int | None = None) -> torch.fx.GraphModule:
        """A converted copy; ``weight_qmax`` narrows the weight range (ONNX Runtime's ``reduce_range``:
        its x86 int8 kernels saturate int16 pair sums with full-range weights — measured 92% vs 100% top-1)."""
        with quiet():  # torch's pytree warns about a deprecated spec class while copying; torchao logs at import
            from torchao.quantization.pt2e.observer import MinMaxObserver, PerChannelMinMaxObserver
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

            graph = copy.deepcopy(self.prepared)
            if weight_qmax is not None:
                for module in graph.modules():
                    if isinstance(module, (PerChannelMinMaxObserver, MinMaxObserver)) and module.qscheme in (
                            torch.per_channel_symmetric, torch.per_tensor_symmetric):
                        module.quant_min, module.quant_max = -weight_qmax, weight_qmax
            return convert_pt2e(graph, fold_quantize=fold_quantize)

    def layers(self) -> list[str]:
        """The conv/linear layers (module names) of the graph, in order."""
        return list(layer_nodes(self.prepared))

    def float_graph(self) -> torch.fx.GraphModule:
        """A copy of the observed graph computing in float: observers pass values through; QAT's fake quantizers
        are switched off (they would otherwise quantize the reference too)."""
        with quiet():  # torch's pytree warns about a deprecated spec class while copying
            from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

            graph = copy.deepcopy(self.prepared)
        for module in graph.modules():
            if isinstance(module, FakeQuantizeBase):
                module.disable_fake_quant()
                module.disable_observer()
        return graph


def export_graph(source: ModelSource) -> torch.fx.GraphModule:
    """The model as a torch.export graph module (batch 1, eval mode), eval-mode dropouts removed."""
    with quiet():
        gm = torch.export.export(eval_mode(source.module), source.example_inputs).module()
    _drop_eval_dropouts(gm)
    return gm


_aten = torch.ops.aten
# op → the position of its ``training`` argument: what eval mode switches off in an exported graph
_TRAINING_ARG = {_aten.batch_norm.default: 5, _aten._native_batch_norm_legit.default: 5}
_DROPOUTS = {op: 2 for op in (_aten.dropout.default, _aten.dropout_.default, _aten.feature_dropout.default,
                              _aten.feature_dropout_.default, _aten.alpha_dropout.default, _aten.alpha_dropout_.default,
                              _aten.feature_alpha_dropout.default, _aten.feature_alpha_dropout_.default)}
_TRAINING_ARG.update(_DROPOUTS)


def eval_mode(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in eval mode. The module of a loaded ``.pt2`` (an unlifted torch.export graph) refuses
    ``.eval()``: its batch-norm and dropout calls carry their mode as an argument, switched off here in a copy
    (only when one is on). Not torchao's ``move_exported_model_to_eval``: it rewrites batch norm with the
    default eps and momentum (its own TODO), which changed MobileNetV2's eps 1e-3 to 1e-5."""
    try:
        return module.eval()
    except NotImplementedError:  # "Calling eval() is not supported yet": an unlifted torch.export graph
        pass
    if not any(_training(node) for node in module.graph.nodes):
        return module
    module = copy.deepcopy(module)
    for node in module.graph.nodes:
        if _training(node):
            node.update_arg(_TRAINING_ARG[node.target], False)
    module.recompile()
    return module


def _training(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a batch norm or dropout call in training mode."""
    position = _TRAINING_ARG.get(node.target) if node.op == "call_function" else None
    return position is not None and len(node.args) > position and node.args[position] is True


def _drop_eval_dropouts(gm: torch.fx.GraphModule) -> None:
    """Remove eval-mode dropouts (``aten.dropout(x, p, train=False)``, in place or not: identities torch.export
    keeps). Left in, one sits between two int8 edges of the same value; when that value is also a graph output
    (the SSM classifier's running mean) the LiteRT converter finds two quantizations of one tensor and fails
    ("type of return operand … doesn't match function result type"); an in-place one took its own scale."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in _DROPOUTS and node.args[2] is False:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()


@torch.no_grad()
def prepare_quant(source: ModelSource, spec: QuantSpec, samples: Iterable[tuple[torch.Tensor, ...]],
                  description: str = "") -> PreparedQuant:
    """Export, insert observers for ``spec`` and run every calibration sample through them."""
    graph = checked_graph(source, spec)
    quantizer = make_quantizer(spec)
    with quiet():  # torchao logs at import (optional CUDA kernels it cannot load here)
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        prepared = prepare_pt2e(graph, quantizer)
    prepared(*source.example_inputs)  # per-channel weight observers need one run even without calibration
    for sample in samples:
        prepared(*sample)
    return PreparedQuant(spec, prepared, quantizer, tuple(source.example_inputs), description)


def checked_graph(source: ModelSource, spec: QuantSpec) -> torch.fx.GraphModule:
    """The export graph for ``spec``, after checking that PT2E handles its scheme and its float layers exist."""
    if spec.scheme not in PT2E_SCHEMES:
        raise EdgekitError(f"quantization {spec.tag} does not use calibration; PT2E handles: "
                           f"{', '.join(s.value for s in PT2E_SCHEMES)}")
    graph = export_graph(source)
    unknown = sorted(set(spec.float_layers) - set(layer_nodes(graph)))
    if unknown:
        raise EdgekitError(f"float layer {unknown[0]!r} is not a conv/linear layer of the model; "
                           f"layers: {', '.join(layer_nodes(graph))}")
    return graph


Progress = Callable[[str], None]
# (source, spec, samples, description, progress) → the calibrated graph; spec.calib_method names the calibrator
Calibrator = Callable[[ModelSource, QuantSpec, Sequence[Sample], str, Progress], QuantGraph]
CALIBRATORS: Registry[Calibrator] = Registry("calibration method")


@CALIBRATORS.register("histogram")
@CALIBRATORS.register("minmax")
def observe(source: ModelSource, spec: QuantSpec, samples: Sequence[Sample], description: str = "",
            progress: Progress = lambda _: None) -> PreparedQuant:
    """PT2E observers (``make_quantizer`` picks histogram or min/max from ``spec``)."""
    progress(f"calibrating ({spec.calib_method.value} observers) on {description or f'{len(samples)} samples'}")
    return prepare_quant(source, spec, samples, description)


def float_ops_left(gm: torch.fx.GraphModule) -> list[str]:
    """Conv/linear layers of a converted graph whose weights are not dequantized from int8."""
    left = []
    for name, node in layer_nodes(gm).items():
        weight = node.args[1]
        if not (isinstance(weight, torch.fx.Node) and "dequantize" in str(weight.target)):
            left.append(name)
    return left
