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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters._quiet import quiet
from edgekit.converters.coreml._compat import apply_graph_passes, block_context, fresh_pass, graph_pass, mil_program, pass_registry
from edgekit.converters.base import Runner, RunnerUnavailable, conversion_error
from edgekit.errors import EdgekitError, require
from edgekit.lora.pack_base import BASE, Packager, VariantGraph, Written, register_packager
from edgekit.quant.spec import QuantSpec, Scheme

NOT_ON_MACOS = "Core ML prediction needs macOS"
TARGET = "iOS18"  # multifunction models need iOS 18 / macOS 15, so every function may use its ops


@register_packager("coreml")
class CoreMLPackager(Packager):
    suffix = ".mlpackage"
    # weight-only schemes quantize each function before merging; W8A8 needs a calibration per variant
    schemes = ("fp32", "fp16", "int8-weight", "int4-weight", "palettize")

    def write(self, variants: list[VariantGraph], path: Path, spec: QuantSpec, metadata: dict[str, Any]) -> Written:
        ct = require("coremltools", "coreml")
        import json

        from edgekit.converters.coreml.compress import convert_and_compress

        # int8 only: int4 with one scale per tensor does not pass parity (see _AdapterWeights)
        adapter_weights = _AdapterWeights() if spec.scheme is Scheme.INT8_WEIGHT else None
        with tempfile.TemporaryDirectory(prefix="edgekit-mf-") as tmp:
            desc = ct.utils.MultiFunctionDescriptor()
            try:
                with quiet():
                    for v in sorted(variants, key=lambda v: v.name != BASE):  # the base first: see _AdapterWeights
                        single = Path(tmp) / f"{v.name}.mlpackage"
                        own = partial(adapter_weights.names, v.name) if adapter_weights else None
                        mlmodel = convert_and_compress(v.source, spec, target=TARGET, per_tensor=own)
                        compact(mlmodel).save(str(single))
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
        from edgekit.converters.coreml.mil_reference import MilEvaluator, load_program

        return MilEvaluator(load_program(path), variant).run_list


class _AdapterWeights:
    """Tells each adapter function's own weights (its LoRA factors) from the base's, by value: the
    base's weights are byte-identical in every function (that is what lets them be stored once).

    In int8-weight bundles the adapter's own weights get one scale per tensor: per output channel, a
    LoRA ``B`` (out × rank) carries as many fp16 scales as it has rows, each scale tensor its own blob
    in weight.bin. On the digits CNN (rank 8) that cut base + 2 adapters from 1.46× to 1.42× the base,
    every variant still within the int8 tolerance; int4 with one scale per tensor does not pass parity,
    so int4 keeps the spec's per-block scales."""

    def __init__(self) -> None:
        self.base: set[bytes] | None = None

    def names(self, variant: str, mlmodel: Any) -> list[str]:
        """The adapter's own weights in ``variant``'s converted program (none for the base, which comes first)."""
        weights = _float_weights(mlmodel)
        if variant == BASE:
            self.base = set(weights.values())
            return []
        return [name for name, value in weights.items() if value not in self.base] if self.base else []


def _float_weights(mlmodel: Any) -> dict[str, bytes]:
    """Name → bytes of every float const of two or more dimensions in the converted program."""
    return {op.name: op.outputs[0].val.tobytes() for op in mil_program(mlmodel).functions["main"].operations
            if op.op_type == "const" and isinstance(op.outputs[0].val, np.ndarray)
            and op.outputs[0].val.ndim >= 2 and op.outputs[0].val.dtype.kind == "f"}


def compact(mlmodel):
    """The same ML program with constants deduplicated (also strides, pads and the text constants the
    converter writes once per op, such as each conv's pad type) and short internal op/variable names
    (inputs and outputs keep theirs; the renaming is the converter's own, ``coreml_quant.shorten_names``)."""
    from edgekit.converters.coreml.compress import shorten_names

    def share_and_shorten(prog) -> None:
        for function in prog.functions.values():
            _share_text_consts(function)
        shorten_names(prog)

    dedup = fresh_pass("common::const_deduplication")
    dedup.const_threshold = 1  # also strides, pads, groups: tiny, but one const op each per conv
    passes = [dedup, pass_registry()["common::dead_code_elimination"], graph_pass(share_and_shorten)]
    return apply_graph_passes(mlmodel, passes)


def _share_text_consts(block) -> None:
    """One ``const`` per distinct string or bool value in ``block`` (coremltools' deduplication skips
    them); every later copy's uses move to the first."""
    @block_context
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
