"""Core ML: one multifunction .mlpackage, one function per variant (``MultiFunctionDescriptor`` +
``save_multifunction``), which stores identical weights once.

Each variant is converted (and quantized, for weight-only schemes) on its own first: coremltools
refuses to quantize a multifunction model. Each function's program is then compacted: small
constants (strides, pads) deduplicated and internal names shortened (``o12``/``v12``; the model's
inputs and outputs keep theirs). On a small CNN the program text is a large part of what each
extra function costs: ~25 kB per adapter function before, ~14 kB after, beside ~28 kB of fp16 LoRA weights.
Apps pick a variant with ``MLModelConfiguration.functionName = name``. On Linux every function is verified with edgekit's
MIL reference evaluator (Core ML itself predicts only on macOS).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters._quiet import quiet
from edgekit.converters.base import Runner, RunnerUnavailable, conversion_error
from edgekit.errors import EdgekitError, require
from edgekit.lora.pack_base import BASE, Packager, VariantGraph, Written, register_packager
from edgekit.quant.spec import QuantSpec

NOT_ON_MACOS = "Core ML prediction needs macOS"


@register_packager("coreml")
class CoreMLPackager(Packager):
    suffix = ".mlpackage"
    # weight-only schemes quantize each function before merging; W8A8 needs a calibration per variant
    schemes = ("fp32", "fp16", "int8-weight", "int4-weight", "palettize")

    def write(self, variants: list[VariantGraph], path: Path, spec: QuantSpec, metadata: dict[str, Any]) -> Written:
        ct = require("coremltools", "coreml")
        import json

        from edgekit.converters.coreml_quant import QUANT

        write = QUANT.get(spec)
        with tempfile.TemporaryDirectory(prefix="edgekit-mf-") as tmp:
            desc = ct.utils.MultiFunctionDescriptor()
            try:
                with quiet():
                    for v in variants:
                        single = Path(tmp) / f"{v.name}.mlpackage"
                        compact(write(v.source, spec, None)).save(str(single))
                        desc.add_function(str(single), src_function_name="main", target_function_name=v.name)
                    desc.default_function_name = BASE if any(v.name == BASE for v in variants) else variants[0].name
                    merged = Path(tmp) / "merged.mlpackage"
                    ct.utils.save_multifunction(desc, str(merged))
            except EdgekitError:
                raise
            except Exception as exc:
                raise conversion_error(self.name, exc) from exc
            with quiet():
                mlmodel = ct.models.MLModel(str(merged), skip_model_load=True)
                mlmodel.short_description = metadata.get("description", "")
                mlmodel.author = "edgekit"
                mlmodel.user_defined_metadata["edgekit"] = json.dumps(metadata)
                mlmodel.save(str(path))
        return Written({v.name: {"function": v.name} for v in variants})

    def runner(self, path: Path, variant: str, threads: int) -> Runner | RunnerUnavailable:
        if sys.platform != "darwin":
            return RunnerUnavailable(NOT_ON_MACOS)
        ct = require("coremltools", "coreml")
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY, function_name=variant)
        desc = model.get_spec().description
        in_names, out_names = [f.name for f in desc.input], [f.name for f in desc.output]

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            result = model.predict(dict(zip(in_names, inputs)))
            return [np.asarray(result[n]) for n in out_names]

        return run

    def reference_runner(self, path: Path, variant: str) -> Runner | None:
        """The variant's function of the saved ML program, evaluated op by op in NumPy."""
        from edgekit.converters.coreml_mil import MilEvaluator, load_program

        return MilEvaluator(load_program(path), variant).run_list


def compact(mlmodel):
    """The same ML program with constants deduplicated (also strides, pads and the text constants the
    converter writes once per op, such as each conv's pad type) and short internal op/variable names
    (inputs and outputs keep theirs; the renaming is the converter's own, ``coreml_quant.shorten_names``)."""
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models.utils import _apply_graph_pass

    from edgekit.converters.coreml_quant import shorten_names

    class _Compact(AbstractGraphPass):
        def apply(self, prog) -> None:
            for function in prog.functions.values():
                _share_text_consts(function)
            shorten_names(prog)

    dedup = type(PASS_REGISTRY["common::const_deduplication"])()  # a private instance: the registry's is shared
    dedup.const_threshold = 1  # also strides, pads, groups: tiny, but one const op each per conv
    passes = [dedup, PASS_REGISTRY["common::dead_code_elimination"], _Compact()]
    return _apply_graph_pass(mlmodel, passes, skip_model_load=True)


def _share_text_consts(block) -> None:
    """One ``const`` per distinct string or bool value in ``block`` (coremltools' deduplication skips
    them); every later copy's uses move to the first."""
    from coremltools.converters.mil.mil.passes.helper import block_context_manager

    @block_context_manager
    def share(block) -> None:
        first = {}
        for op in list(block.operations):
            for inner in op.blocks:
                share(inner)
            value = op.outputs[0].val if op.op_type == "const" else None
            if not isinstance(value, (str, bool, np.str_, np.bool_)) or op.outputs[0] in block.outputs:
                continue
            key = (type(value), value)
            if key not in first:
                first[key] = op.outputs[0]
                continue
            block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=first[key])
            block.remove_ops([op])

    share(block)
