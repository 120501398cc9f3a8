"""The multi-adapter packager contract: one artifact holding the base and N adapter variants of one graph.

One packager per format, registered by name like the converters (``@register_packager("tflite")``):
it writes the artifact (plus side files such as ``.onnx_adapter``), says how an app selects each
variant, and gives a runner per variant so every variant is verified against PyTorch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgekit.converters.base import ModelSource, Runner, RunnerUnavailable
from edgekit.errors import EdgekitError
from edgekit.lora.adapter import Adapter
from edgekit.quant.spec import QuantSpec
from edgekit.registry import Registry
from edgekit.verify import ReferenceData

BASE = "base"  # the variant without an adapter


def golden_graph(variant: str, graph: str = "") -> str:
    """The ``write_golden`` graph key of a variant: the base keeps the graph's own golden file,
    an adapter gets ``golden_<adapter>[_<graph>].npz``."""
    return graph if variant == BASE else "_".join(filter(None, [variant, graph]))


@dataclass
class VariantGraph:
    """One variant (the base, or the base with one adapter) of one graph, in export form."""

    name: str  # BASE or the adapter's name: the TFLite signature / Core ML function name
    adapter: Adapter | None
    source: ModelSource  # export form: batch norm folded, lora_B pre-scaled, base tensors shared
    reference: ReferenceData | None = None  # the original (unfolded) PyTorch model's outputs on this variant's data


@dataclass
class Written:
    """What a packager wrote: how an app selects each variant, and files beside the artifact."""

    select: dict[str, dict[str, Any]]  # variant name → {"signature": …} / {"function": …} / {"adapter_file": …}
    side_files: list[Path] = field(default_factory=list)  # in the artifact's staging folder; moved with it


class Packager(abc.ABC):
    """Writes and runs the multi-variant artifact of one format."""

    name: str = ""  # the format (same name as its converter)
    suffix: str = ""
    schemes: tuple[str, ...] = ("fp32",)  # QuantSpec schemes it can package

    def check(self, spec: QuantSpec, variants: list[VariantGraph]) -> None:
        """Raise naming what is supported when this format cannot package ``variants`` at ``spec``."""
        if spec.scheme.value not in self.schemes:
            raise EdgekitError(f"multi-adapter {self.name} bundles support {', '.join(self.schemes)}, "
                               f"not {spec.tag}; merge one adapter with --adapter instead")

    @abc.abstractmethod
    def write(self, variants: list[VariantGraph], path: Path, spec: QuantSpec, metadata: dict[str, Any]) -> Written:
        """Write the artifact to ``path``; side files go into ``path.parent`` (a private staging folder)."""

    @abc.abstractmethod
    def runner(self, path: Path, variant: str, threads: int) -> Runner | RunnerUnavailable:
        """Run ``variant`` of the artifact at ``path`` (side files beside it) in its runtime."""

    def reference_runner(self, path: Path, variant: str) -> Runner | None:
        """A reference evaluation of one variant when the runtime cannot run here."""
        return None

    def switcher(self, path: Path, threads: int) -> Callable[[str, list], list] | RunnerUnavailable:
        """``run(variant, inputs)`` on one loaded artifact, for timing adapter switches."""
        runners = {}

        def run(variant: str, inputs: list) -> list:
            if variant not in runners:
                runners[variant] = self.runner(path, variant, threads)
            return runners[variant](inputs)

        return run


PACKAGERS: Registry[Packager] = Registry("multi-adapter format")


def register_packager(name: str) -> Callable[[type[Packager]], type[Packager]]:
    """Class decorator: ``@register_packager("onnx")`` registers one instance under ``name``."""

    def add(cls: type[Packager]) -> type[Packager]:
        cls.name = name
        PACKAGERS.register(name)(cls())
        return cls

    return add
