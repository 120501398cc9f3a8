"""How edgekit adjusts litert-torch's int8 annotation of a graph before calibration (PT2E observers or NNCF):
integer and bool edges are never quantized, 1-D convolutions stay float, a conv's output is quantized after
its clamp. ``ANNOTATION_PASSES`` run in order inside the quantizer's ``annotate``."""

from __future__ import annotations

from typing import Any

import torch


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


# what edgekit adjusts in litert-torch's annotation, in order
ANNOTATION_PASSES = (_skip_non_float, _keep_conv1d_float, _fuse_clamps)
