"""The converter contract: write an artifact, embed metadata, describe it, and run it."""

from __future__ import annotations

import abc
import errno
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgekit.errors import EdgekitError, UnsupportedOpError
from edgekit.graph import ModelSource, Runner, RunnerUnavailable
from edgekit.quant.spec import QuantMethods, QuantSpec, Scheme, as_spec
from edgekit.registry import Registry

PRECISIONS = tuple(s.value for s in Scheme)  # every QuantSpec scheme; each converter declares its own subset


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: tuple[float, int] | None = None  # (scale, zero_point) of an integer I/O tensor

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.quantization:
            d["quantization"] = {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        return d


@dataclass
class ArtifactInfo:
    """What can be read back from a written artifact without running it."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_histogram: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    states: list[TensorInfo] = field(default_factory=list)  # held by the model across calls (Core ML MLState)


@dataclass
class ExtraGraph:
    """A graph one format offers beside the model's own, with the reference data that verifies it."""

    source: ModelSource
    reference: Any  # edgekit.verify.ReferenceData
    precision: str  # the precision it is written in, whatever the run's


class Converter(abc.ABC):
    """One export format. Subclasses are registered with ``@register_converter(name)``."""

    name: str = ""
    suffix: str = ""  # file suffix of the artifact, e.g. ".onnx"
    is_directory: bool = False  # True when the artifact is a folder (.mlpackage)
    runtime: str = ""  # the runtime that verifies and benchmarks it here
    precisions: tuple[str, ...] = ("fp32",)  # for listing; ``quant_methods`` is what is checked when set
    quant_methods: QuantMethods | None = None  # scheme → how this format writes it (None: fp32 only)
    extra: str = ""  # the pip extra that installs this converter's packages

    @abc.abstractmethod
    def export(self, source: ModelSource, path: Path, quant: QuantSpec | str, metadata: dict[str, Any],
               *, prepared: Any = None) -> None:
        """Write the artifact to ``path`` with edgekit's metadata (JSON-able) embedded in it.

        ``quant`` says how to quantize (``"fp32"``/``"fp16"`` still work); ``prepared`` is the
        calibrated PT2E graph (``edgekit.quant.pt2e.PreparedQuant``) shared by every format."""

    @abc.abstractmethod
    def inspect(self, path: Path) -> ArtifactInfo:
        """Read I/O, operators and metadata back from the artifact; raise EdgekitError if unreadable."""

    @abc.abstractmethod
    def runner(self, path: Path, threads: int) -> Runner | RunnerUnavailable:
        """A callable that runs the artifact here, or why it cannot."""

    def extra_graphs(self, graphs: list[tuple[ModelSource, Any]], precision: QuantSpec) -> list[ExtraGraph]:
        """Graphs only this format offers for a model whose graphs and references are ``graphs``
        (e.g. Core ML's step graph with the states held by the model); none by default."""
        return []

    def reference_runner(self, path: Path) -> Runner | None:
        """A reference evaluation of the artifact's arithmetic, for when its runtime cannot run here."""
        return None

    def check_precision(self, precision: str | QuantSpec) -> None:
        """Raise naming what is supported when this format cannot write ``precision``."""
        spec = as_spec(getattr(precision, "spec", precision))  # a str, QuantSpec or QuantPlan
        if self.quant_methods is not None:
            self.quant_methods.get(spec)
            return
        precision = spec.tag
        if precision not in self.precisions:
            raise EdgekitError(
                f"the {self.name} converter does not support precision {precision!r}; "
                f"it supports: {', '.join(self.precisions)}"
            )

    def artifact_name(self, base: str, precision: str | QuantSpec) -> str:
        return f"{base}_{as_spec(getattr(precision, 'spec', precision)).tag}{self.suffix}"


CONVERTERS: Registry[Converter] = Registry("format")


def register_converter(name: str) -> Callable[[type[Converter]], type[Converter]]:
    """Class decorator: ``@register_converter("onnx")`` registers one instance under ``name``."""

    def add(cls: type[Converter]) -> type[Converter]:
        cls.name = name
        CONVERTERS.register(name)(cls())
        return cls

    return add


_OP_PATTERNS = (
    re.compile(r"(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)"),
    re.compile(r"Torch `(\w+)` op"),
    re.compile(r"converting '(\w+)' op"),
    re.compile(r"Lowering not found: ([\w.]+)"),
)


def failing_op(exc: BaseException) -> str | None:
    """The operator a converter was lowering when ``exc`` was raised, if it can be found.

    First the innermost torch.fx node in the traceback's frames, then op names in the messages.
    """
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        node = frame.f_locals.get("node")
        if isinstance(node, torch.fx.Node) and node.op == "call_function":
            return str(node.target)
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    for err in chain:
        for pattern in _OP_PATTERNS:
            match = pattern.search(str(err))
            if match:
                return match.group(1)
    return None


# a full disk, a quota, a read-only or forbidden folder: the write failed, not the conversion
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def raise_if_disk_error(exc: BaseException) -> None:
    """Re-raise an OSError of writing as itself: the bundle writer (``edgekit.io.atomic_output``) then
    names the file and the OS reason in one line, where a "conversion failed" message would mislead."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        raise exc


def conversion_error(fmt: str, exc: BaseException) -> EdgekitError:
    """Turn a converter's exception into a one-line error naming the operator when possible
    (an OSError of writing is re-raised as itself, see ``raise_if_disk_error``)."""
    raise_if_disk_error(exc)
    op = failing_op(exc)
    if op:
        return UnsupportedOpError(op, fmt)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return EdgekitError(f"{fmt} conversion failed: {type(exc).__name__}: {first}")
