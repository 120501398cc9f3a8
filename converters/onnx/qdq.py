"""QDQ form of an int8 ONNX graph for ONNX Runtime's CPU kernels."""

from __future__ import annotations

from typing import Any

import numpy as np


def activations_to_uint8(model: Any) -> int:
    """Store every per-tensor int8 activation QuantizeLinear/DequantizeLinear as uint8 with its zero point + 128
    (the same real values, scales and clipping range); per-channel int8 weights stay int8. Returns the number of
    nodes changed.

    ONNX Runtime's x86 int8 kernels take uint8 activations (U8S8). It converts an int8 Q→DQ pair to uint8 at
    load only where the QuantizeLinear feeds a single DequantizeLinear; at a residual junction (the tensor feeds
    an add and the next conv) it does not, and the conv or add around it then runs in float between a
    dequantize and a quantize. Measured on MobileNetV2-224 (benchmarks/int8_speed.py): 10 of 52 convs and 9 of
    10 adds stayed float with int8 activations; with uint8 all 52 are QLinearConv and all 10 QLinearAdd."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    made: set[str] = set()
    retyped: set[str] = set()
    changed = 0
    for node in graph.node:  # topological order: a QuantizeLinear comes before the DequantizeLinears it feeds
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] not in retyped:
            continue  # int8 data that is not ours to retype: a weight initializer (e.g. a per-tensor norm weight)
        zero = inits.get(node.input[2])
        value = numpy_helper.to_array(zero) if zero is not None else None
        if value is None or value.dtype != np.int8 or value.ndim != 0:
            continue
        name = f"{node.input[2]}_uint8"
        if name not in made:
            graph.initializer.append(numpy_helper.from_array(np.array(int(value) + 128, dtype=np.uint8), name))
            made.add(name)
        node.input[2] = name
        if node.op_type == "QuantizeLinear":
            retyped.add(node.output[0])
        changed += 1
    for info in [*graph.value_info, *graph.output]:
        if info.name in retyped:
            info.type.tensor_type.elem_type = TensorProto.UINT8
    return changed
