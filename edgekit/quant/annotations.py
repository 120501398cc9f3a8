"""How edgekit adjusts litert-torch's int8 annotation of a graph before calibration (PT2E observers or NNCF):
integer and bool edges are never quantized, 1-D convolutions and the ops of ``FLOAT_MODULES`` stay float, a
conv's output is quantized after its clamp, softplus gets its own input scale, RMS norms take a float input.
``ANNOTATION_PASSES`` run in order inside the quantizer's ``annotate``."""

from __future__ import annotations

from typing import Any

import torch

from edgekit.models.ssm import SelectiveScan

# modules whose ops stay float in static int8, found by the ``nn_module_stack`` of export graph nodes; the
# linear/conv layers around them stay int8
FLOAT_MODULES: dict[type, str] = {
    # The SSM's recurrence. Its state accumulates over the whole sequence with a range that differs per head
    # (slow heads hold large values, fast ones small): one int8 scale per tensor lost it. ssm_lm (d_model 128,
    # 2 layers; fake-quant graph vs fp32, 32 test windows): step ssm_state_out SNR 7.6 → 27.8 dB; prefill (SSD:
    # the elementwise decays and products between its float matmuls) ssm_state 12.2 → 15.5 dB. Its ops are
    # elementwise, next to the int8 in/out projections; the TFLite step then takes and returns ssm_state float32.
    SelectiveScan: "SSM state recurrence: per-head ranges, an accumulator fed back as the next step's input",
}


def _is_float(node: Any) -> bool:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return not isinstance(value, torch.Tensor) or value.dtype.is_floating_point


def _skip_non_float(model: torch.fx.GraphModule) -> None:
    """Drop quantization of integer and boolean edges (the SSM's causal masks feed a ``mul``): an int8
    observer cannot histogram a bool tensor, and there is nothing to quantize there."""
    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None:
            continue
        for arg in [a for a in annotation.input_qspec_map if not _is_float(a)]:
            annotation.input_qspec_map.pop(arg)
        if not _is_float(node):
            annotation.output_qspec = None


def _keep_conv1d_float(model: torch.fx.GraphModule) -> None:
    """Leave 1-D convolutions (the SSM's causal depthwise conv) in float. The LiteRT converter lowers a
    conv1d to reshape → conv2d → reshape and then refuses its int8 form ("'tfl.reshape' op quantization
    parameters violate the same scale constraint"); the conv is a few hundred MACs per step."""
    for node in model.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.conv1d.default:
            node.meta.pop("quantization_annotation", None)


_CONVS = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default)
_CLAMPS = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default, torch.ops.aten.relu6.default)  # ReLU6


def _fuse_clamps(model: torch.fx.GraphModule) -> None:
    """Quantize a conv's output after its clamp (ReLU6: MobileNets), as litert-torch does for ReLU: the int8
    grid then spans only what the clamp lets through instead of the conv's whole pre-activation range, and
    runtimes fuse the clamp into the conv (LiteRT: CONV_2D with a fused RELU6). Measured on a trained
    MobileNetV2 (transformers): output SQNR 26.5 → 28.8 dB, fake-quant top-1 agreement 96.9% → 100% (32 inputs)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in model.graph.nodes:
        conv = node.args[0] if node.op == "call_function" and node.target in _CLAMPS else None
        if not (isinstance(conv, torch.fx.Node) and conv.target in _CONVS and len(conv.users) == 1):
            continue
        produced = conv.meta.get("quantization_annotation")
        if produced is None or produced.output_qspec is None:
            continue
        node.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=produced.output_qspec,
                                                                      _annotated=True)
        produced.output_qspec = None


def _act_qspec(model: torch.fx.GraphModule) -> Any:
    """The activation spec litert's quantizer gave this graph (the output spec of its first annotated linear,
    conv, add or mul), or None when it annotated none."""
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        spec = annotation.output_qspec if annotation is not None else None
        if isinstance(spec, QuantizationSpec) and spec.qscheme == torch.per_tensor_affine and not spec.is_dynamic:
            return spec
    return None


def _quantized_by_a_user(node: torch.fx.Node) -> bool:
    """Whether some user of ``node`` quantizes it (takes it as an int8 input edge)."""
    return any(node in getattr(user.meta.get("quantization_annotation"), "input_qspec_map", {}) for user in node.users)


def _quantize_softplus_input(model: torch.fx.GraphModule) -> None:
    """Give softplus's input its own int8 observer. The LiteRT converter decomposes softplus into
    ``select(x > 20, x, log1p(exp(x)))`` and, SELECT being a same-scale op, pulls the softplus output's scale
    back onto ``x``: the SSM's Δ pre-activation (about [-9, -1]) was quantized with the scale of Δ (about
    [0, 0.35]), clamped to 0, and every Δ became softplus(0) = 0.69 (ssm_motion step: ssm_state_out SNR
    -7 dB). With its own scale on ``x`` the converter keeps the decomposition in float between them. Only where
    a user quantizes the softplus output (a float consumer pulls no scale back)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    act = _act_qspec(model)
    for node in model.graph.nodes:
        if act is None or node.op != "call_function" or node.target is not torch.ops.aten.softplus.default:
            continue
        x = node.args[0]
        if not (isinstance(x, torch.fx.Node) and _is_float(x) and _quantized_by_a_user(node)):
            continue
        if "quantization_annotation" not in node.meta:
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: act}, output_qspec=act, _annotated=True)


def _module_types(node: torch.fx.Node) -> set[str]:
    """Qualified class names of the modules a graph node was traced inside."""
    return {str(entry[1]) for entry in (node.meta.get("nn_module_stack") or {}).values()}


def _keep_float_modules(model: torch.fx.GraphModule) -> None:
    """Leave every op traced inside a module of ``FLOAT_MODULES`` unannotated (float), with its input edges."""
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in FLOAT_MODULES}
    for node in model.graph.nodes:
        if node.op == "call_function" and _module_types(node) & names:
            node.meta.pop("quantization_annotation", None)


_NORMS = (torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit_no_training.default)


def _int8_output(node: Any) -> Any:
    """The quantization spec of ``node``'s output (seen through an eval batch norm, which PT2E folds into the
    conv before it), or None where the output stays float."""
    if isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in _NORMS:
        node = node.args[0]
    annotation = node.meta.get("quantization_annotation") if isinstance(node, torch.fx.Node) else None
    return annotation.output_qspec if annotation is not None else None


def _quantize_residual_adds(model: torch.fx.GraphModule) -> None:
    """Run an add of two int8 tensors (a MobileNetV2 / ResNet residual) in int8, its
    output quantized. litert-torch's ``add`` annotator finds adds by ``source_fn_stack``, which torch 2.13's
    export no longer records, so every residual add stayed float (dequantize → add → quantize); in ONNX
    Runtime a float add feeding the next block's add kept 9 of MobileNetV2's 10 adds out of QLinearAdd.
    Adds with a float input (a Transformer's residual after a float norm) are left alone."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in model.graph.nodes:  # in order: an add annotated here makes the next add of a chain int8 too
        if node.op != "call_function" or node.target is not torch.ops.aten.add.Tensor or len(node.args) != 2:
            continue
        if node.meta.get("quantization_annotation") is not None or not all(_is_float(a) for a in node.args):
            continue
        specs = [_int8_output(a) for a in node.args]
        if any(spec is None for spec in specs):
            continue
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=dict(zip(node.args, specs)), output_qspec=specs[0], _annotated=True)


def _rms_input(node: torch.fx.Node) -> torch.fx.Node | None:
    """``x`` when ``node`` is the ``x * rsqrt(mean(x²) + eps)`` of an RMS norm (ours, Llama's, Mamba's), else None."""
    if node.op != "call_function" or node.target is not torch.ops.aten.mul.Tensor or len(node.args) != 2:
        return None
    for x, r in (node.args, node.args[::-1]):
        if not (isinstance(r, torch.fx.Node) and r.target is torch.ops.aten.rsqrt.default):
            continue
        upstream, frontier = set(), [r]
        for _ in range(4):  # rsqrt ← add eps ← mean ← pow / mul: x is one of the few nodes above
            frontier = [a for f in frontier for a in f.args if isinstance(a, torch.fx.Node)]
            upstream.update(frontier)
        if x in upstream:
            return x
    return None


def _keep_norm_inputs_float(model: torch.fx.GraphModule) -> None:
    """Feed RMS norms their input in float; the normalized output is quantized as before. A sequence's tokens
    differ in RMS, so one int8 grid for the whole (L, D) input leaves the quiet tokens few levels, and the norm
    scales their error back up to full size. The producer's output then stays float too, unless another user
    quantizes it. ssm_lm prefill L=256 (Mamba-2's gated norm, ``out_norm(y * silu(z))``; fake-quant graph vs
    fp32, 32 test windows): logits SNR 23.6 → 28.4 dB, ssm_state 15.5 → 27.1 dB, next-byte top-1 90% → 94%."""
    for node in model.graph.nodes:
        x = _rms_input(node)
        annotation = node.meta.get("quantization_annotation")
        if x is None or annotation is None or x not in annotation.input_qspec_map:
            continue
        annotation.input_qspec_map.pop(x)
        produced = x.meta.get("quantization_annotation")
        if produced is not None and not _quantized_by_a_user(x):
            produced.output_qspec = None


# what edgekit adjusts in litert-torch's annotation, in order
ANNOTATION_PASSES = (_skip_non_float, _keep_conv1d_float, _keep_float_modules, _fuse_clamps, _quantize_softplus_input,
                     _quantize_residual_adds, _keep_norm_inputs_float)
