"""Core ML with several named graphs (``CoreMLConverter.export_many``): one multifunction .mlpackage, one
function per graph (``MultiFunctionDescriptor`` + ``save_multifunction``), which stores identical weights once.

Each graph is converted (and quantized, for weight-only schemes) on its own first: coremltools
refuses to quantize a multifunction model. Each function's program is then compacted: small
constants (strides, pads) deduplicated and internal names shortened (``o12``/``v12``; the model's
inputs and outputs keep theirs). On a small CNN the program text is a large part of what each
extra function costs: ~25 kB per adapter function before, ~14 kB after, beside ~28 kB of fp16 LoRA weights.
The first graph (for base + adapters: the base) is the default function. Apps pick a graph with
``MLModelConfiguration.functionName = name``. On Linux every function is verified with edgekit's
MIL reference evaluator (Core ML itself predicts only on macOS).
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.base import Written
from edgekit.converters.coreml._compat import apply_graph_passes, block_context, const_dedup_threshold, graph_pass, mil_program, pass_registry
from edgekit.converters.coreml.compress import convert_and_compress, shorten_names
from edgekit.errors import require
from edgekit.graph import NamedGraph
from edgekit.quant.spec import QuantSpec, Scheme
from edgekit.quiet import quiet

TARGET = "iOS18"  # multifunction models need iOS 18 / macOS 15, so every function may use its ops


def write_multifunction(graphs: list[NamedGraph], path: Path, spec: QuantSpec, metadata: dict[str, Any]) -> Written:
    """Convert each graph on its own, merge them as functions of one .mlpackage at ``path`` (the first
    graph is the default function) and embed ``metadata``."""
    ct = require("coremltools", "coreml")
    # int8 only: int4 with one scale per tensor does not pass parity (see _AdapterWeights)
    adapter_weights = _AdapterWeights() if spec.scheme is Scheme.INT8_WEIGHT else None
    with tempfile.TemporaryDirectory(prefix="edgekit-mf-") as tmp:
        desc = ct.utils.MultiFunctionDescriptor()
        with quiet():
            for g in graphs:  # the first graph first: see _AdapterWeights
                single = Path(tmp) / f"{g.name}.mlpackage"
                own = partial(adapter_weights.names, g.name) if adapter_weights else None
                mlmodel, _ = convert_and_compress(g.source, spec, target=TARGET, per_tensor=own)
                compact(mlmodel).save(str(single))
                desc.add_function(str(single), src_function_name="main", target_function_name=g.name)
            desc.default_function_name = graphs[0].name
            merged = Path(tmp) / "merged.mlpackage"
            ct.utils.save_multifunction(desc, str(merged))
            mlmodel = ct.models.MLModel(str(merged), skip_model_load=True)
            mlmodel.short_description = metadata.get("description", "")
            mlmodel.author = "edgekit"
            mlmodel.user_defined_metadata["edgekit"] = json.dumps(metadata)
            mlmodel.save(str(path))
    return Written({g.name: {"function": g.name} for g in graphs})


class _AdapterWeights:
    """Tells each later function's own weights (an adapter's LoRA factors) from the first function's (the
    base's), by value: the base's weights are byte-identical in every function (that is what lets them
    be stored once).

    In int8-weight bundles the adapter's own weights get one scale per tensor: per output channel, a
    LoRA ``B`` (out × rank) carries as many fp16 scales as it has rows, each scale tensor its own blob
    in weight.bin. On the digits CNN (rank 8) that cut base + 2 adapters from 1.46× to 1.42× the base,
    every variant still within the int8 tolerance; int4 with one scale per tensor does not pass parity,
    so int4 keeps the spec's per-block scales."""

    def __init__(self) -> None:
        self.base: set[bytes] | None = None

    def names(self, variant: str, mlmodel: Any) -> list[str]:
        """The own weights in ``variant``'s converted program (none for the first function, the base)."""
        weights = _float_weights(mlmodel)
        if self.base is None:
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
    (inputs and outputs keep theirs; the renaming is the converter's own, ``compress.shorten_names``)."""
    def share_and_shorten(prog) -> None:
        for function in prog.functions.values():
            _share_text_consts(function)
        shorten_names(prog)

    with const_dedup_threshold(1) as dedup:  # also strides, pads, groups: tiny, but one const op each per conv
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
