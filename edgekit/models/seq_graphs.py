"""The exported graphs of a streaming sequence model (SSM now, Transformer later).

A streaming model has ``head`` (a SeqHead), ``state_names``, ``prefill(inputs)`` → (outputs, *states)
and ``step(x_t, *states)`` → (outputs, *new states), ``init_state(batch)``. From that this module
builds a ``prefill_L{L}`` graph per static length and one ``step`` graph, each with real test samples.

Step graph convention (what `edgekit generate` and apps rely on): inputs are (step input, *states),
outputs are (outputs, *new states) in the same state order; new states are named ``<state>_out``.

``StatefulStepGraph`` is the same step with some states held inside the module (buffers) instead:
for runtimes with state objects (Core ML's ``MLState``); ``stream_reference`` is what it must compute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.models.base import ExportGraph
from edgekit.verify.parity import ReferenceData

MAX_PREFILL_SAMPLES = 32  # real windows per prefill graph used to verify artifacts (unlabelled, e.g. LM)
MAX_LABELLED_SAMPLES = 400  # whole labelled test split up to this size (accuracy of each artifact)
MAX_STEP_SAMPLES = 32  # (state after a real prefix, next real input) pairs to verify the step graph


class PrefillGraph(nn.Module):
    """forward(inputs (1, …, L)) → (outputs, *states after step L)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.prefill(inputs)


class StepGraph(nn.Module):
    """forward(x_t, *states) → (outputs, *new states)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.step(x_t, *states)


class StatefulStepGraph(nn.Module):
    """forward(x_t, *explicit states) → (outputs, *new explicit states); the ``held`` states live in
    buffers (zeros at first) that each call overwrites whole (``copy_``, never a slice)."""

    def __init__(self, model: Any, held: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.held = tuple(held)
        for name, state in zip(model.state_names, model.init_state(1)):
            if name in self.held:
                self.register_buffer(name, torch.zeros_like(state))

    @property
    def explicit(self) -> tuple[str, ...]:
        """The states still passed in and returned (in ``state_names`` order)."""
        return tuple(n for n in self.model.state_names if n not in self.held)

    def forward(self, x_t: torch.Tensor, *explicit: torch.Tensor) -> tuple[torch.Tensor, ...]:
        given = dict(zip(self.explicit, explicit))
        states = [getattr(self, n) if n in self.held else given[n] for n in self.model.state_names]
        outputs, *new = self.model.step(x_t, *states)
        for name, value in zip(self.model.state_names, new):
            if name in self.held:
                getattr(self, name).copy_(value)
        return (outputs, *(v for n, v in zip(self.model.state_names, new) if n not in self.held))


@torch.no_grad()
def stream_reference(model: Any, window: torch.Tensor, steps: int, held: tuple[str, ...],
                     description: str) -> ReferenceData:
    """PyTorch's ``step`` with explicit states over the first ``steps`` inputs of ``window`` (1, …, L),
    from zero states: sample t is (x_t, *explicit states) → [outputs, *new explicit states], in order."""
    states = model.init_state(1)
    inputs, outputs = [], []
    for t in range(steps):
        x_t = model.head.step_slice(window, t)
        explicit = [s for n, s in zip(model.state_names, states) if n not in held]
        out, *states = model.step(x_t, *states)
        new = [s for n, s in zip(model.state_names, states) if n not in held]
        inputs.append(tuple(np.asarray(v.numpy()) for v in (x_t, *explicit)))
        outputs.append([np.asarray(v.numpy()) for v in (out, *new)])
    return ReferenceData(inputs, outputs, None, description)


def prefill_graph(model: Any, length: int) -> ExportGraph:
    """The whole-sequence graph at static ``length``; samples are real windows of that length."""
    head = model.head

    def samples(inputs: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        windows, labelled = head.windows(inputs, length)
        return [(w[None],) for w in windows[:MAX_LABELLED_SAMPLES if labelled else MAX_PREFILL_SAMPLES]]

    return ExportGraph(
        f"prefill_L{length}", PrefillGraph(model).eval(), (head.example_inputs(length),),
        (head.input_name,), (head.output_name, *model.state_names), samples, labelled=head.labelled_windows)


def step_graph(model: Any) -> ExportGraph:
    """The single-step graph; samples are the states after real prefixes and the next real input."""
    head = model.head

    @torch.no_grad()
    def samples(inputs: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        length = max(2, min(model.config.export_lengths))
        windows, _ = head.windows(inputs, length)
        out = []
        for i, w in enumerate(windows[:MAX_STEP_SAMPLES]):
            t = 1 + (i * 37) % (length - 1)  # prefix lengths spread over 1 … L-1
            _, *states = model.prefill(w[None, ..., :t])
            out.append((head.step_slice(w[None], t), *states))
        return out

    example = (head.step_example_input(), *model.init_state(1))
    return ExportGraph(
        "step", StepGraph(model).eval(), example, (head.input_name, *model.state_names),
        (head.output_name, *(f"{n}_out" for n in model.state_names)), samples)
