"""The exported graphs of a streaming sequence model (SSM now, Transformer later).

A streaming model has ``head`` (a SeqHead), ``state_names``, ``prefill(inputs)`` → (outputs, *states)
and ``step(x_t, *states)`` → (outputs, *new states), ``init_state(batch)``. From that this module
builds a ``prefill_L{L}`` graph per static length and one ``step`` graph, each with real test samples.

Step graph convention (what `edgekit generate` and apps rely on): inputs are (step input, *states),
outputs are (outputs, *new states) in the same state order; new states are named ``<state>_out``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekit.models.base import ExportGraph

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
