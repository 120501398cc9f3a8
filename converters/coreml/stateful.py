"""Core ML's stateful step graph (iOS 18 ``ct.StateType``): the model keeps its streaming states.

A sequence model's ``step`` graph takes and returns every state. Core ML (iOS 18 / macOS 15) can hold
them inside the model instead: the app makes an ``MLState`` once (``model.makeState()``, zero-filled)
and passes it to each ``prediction(from:using:)``; the states never cross the API. This module offers
that variant of the ``step`` graph as ``<model>_step_stateful_fp16.mlpackage``:

- ``StatefulStepGraph`` (edgekit.models.seq_graphs) holds the states as buffers and overwrites each
  whole with ``copy_``; torch.export turns that into buffer mutations, which ``ct.convert`` maps to
  states (``read_state`` … ``coreml_update_state``).
- Core ML states are fp16 only (coremltools rejects others), so the artifact is fp16 and only float
  states are held: an integer state (the Transformer's int32 ``position``) stays an explicit input
  and output.
- It is verified by the MIL reference evaluator over consecutive real steps from zero states, one
  ``MilState`` carried through, against PyTorch's ``step`` with explicit states.

Why torch.export and not ``torch.jit.trace``: the traced frontend of coremltools 9 rejects a whole-
buffer ``copy_`` ("No matching select or slice", apple/coremltools#2272) and slice assignment is the
known-broken case; the export frontend converts it. Its ``canonicalize_inplace_pattern`` pass crashes
(KeyError) when two state updates follow each other, since it indexes a stale op list; an edgekit pass
does the same reordering on the live list.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from edgekit.converters.base import ExtraGraph, ModelSource
from edgekit.converters.coreml._compat import register_fixed_state_canonicalization
from edgekit.converters.coreml.compress import Converted, convert_program
from edgekit.errors import require
from edgekit.models.seq_graphs import StatefulStepGraph, stream_reference
from edgekit.quant.spec import QuantSpec

GRAPH = "step_stateful"
PRECISION = "fp16"  # Core ML states are fp16 only
TARGET = "iOS18"  # first Core ML with states
STREAM_STEPS = 64  # consecutive real steps verified (fewer when the prefill windows are shorter)
STATE_DTYPE = np.float16
_CANONICAL = "common::canonicalize_inplace_pattern"


def held_states(model: Any) -> tuple[str, ...]:
    """The states Core ML can hold: floating-point ones (integer states stay explicit inputs)."""
    return tuple(n for n, s in zip(model.state_names, model.init_state(1)) if s.is_floating_point())


def stateful_graphs(graphs: list[tuple[ModelSource, Any]], precision: QuantSpec) -> list[ExtraGraph]:
    """The stateful variant of each ``step`` graph with real consecutive inputs; none for quantized runs."""
    if precision.quantizes:
        return []
    prefills = [(src, ref) for src, ref in graphs if src.graph.startswith("prefill") and len(ref)]
    extras = []
    for source, _ in graphs:
        model = getattr(source.module, "model", None)
        if source.graph != "step" or not getattr(model, "state_names", None) or not prefills:
            continue
        if not held_states(model):  # nothing Core ML could hold
            continue
        extras.append(_extra_graph(source, model, *prefills[0]))
    return extras


def _extra_graph(source: ModelSource, model: Any, prefill: ModelSource, windows: Any) -> ExtraGraph:
    """The stateful source, verified on the first real window of a prefill graph's reference data."""
    held = held_states(model)
    module = StatefulStepGraph(model, held).eval()
    explicit = module.explicit
    x_t, *states = source.example_inputs
    window = torch.from_numpy(windows.inputs[0][0])
    steps = min(STREAM_STEPS, window.shape[-1])
    split = windows.description.split(" → ")[0]
    reference = stream_reference(model, window, steps, held, f"{split} → first {prefill.graph} window, "
                                 f"{steps} consecutive steps from zero states ({steps})")
    names = dict(zip(model.state_names, states))
    stateful = dataclasses.replace(
        source, module=module, graph=GRAPH, exported=None, samples=None, labelled=False,
        example_inputs=(x_t, *(names[n] for n in explicit)),
        input_names=(source.input_names[0], *explicit),
        output_names=(source.output_names[0], *(f"{n}_out" for n in explicit)),
        states=held, usage=usage_text(held, explicit))
    return ExtraGraph(stateful, reference, PRECISION)


def usage_text(held: tuple[str, ...], explicit: tuple[str, ...]) -> str:
    """How an app streams with the stateful artifact (for the manifest)."""
    text = (f"iOS 18+/macOS 15+. The model holds {', '.join(held)} (fp16 Core ML states): "
            "let state = model.makeState() (zero-filled: an empty stream) once per stream, then "
            "model.prediction(from: input, using: state) per step; the states never cross the API.")
    if explicit:
        verb = "stays an explicit input" if len(explicit) == 1 else "stay explicit inputs"
        text += (f" {', '.join(explicit)} {verb} (Core ML states are fp16 only): pass zeros at the first "
                 "step, then the previous step's <name>_out.")
    return text


def convert_stateful(source: ModelSource) -> Converted:
    """ct.convert of the stateful step module: fp16 compute, fp16 states, iOS 18."""
    ct = require("coremltools", "coreml")
    program = torch.export.export(source.module, source.example_inputs)
    buffers = dict(source.module.named_buffers())
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=tuple(buffers[n].shape), dtype=STATE_DTYPE), name=n)
              for n in source.states]
    return convert_program(program, source, "FLOAT16", TARGET, state_pipeline(), states=states)


def state_pipeline() -> Any:
    """The default pass pipeline with coremltools' state-update reordering replaced by a fixed one."""
    ct = require("coremltools", "coreml")
    fixed = register_fixed_state_canonicalization("canonicalize_state_updates")
    pipeline = ct.PassPipeline.DEFAULT
    names = list(pipeline.passes)
    if _CANONICAL in names:
        pipeline.remove_passes([_CANONICAL])
        pipeline.insert_pass(names.index(_CANONICAL), fixed)
    return pipeline


def state_runner(evaluator: Any) -> Any:
    """A parity ``Runner`` over one stream: a fresh ``MilState`` carried from call to call."""
    state = evaluator.make_state()

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        return evaluator.run_list(inputs, state)

    return run
