"""What every edgekit model exposes: its config, its example inputs and its I/O names."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from edgekit.config import dataclass_from_dict
from edgekit.registry import Registry


class EdgeModel(nn.Module):
    """Base class of edgekit models. Subclasses set ``Config`` and implement ``forward``."""

    family_name: str = ""  # set by @register_family
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs of the right shape and dtype for tracing and export."""
        raise NotImplementedError

    def export_graphs(self, lengths: tuple[int, ...] = ()) -> list["ExportGraph"]:
        """The graphs this model ships. One by default (named ""); sequence models return a prefill
        graph per static length in ``lengths`` (or their config's default) plus a streaming ``step``."""
        return [ExportGraph("", self, self.example_inputs(), tuple(self.input_names), tuple(self.output_names),
                            samples=lambda inputs: [(x[None],) for x in inputs], labelled=True)]


@dataclasses.dataclass
class ExportGraph:
    """One exported graph of a model: its module, example inputs, I/O names, and real test samples."""

    name: str  # "" for a model's only graph; else added to artifact names ("prefill_L256", "step")
    module: nn.Module  # eval-mode module whose forward is exactly this graph
    example_inputs: tuple[torch.Tensor, ...]  # batch 1, static shapes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # a dataset split's inputs (N, ...) → batch-1 input tuples for this graph (verification, golden files)
    samples: Callable[[torch.Tensor], list[tuple[torch.Tensor, ...]]]
    labelled: bool = False  # True when sample i belongs to the split's label i (accuracy is meaningful)


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered model family: its config class and its constructor."""

    name: str
    config_cls: type
    build: Callable[[Any], EdgeModel]
    summary: str


FAMILIES: Registry[Family] = Registry("model family")


def register_family(name: str, config_cls: type, summary: str) -> Callable[[type], type]:
    """Class decorator: register a model class under ``name`` with its config dataclass."""

    def add(model_cls: type) -> type:
        model_cls.family_name = name
        FAMILIES.register(name)(Family(name, config_cls, model_cls, summary))
        return model_cls

    return add


def create_model(family: str, config: dict[str, Any] | None = None) -> EdgeModel:
    """Build a model of a registered family from a plain dict of config values."""
    fam = FAMILIES.get(family)
    cfg = dataclass_from_dict(fam.config_cls, config or {}, "model")
    return fam.build(cfg)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
