"""Weight-only quantization of a written ``.tflite`` with ai-edge-quantizer (LiteRT's own tool).

Weights of every supported op (convolutions, fully connected, …) become int8 or int4 per output
channel, with an explicit DEQUANTIZE before the op: float compute, a file about 4× (int8) or 8× (int4)
smaller. Constants that several signatures share (a multi-adapter base) are quantized once and stay
shared.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.converters.tflite.flatbuffer import pack_model
from edgekit.errors import require
from edgekit.quant.spec import QuantSpec, Scheme
from edgekit.registry import Registry

# scheme → ai_edge_quantizer.recipe function name
RECIPES: Registry[str] = Registry("tflite weight-only recipe")
RECIPES.register(Scheme.INT8_WEIGHT.value)("weight_only_wi8_afp32")
RECIPES.register(Scheme.INT4_WEIGHT.value)("weight_only_wi4_afp32")

_SUBGRAPH_MARK = "@sg"  # appended to tensor names while quantizing (the quantizer wants model-wide unique names)


def quantize_weights(path: Path, spec: QuantSpec) -> None:
    """Rewrite the ``.tflite`` at ``path`` with its weights quantized as ``spec`` says (in place)."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    quantizer_mod = require("ai_edge_quantizer.quantizer", "tflite")
    recipe_mod = require("ai_edge_quantizer.recipe", "tflite")
    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    _mark_subgraphs(model)
    quantizer = quantizer_mod.Quantizer(pack_model(model, path.stat().st_size),
                                        getattr(recipe_mod, RECIPES.get(spec.scheme.value))())
    quantized = quantizer.quantize(enable_progress_report=False).quantized_model
    model = schema.ModelT.InitFromPackedBuf(bytearray(quantized), 0)
    _inline_buffers(model, quantized)
    _unmark_subgraphs(model)
    path.write_bytes(pack_model(model, len(quantized)))


def _inline_buffers(model, file: bytes) -> None:
    """Move constant data the quantizer appended after the flatbuffer (``Buffer.offset``/``size``, as
    it writes models past ~1 MB) back inside it, where the rest of edgekit reads it."""
    import numpy as np

    for buffer in model.buffers or []:
        if (buffer.offset or 0) > 1:
            buffer.data = np.frombuffer(file, np.uint8, count=buffer.size, offset=buffer.offset).copy()
            buffer.offset = buffer.size = 0


def _mark_subgraphs(model) -> None:
    """Make tensor names unique across subgraphs: every signature names its inputs ``args_0``."""
    for index, subgraph in enumerate(model.subgraphs[1:], start=1):
        for tensor in subgraph.tensors:
            tensor.name = (tensor.name or b"") + f"{_SUBGRAPH_MARK}{index}".encode()


def _unmark_subgraphs(model) -> None:
    for index, subgraph in enumerate(model.subgraphs[1:], start=1):
        mark = f"{_SUBGRAPH_MARK}{index}".encode()
        for tensor in subgraph.tensors:
            tensor.name = (tensor.name or b"").replace(mark, b"")
