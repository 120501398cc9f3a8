"""What a converter converts and how an artifact is run: the contract shared by converters, quantization,
verification and benchmarks (below all of them, so none imports another for these types)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch


@dataclass
class ModelSource:
    """What a converter converts: an eval-mode module, example inputs and metadata."""

    name: str  # artifact base name
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    sha256: str  # of the source weights / program file
    origin: str  # path the model came from
    kind: str  # "checkpoint" or "pt2"
    labels: list[str] | None = None
    preprocessing: dict[str, Any] | None = None
    exported: torch.export.ExportedProgram | None = None  # given for .pt2 sources
    graph: str = ""  # which of the model's graphs this is ("" = its only one; "prefill_L256", "step")
    # real test inputs (N, ...) → this graph's batch-1 input tuples; None = one input per sample
    samples: Callable[[torch.Tensor], list[tuple[torch.Tensor, ...]]] | None = None
    labelled: bool = True  # whether sample i of ``samples`` still carries the split's label i
    lengths: tuple[int, ...] = ()  # static sequence lengths the graphs were built for (sequence models)
    states: tuple[str, ...] = ()  # buffers of ``module`` that persist across calls (a runtime's state object)
    usage: str = ""  # how an app calls this graph, when it is not the plain inputs → outputs
    # per input: the valid integer values [low, high) of an integer input (token ids: the embedding's rows;
    # masks: 0/1), None for a float input; () = unknown (integer inputs then take 0/1)
    input_ranges: tuple[tuple[int, int] | None, ...] = ()

    @property
    def artifact_base(self) -> str:
        """Base file name of this graph's artifacts: ``ssm_lm_prefill_L256`` or just ``cnn_digits``."""
        return f"{self.name}_{self.graph}" if self.graph else self.name

    def exported_program(self) -> torch.export.ExportedProgram:
        """The model as a torch.export program (exported once, reused by every converter)."""
        if self.exported is None:
            self.exported = torch.export.export(self.module, self.example_inputs)
        return self.exported


@dataclass
class NamedGraph:
    """One of several graphs written into one artifact (``Converter.export_many``): a TFLite signature,
    a Core ML function, an ONNX adapter; ``name`` is how an app selects it."""

    name: str
    source: ModelSource


class Runner(Protocol):
    """Runs an artifact on one sample: float32 arrays in input order → arrays in output order."""

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class RunnerUnavailable:
    """Why an artifact cannot be run on this machine (reported as "not run: <reason>")."""

    reason: str
