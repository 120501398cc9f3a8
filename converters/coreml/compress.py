"""How the Core ML converter writes each QuantSpec scheme (registered per scheme, no if-chains).

fp32/fp16: plain conversion. Weight-only int8 / int4 (per block, iOS18) and n-bit palettization
compress the converted ML program's weights with ``coremltools.optimize.coreml`` (``POST_CONVERSION``).
int8 (W8A8): the shared PT2E graph (quantize folded) converts to quantize/dequantize + constexpr int8
weights (iOS17), fp16 in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Collection, NamedTuple

import numpy as np

from edgekit.converters.base import ModelSource
from edgekit.converters.coreml._compat import register_graph_pass
from edgekit.converters.coreml.rewrites import apply_rewrites
from edgekit.errors import EdgekitError, require
from edgekit.quant.spec import Granularity, QuantMethods, QuantSpec, Scheme

QUANT: QuantMethods = QuantMethods("coreml")  # scheme → fn(source, spec, prepared) returning a Converted
_GRANULARITY = {Granularity.PER_TENSOR: "per_tensor", Granularity.PER_CHANNEL: "per_channel",
                Granularity.PER_BLOCK: "per_block"}


class Converted(NamedTuple):
    """A converted ML program and what was rewritten in the torch program before (``rewrites.py``)."""

    mlmodel: Any
    rewrites: list[str]


def convert_program(program, source: ModelSource, precision: str = "FLOAT32", target: str = "iOS16",
                    pass_pipeline: Any = None, *, states: list | None = None) -> Converted:
    """ct.convert of a torch.export program (decomposed and rewritten here, ``rewrites.apply_rewrites``) to an
    ML Program with the model's input and output names and input shapes; integer inputs are int32, the only
    integer type Core ML inputs have (``states``: ``ct.StateType`` of buffers the program mutates, iOS 18+)."""
    ct = require("coremltools", "coreml")
    program, rewrites = apply_rewrites(program)
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name=n, shape=tuple(x.shape), dtype=np.float32 if x.is_floating_point() else np.int32)
                for n, x in zip(source.input_names, source.example_inputs)],
        outputs=[ct.TensorType(name=n) for n in source.output_names],
        convert_to="mlprogram",
        compute_precision=getattr(ct.precision, precision),
        minimum_deployment_target=getattr(ct.target, target),
        pass_pipeline=pass_pipeline or ct.PassPipeline.DEFAULT,
        states=states,
    )
    return Converted(mlmodel, rewrites)


def short_names_pipeline():
    """The default pass pipeline plus one that renames internal ops and values ``o12``/``v12``.

    A W8A8 program has a quantize/dequantize pair per activation, each op and value carrying a long
    PyTorch-derived name; on a small model those names are a tenth of the file. Inputs and outputs
    keep their names (apps address them), so nothing an app sees changes.
    """
    ct = require("coremltools", "coreml")
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.append_pass(register_graph_pass("short_internal_names", shorten_names))
    return pipeline


def shorten_names(prog: Any) -> None:
    """Rename every function's internal ops and values ``o12``/``v12``; inputs and outputs keep their names."""
    for function in prog.functions.values():
        _rename_block(function, {v.name for v in function.outputs} | set(function.inputs), [0])


def _rename_block(block: Any, keep: set[str], counter: list[int]) -> None:
    for op in block.operations:
        for inner in op.blocks:
            _rename_block(inner, keep, counter)
        op.name = f"o{counter[0]}"
        for value in op.outputs:
            if value.name not in keep:
                value.name = f"v{counter[0]}"
            counter[0] += 1


@dataclass(frozen=True)
class PostConversion:
    """A scheme applied to the converted ML program: the conversion's precision and oldest target,
    then (weight-only schemes) a compression of its weights by ``coremltools.optimize.coreml``."""

    precision: str
    target: str
    compress: Callable[[Any, QuantSpec, Collection[str]], Any] | None = None  # (mlmodel, spec, per-tensor names)


def _linear(dtype: str) -> Callable[[Any, QuantSpec, Collection[str]], Any]:
    def compress(mlmodel: Any, spec: QuantSpec, per_tensor: Collection[str]) -> Any:
        cto = require("coremltools.optimize.coreml", "coreml")
        config = partial(cto.OpLinearQuantizerConfig, mode="linear_symmetric", dtype=dtype, weight_threshold=0)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(
            global_config=config(granularity=_GRANULARITY[spec.granularity], block_size=spec.block_size),
            op_name_configs={name: config(granularity="per_tensor") for name in per_tensor}))

    return compress


def _palettize(mlmodel: Any, spec: QuantSpec, per_tensor: Collection[str]) -> Any:
    cto = require("coremltools.optimize.coreml", "coreml")  # one table per tensor already
    config = cto.OpPalettizerConfig(mode="kmeans", nbits=spec.bits, granularity="per_tensor", weight_threshold=0)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=config))


POST_CONVERSION: dict[Scheme, PostConversion] = {
    Scheme.FP32: PostConversion("FLOAT32", "iOS16"),
    Scheme.FP16: PostConversion("FLOAT16", "iOS16"),
    Scheme.INT8_WEIGHT: PostConversion("FLOAT16", "iOS16", _linear("int8")),
    Scheme.INT4_WEIGHT: PostConversion("FLOAT16", "iOS18", _linear("int4")),  # int4 and per-block scales: iOS 18 ops
    Scheme.PALETTIZE: PostConversion("FLOAT16", "iOS16", _palettize),
}


def convert_and_compress(source: ModelSource, spec: QuantSpec, *, target: str | None = None,
                         per_tensor: Callable[[Any], Collection[str]] | None = None) -> Converted:
    """Convert ``source`` and compress its weights as ``spec`` says (a scheme of ``POST_CONVERSION``).

    ``target`` raises the scheme's oldest Core ML target (never lowers it); ``per_tensor(mlmodel)``
    names the converted program's consts that get one scale for the whole tensor instead of the
    spec's granularity (linear schemes)."""
    how = POST_CONVERSION[spec.scheme]
    oldest = max(how.target, target or how.target, key=lambda t: int(t.removeprefix("iOS")))
    mlmodel, rewrites = convert_program(source.exported_program(), source, how.precision, oldest)
    if how.compress is not None:
        mlmodel = how.compress(mlmodel, spec, per_tensor(mlmodel) if per_tensor else ())
    return Converted(mlmodel, rewrites)


for _scheme in POST_CONVERSION:
    QUANT.register(_scheme)(lambda source, spec, prepared: convert_and_compress(source, spec))


@QUANT.register(Scheme.INT8_STATIC)
def _int8_static(source: ModelSource, spec: QuantSpec, prepared: Any) -> Converted:
    import torch

    if prepared is None:
        raise EdgekitError("coreml int8 export needs a calibrated graph (edgekit.quant.plan_quantization)")
    graph = _fold_scalar_dequantize(prepared.converted(fold_quantize=True))
    program = torch.export.export(graph, source.example_inputs)
    # fp16 between the int8 ops, as the Neural Engine computes anyway; halves biases and scales
    return convert_program(program, source, "FLOAT16", "iOS17", short_names_pipeline())


def _fold_scalar_dequantize(gm: Any) -> Any:
    """Replace ``dequantize(int8 0-dim constant)`` by its float value.

    coremltools 9 folds a constant scalar dequantize as ``scale * (q - zero_point)`` in int8, which
    wraps when the zero point is -128: every quantized scalar multiply (attention's 1/sqrt(d)) flipped
    sign and the int8 ViT scored ~10%. Folding it here in float sidesteps that bug."""
    import torch

    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    for node in list(gm.graph.nodes):
        if node.target is not dequantize or node.args[0].op != "get_attr":
            continue
        quantized = getattr(gm, node.args[0].target)
        if quantized.dim() != 0:
            continue
        name = f"{node.args[0].target}_dequantized"
        gm.register_buffer(name, dequantize(quantized, *node.args[1:]))
        with gm.graph.inserting_before(node):
            node.replace_all_uses_with(gm.graph.get_attr(name))
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm
