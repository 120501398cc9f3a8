"""Exact rewrites of a graph before litert-torch converts it, each working around one converter limit.

``private_dequantize``: litert-torch 0.10's layout pass (``OptimizeLayoutTransposesPass.insert_t_q_dq``)
replaces the metadata of a dequantize node when it puts a transpose behind it for one user; a second
user of that node then finds no shape on it and the pass stops with ``AssertionError: Attempting to
convert non-NHWC compatible node to NHWC: dequantize_per_tensor_N``. torchao's ``convert_pt2e`` leaves a
dequantize shared when some of its users are not quantized (a float ``pad`` beside a quantized residual
``add``: transformers' MobileNetV2 with TF padding), so the static int8 graph of such a model could not
convert. Giving each user its own copy of the dequantize (what torchao does for quantized users) is exact.
"""

from __future__ import annotations

import torch

_STATIC_DEQUANTIZE = ("dequantize_per_tensor.default", "dequantize_per_channel.default")  # not dynamic (.tensor)


def private_dequantize(gm: torch.fx.GraphModule) -> list[str]:
    """Give every user of a shared static dequantize node its own copy (in place); what it did, one line."""
    copies = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not str(node.target).endswith(_STATIC_DEQUANTIZE):
            continue
        for user in list(node.users)[1:]:
            with gm.graph.inserting_after(node):
                copy = gm.graph.node_copy(node)
            user.replace_input_with(node, copy)
            copies += 1
    if not copies:
        return []
    gm.graph.lint()
    gm.recompile()
    copies_text = "1 copy" if copies == 1 else f"{copies} copies"
    return [f"shared dequantize → one per user ({copies_text}; litert-torch's layout pass loses a shared one)"]
