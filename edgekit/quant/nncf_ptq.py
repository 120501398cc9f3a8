"""NNCF's post-training algorithms as calibration methods of static int8: ``nncf`` (range estimators + fast bias
correction), ``nncf-smoothquant`` (+ SmoothQuant) and ``nncf-bias-correction`` (full, layer-wise bias correction).

NNCF (``nncf.experimental.torch.fx.quantize_pt2e``) runs on the same export graph with the same litert-torch
quantizer as the PT2E observers (``edgekit.quant.pt2e.make_quantizer``), so layers a QuantSpec keeps float stay
unannotated and float here too. It returns a converted graph (quantize/dequantize nodes) with the weight quantize
nodes left unfolded; each format takes its own copy (``NncfQuant.converted``): TFLite unfolded (litert-torch#752),
ONNX narrowed to ``weight_qmax`` and folded, Core ML folded. NNCF's progress bars and log lines are silenced; the
plan's ``progress`` callback gets one line per run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from types import TracebackType
from typing import Any, Iterator, Sequence

import torch

from edgekit.errors import EdgekitError, first_line, require
from edgekit.graph import ModelSource
from edgekit.quant.pt2e import (CALIBRATORS, Progress, Sample, checked_graph, layer_nodes, make_quantizer,
                                module_path, op_type)
from edgekit.quant.spec import CalibMethod, QuantSpec
from edgekit.quiet import quiet

# method → (what it does, quantize_pt2e's algorithm arguments)
ALGORITHMS: dict[CalibMethod, tuple[str, dict[str, Any]]] = {
    CalibMethod.NNCF: ("NNCF range estimators + fast bias correction", {"fast_bias_correction": True}),
    CalibMethod.NNCF_SMOOTHQUANT: ("NNCF SmoothQuant + range estimators + fast bias correction",
                                   {"fast_bias_correction": True, "smooth_quant": True}),
    CalibMethod.NNCF_BIAS_CORRECTION: ("NNCF range estimators + bias correction",
                                       {"fast_bias_correction": False}),
}


@dataclasses.dataclass
class NncfQuant:
    """A graph NNCF calibrated and converted (weight quantize nodes unfolded) beside its float reference."""

    spec: QuantSpec
    quantized: torch.fx.GraphModule  # quantize/dequantize nodes; weights still float before their quantize node
    reference: torch.fx.GraphModule  # the float export graph, BatchNorm folded as NNCF folds it
    quantizer: Any
    example_inputs: tuple[torch.Tensor, ...]
    calibration: str

    def converted(self, fold_quantize: bool, weight_qmax: int | None = None) -> torch.fx.GraphModule:
        """A copy; ``weight_qmax`` narrows symmetric weights to [-qmax, qmax] (scales widened to match, so no
        value clips: ONNX Runtime's ``reduce_range``), ``fold_quantize`` stores weights as int8 constants."""
        with quiet():  # torch's pytree warns about a deprecated spec class while copying
            graph = copy.deepcopy(self.quantized)
        if weight_qmax is not None:
            narrow_weights(graph, weight_qmax)
        if fold_quantize:
            from nncf.experimental.torch.fx.constant_folding import constant_fold

            constant_fold(graph, _is_quantize)
            graph.recompile()
        return graph

    def layers(self) -> list[str]:
        """The conv/linear layers (module names) of the graph, in order."""
        return list(layer_nodes(self.reference))

    def float_graph(self) -> torch.fx.GraphModule:
        """A fresh copy of the float reference graph."""
        with quiet():
            return copy.deepcopy(self.reference)


def _quant_ops() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(quantize, dequantize) targets of torchao's decomposed ops (registered when torchao is imported)."""
    with quiet():  # torchao logs at import
        import torchao.quantization.pt2e  # noqa: F401

    ops = torch.ops.quantized_decomposed
    return ((ops.quantize_per_tensor.default, ops.quantize_per_channel.default),
            (ops.dequantize_per_tensor.default, ops.dequantize_per_channel.default))


def _is_quantize(node: torch.fx.Node) -> bool:
    """What folding replaces by its int8 result: a quantize node (of a constant weight)."""
    return node.op == "call_function" and node.target in _quant_ops()[0]


def narrow_weights(gm: torch.fx.GraphModule, qmax: int) -> None:
    """Requantize every symmetric weight (a constant's quantize node with qmin = -qmax) to [-qmax, qmax]:
    scale × old qmax / qmax, the same bounds on the quantize node and its dequantize nodes."""
    quantize, dequantize = _quant_ops()
    for node in gm.graph.nodes:
        if not (node.op == "call_function" and node.target in quantize and node.args[0].op == "get_attr"):
            continue
        per_channel = node.target is quantize[1]
        low = 4 if per_channel else 3  # position of quant_min (quant_max follows)
        old_min, old_max = node.args[low], node.args[low + 1]
        if old_min != -old_max or old_max <= qmax:
            continue
        factor = old_max / qmax
        if per_channel:  # one scale tensor shared by the quantize and dequantize nodes
            scale = node.args[1]
            setattr(gm, scale.target, getattr(gm, scale.target) * factor)
        for user in [node, *(u for u in node.users if u.target in dequantize)]:
            args = list(user.args)
            if not per_channel:
                args[1] = float(args[1]) * factor
            args[low], args[low + 1] = -qmax, qmax
            user.args = tuple(args)
    gm.recompile()


def _algorithm_args(spec: QuantSpec) -> dict[str, Any]:
    """quantize_pt2e's arguments for ``spec``: its method's algorithms, histogram activation ranges
    (``_activation_ranges``), SmoothQuant's alpha when given (None keeps NNCF's default: 0.95 for linear layers,
    convolutions not smoothed, ``AdvancedSmoothQuantParameters``)."""
    args = dict(ALGORITHMS[spec.calib_method][1]) | _activation_ranges()
    if args.get("smooth_quant") and spec.smooth_quant_alpha is not None:
        from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

        args["smooth_quant_params"] = AdvancedSmoothQuantParameters(matmul=float(spec.smooth_quant_alpha))
    return args


def _activation_ranges() -> dict[str, Any]:
    """Per-tensor activation ranges from one histogram of every calibration sample (NNCF's ``HISTOGRAM`` set, its
    port of PT2E's HistogramObserver), not NNCF's default ``MEAN_MINMAX`` (the mean over samples of each sample's
    own min and max). Our samples are batch 1, and one sample of a step graph is one token: the mean of per-token
    extremes clipped every token above average (an RMS norm's rsqrt to a third of its range). Fake-quant vs fp32,
    logits SQNR, MEAN_MINMAX / MINMAX (global extremes) / HISTOGRAM: ssm_lm step 9.6 / 32.9 / 32.5 dB, ssm_lm
    prefill L=256 32.1 / 30.6 / 32.5 dB, vit_digits 20.9 / 36.5 / 37.0 dB, transformer_lm step 13.5 / 33.9 / 34.3 dB."""
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return {"activations_range_estimator_params": RangeEstimatorParametersSet.HISTOGRAM}


def _shape_scalar_constants(quantizer: Any) -> Any:
    """``quantizer`` with a ``transform_for_annotation`` that also records the value (``meta["val"]``) of the
    float scalar constants litert-torch turns into graph attributes (``x * 0.25`` → ``x * _tensor_constant_1``,
    created without one). NNCF copies an input's ``meta["val"]`` onto the quantize/dequantize nodes it inserts,
    and full bias correction rebuilds its graph from the quantized model, where a dequantize without a shape
    failed ("'NoneType' object is not iterable": every ViT's attention scale). Integer constants are left
    alone: ``_skip_non_float`` reads ``meta["val"]``, and their annotation is the same with every method."""
    transform = quantizer.transform_for_annotation

    def transform_for_annotation(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        model = transform(model)
        for node in model.graph.nodes:
            value = getattr(model, node.target, None) if node.op == "get_attr" else None
            if isinstance(value, torch.Tensor) and value.is_floating_point() and "val" not in node.meta:
                node.meta["val"] = value.detach()
        return model

    quantizer.transform_for_annotation = transform_for_annotation
    return quantizer


def _check_applies(graph: torch.fx.GraphModule, spec: QuantSpec) -> None:
    """SmoothQuant moves activation outliers into linear weights (NNCF's torch.fx backend smooths aten.linear only)."""
    if spec.calib_method is not CalibMethod.NNCF_SMOOTHQUANT:
        return
    layers = layer_nodes(graph)
    if not any(op_type(n) == "linear" and not spec.keeps_float(name, "linear") for name, n in layers.items()):
        kinds = sorted({op_type(n) for n in layers.values()}) or ["none"]
        raise EdgekitError(f"--calib-method nncf-smoothquant smooths linear (matmul) layers and this model has no "
                           f"quantized one (its layers: {', '.join(kinds)}); use --calib-method nncf")


@torch.no_grad()
def nncf_calibrate(source: ModelSource, spec: QuantSpec, samples: Sequence[Sample], description: str = "",
                   progress: Progress = lambda _: None) -> NncfQuant:
    """Calibrate and convert with NNCF's algorithms for ``spec.calib_method`` on ``samples`` (all of them)."""
    require("nncf", "quant")
    graph = checked_graph(source, spec)
    _check_applies(graph, spec)
    with quiet():
        from nncf import Dataset
        from nncf.experimental.torch.fx import quantize_pt2e
        from torchao.quantization.pt2e.utils import _fuse_conv_bn_

        reference = copy.deepcopy(graph)
    _fuse_conv_bn_(reference)  # what quantize_pt2e does first: layers compare with their folded float form
    quantizer = _shape_scalar_constants(make_quantizer(spec, fixed_qparams=False))
    what, method = ALGORITHMS[spec.calib_method][0], spec.calib_method.value
    data = list(samples) or [tuple(source.example_inputs)]
    progress(f"calibrating ({what}) on {description or f'{len(data)} samples'}")
    start = time.perf_counter()
    try:
        with quiet(), _nncf_silent(), _no_overflow_fix():
            quantized = quantize_pt2e(graph, quantizer, Dataset(data), subset_size=len(data), fold_quantize=False,
                                      **_algorithm_args(spec))
    except EdgekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - NNCF's failures become one line naming the op and the fallback
        raise EdgekitError(_failure_message(exc, method)) from exc
    progress(f"{method}: calibrated in {time.perf_counter() - start:.1f} s")
    return NncfQuant(spec, quantized, reference, quantizer, tuple(source.example_inputs), description)


for _method in ALGORITHMS:
    CALIBRATORS.register(_method.value)(nncf_calibrate)


@contextlib.contextmanager
def _nncf_silent() -> Iterator[None]:
    """NNCF's logger at ERROR (its "experimental feature" warning, statistics notes) while it runs."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _no_overflow_fix() -> Iterator[None]:
    """Full-range first-layer weights. NNCF's min/max step defaults to ``OverflowFix.FIRST_LAYER`` (the first
    layer's weights in 7 bits, for x86 CPUs without VNNI) and ``quantize_pt2e`` does not expose it: LiteRT and
    Core ML have no such overflow, and ONNX narrows every weight itself (``weight_qmax``). Measured on a small CNN:
    first-layer SQNR 35.5 dB with it, 40+ dB without."""
    from nncf.quantization.advanced_parameters import OverflowFix
    from nncf.quantization.algorithms.min_max import algorithm

    defaults = algorithm.MODE_BASED_DEFAULTS
    saved = defaults[None]
    defaults[None] = dataclasses.replace(saved, overflow_fix=OverflowFix.DISABLE)
    try:
        yield
    finally:
        defaults[None] = saved


def _failure_message(exc: BaseException, method: str) -> str:
    """One line: the method, the graph node NNCF was on (when a frame holds one), NNCF's reason, the fallback."""
    node = _failing_node(exc.__traceback__)
    where = f" at {node}" if node else ""
    return (f"--calib-method {method} failed{where}: {type(exc).__name__}: {first_line(exc, 160)}; "
            "--calib-method minmax (PT2E observers) quantizes without NNCF")


def _failing_node(tb: TracebackType | None) -> str:
    """The innermost graph node (torch.fx node or NNCF node) a frame of the traceback held, described; "" if none."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            found = _describe(value)
            if found:
                return found
    return ""


def _describe(value: Any) -> str:
    """``value`` as "node NAME (op TARGET, layer MODULE)" when it is a graph node (or an edge: its target node)."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, torch.fx.Node) for v in value):
        value = value[1]  # an edge (producer, consumer): the op that consumes it
    if isinstance(value, torch.fx.Node):
        layer = module_path(value)
        return f"node {value.name} ({value.target}" + (f", layer {layer})" if layer else ")")
    name = getattr(value, "node_name", None)
    if isinstance(name, str) and hasattr(value, "metatype"):  # an NNCFNode
        return f"node {name} ({getattr(value, 'node_type', '?')})"
    return ""
