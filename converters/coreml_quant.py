"""How the Core ML converter writes each QuantSpec scheme (registered per scheme, no if-chains).

fp32/fp16: plain conversion. int8 (W8A8): the shared PT2E graph (quantize folded) converts to
quantize/dequantize + constexpr int8 weights (iOS17). Weight-only int8 / int4 (per block, iOS18)
and n-bit palettization use ``coremltools.optimize.coreml`` on the converted ML program.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.converters.base import ModelSource
from edgekit.errors import EdgekitError, require
from edgekit.quant.spec import Granularity, QuantMethods, QuantSpec, Scheme

QUANT: QuantMethods = QuantMethods("coreml")  # scheme → fn(source, spec, prepared) returning an MLModel
_GRANULARITY = {Granularity.PER_TENSOR: "per_tensor", Granularity.PER_CHANNEL: "per_channel",
                Granularity.PER_BLOCK: "per_block"}


def convert_program(program, source: ModelSource, precision: str = "FLOAT32", target: str = "iOS16"):
    """ct.convert of a torch.export program to an ML Program with the model's input names and shapes."""
    ct = require("coremltools", "coreml")
    return ct.convert(
        program,
        inputs=[ct.TensorType(name=n, shape=tuple(x.shape), dtype=np.float32 if x.is_floating_point() else np.int32)
                for n, x in zip(source.input_names, source.example_inputs)],
        outputs=[ct.TensorType(name=n) for n in source.output_names],
        convert_to="mlprogram",
        compute_precision=getattr(ct.precision, precision),
        minimum_deployment_target=getattr(ct.target, target),
    )


@QUANT.register(Scheme.FP32)
def _fp32(source: ModelSource, spec: QuantSpec, prepared: Any):
    return convert_program(source.exported_program().run_decompositions({}), source, "FLOAT32")


@QUANT.register(Scheme.FP16)
def _fp16(source: ModelSource, spec: QuantSpec, prepared: Any):
    return convert_program(source.exported_program().run_decompositions({}), source, "FLOAT16")


@QUANT.register(Scheme.INT8_STATIC)
def _int8_static(source: ModelSource, spec: QuantSpec, prepared: Any):
    import torch

    if prepared is None:
        raise EdgekitError("coreml int8 export needs a calibrated graph (edgekit.quant.plan_quantization)")
    program = torch.export.export(prepared.converted(fold_quantize=True), source.example_inputs)
    return convert_program(program.run_decompositions({}), source, "FLOAT32", "iOS17")


def _linear(source: ModelSource, spec: QuantSpec, dtype: str, target: str):
    cto = require("coremltools.optimize.coreml", "coreml")
    mlmodel = convert_program(source.exported_program().run_decompositions({}), source, "FLOAT16", target)
    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=dtype, granularity=_GRANULARITY[spec.granularity],
                                         block_size=spec.block_size, weight_threshold=0)
    return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=config))


@QUANT.register(Scheme.INT8_WEIGHT)
def _int8_weight(source: ModelSource, spec: QuantSpec, prepared: Any):
    return _linear(source, spec, "int8", "iOS16")


@QUANT.register(Scheme.INT4_WEIGHT)
def _int4_weight(source: ModelSource, spec: QuantSpec, prepared: Any):
    return _linear(source, spec, "int4", "iOS18")


@QUANT.register(Scheme.PALETTIZE)
def _palettize(source: ModelSource, spec: QuantSpec, prepared: Any):
    cto = require("coremltools.optimize.coreml", "coreml")
    mlmodel = convert_program(source.exported_program().run_decompositions({}), source, "FLOAT16", "iOS16")
    config = cto.OpPalettizerConfig(mode="kmeans", nbits=spec.bits, granularity="per_tensor", weight_threshold=0)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=config))
