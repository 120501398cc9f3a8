"""The converter contract: write an artifact (of one graph, or of several named graphs), embed metadata,
describe it, and run it."""

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
from edgekit.graph import ModelSource, NamedGraph, Runner, RunnerUnavailable
from edgekit.placement import Placement
from edgekit.quiet import FORMAT_SUFFIXES
from edgekit.quant.spec import QuantMethods, QuantSpec, Scheme
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


@dataclass
class Written:
    """What ``export_many`` wrote: how an app selects each named graph, and the files beside the artifact."""

    select: dict[str, dict[str, Any]]  # graph name → {"signature": …} / {"function": …} / {"adapter_file": …}
    side_files: list[Path] = field(default_factory=list)  # beside the artifact (in its staging folder)


Switcher = Callable[[str, list[np.ndarray]], list[np.ndarray]]  # run(graph name, inputs) on one loaded artifact


class Converter(abc.ABC):
    """One export format. Subclasses are registered with ``@register_converter(name)``."""

    name: str = ""
    suffix: str = ""  # file suffix of the artifact, e.g. ".onnx"
    is_directory: bool = False  # True when the artifact is a folder (.mlpackage)
    runtime: str = ""  # the runtime that verifies and benchmarks it here
    precisions: tuple[str, ...] = ("fp32",)  # for listing; ``quant_methods`` is what is checked when set
    quant_methods: QuantMethods | None = None  # scheme → how this format writes it (None: fp32 only)
    extra: str = ""  # the pip extra that installs this converter's packages
    multi_graph_schemes: tuple[str, ...] = ("fp32",)  # QuantSpec schemes ``export_many`` can write
    accelerators: tuple[str, ...] = ()  # what ``placement`` answers for (edgekit.placement.ACCELERATORS)

    @abc.abstractmethod
    def export(self, source: ModelSource, path: Path, quant: QuantSpec | str, metadata: dict[str, Any],
               *, prepared: Any = None) -> list[str] | None:
        """Write the artifact to ``path`` with edgekit's metadata (JSON-able) embedded in it; return what was
        done to the graph on the way, one line each (e.g. ``"aten.alias.default → identity (4×)"``), or None.

        ``quant`` says how to quantize (``"fp32"``/``"fp16"`` still work); ``prepared`` is the
        calibrated PT2E graph (``edgekit.quant.pt2e.PreparedQuant``) shared by every format."""

    @abc.abstractmethod
    def inspect(self, path: Path) -> ArtifactInfo:
        """Read I/O, operators and metadata back from the artifact; raise EdgekitError if unreadable."""

    @abc.abstractmethod
    def runner(self, path: Path, threads: int, variant: str | None = None) -> Runner | RunnerUnavailable:
        """A callable that runs the artifact here, or why it cannot. ``variant`` names one graph of an
        ``export_many`` artifact (with the default ``export_many``: run ``graph_file(path, variant)``)."""

    def export_many(self, graphs: list[NamedGraph], path: Path, quant: QuantSpec | str,
                    metadata: dict[str, Any]) -> Written:
        """Write several named graphs as one artifact at ``path``; files beside it go into ``path.parent``.

        By default the first graph is the artifact itself and each further one a side file
        ``<stem>.<name><suffix>`` beside it; a format that can share weights between graphs overrides this."""
        self.check_many(quant)
        first, *rest = graphs
        self.export(first.source, path, quant, metadata)
        written = Written({first.name: {"file": path.name}})
        for graph in rest:
            side = self.side_file(path, graph.name)
            self.export(graph.source, side, quant, metadata)
            written.select[graph.name] = {"file": side.name}
            written.side_files.append(side)
        return written

    def check_many(self, quant: QuantSpec | str, graphs: list[NamedGraph] | None = None) -> None:
        """Raise naming what is supported when this format cannot write ``graphs`` (when given) as one
        artifact at ``quant``."""
        spec = QuantSpec.parse(quant)
        if spec.scheme.value not in self.multi_graph_schemes:
            raise EdgekitError(f"{self.name} artifacts of several graphs support "
                               f"{', '.join(self.multi_graph_schemes)}, not {spec.tag}")

    def side_file(self, path: Path, variant: str) -> Path:
        """Where the default ``export_many`` writes graph ``variant`` beside ``path``: ``<stem>.<variant><suffix>``."""
        return path.with_name(f"{path.stem}.{variant}{self.suffix}")

    def graph_file(self, path: Path, variant: str | None) -> Path:
        """The file holding graph ``variant`` of an artifact written by the default ``export_many``:
        its side file when there is one, else ``path`` (the first graph)."""
        side = self.side_file(path, variant) if variant is not None else path
        return side if side.exists() else path

    def switcher(self, path: Path, threads: int) -> Switcher:
        """``run(variant, inputs)`` on one loaded artifact, for timing switches between its graphs."""
        runners: dict[str, Runner | RunnerUnavailable] = {}

        def run(variant: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
            if variant not in runners:
                runners[variant] = self.runner(path, threads, variant)
            found = runners[variant]
            if isinstance(found, RunnerUnavailable):
                raise EdgekitError(f"{path.name} cannot run here: {found.reason}")
            return found(inputs)

        return run

    def extra_graphs(self, graphs: list[tuple[ModelSource, Any]], precision: QuantSpec) -> list[ExtraGraph]:
        """Graphs only this format offers for a model whose graphs and references are ``graphs``
        (e.g. Core ML's step graph with the states held by the model); none by default."""
        return []

    def placement(self, path: Path, accelerator: str) -> Placement:
        """Where the artifact's ops run on ``accelerator`` (one of ``self.accelerators``): predicted by rules or
        measured by the runtime, whichever this machine can do; ``Placement.not_run`` says when neither."""
        raise EdgekitError(f"the {self.name} converter reports no placement; it answers for: "
                           f"{', '.join(self.accelerators) or '(none)'}")

    def reference_runner(self, path: Path, variant: str | None = None) -> Runner | None:
        """A reference evaluation of the artifact's arithmetic (of graph ``variant``), for when its
        runtime cannot run here."""
        return None

    def check_precision(self, spec: QuantSpec | str) -> None:
        """Raise naming what is supported when this format cannot write ``spec`` (or a scheme name)."""
        spec = QuantSpec.parse(spec)
        if self.quant_methods is not None:
            self.quant_methods.get(spec)
            return
        precision = spec.tag
        if precision not in self.precisions:
            raise EdgekitError(
                f"the {self.name} converter does not support precision {precision!r}; "
                f"it supports: {', '.join(self.precisions)}"
            )

    def artifact_name(self, base: str, spec: QuantSpec | str) -> str:
        """``<base>_<tag><suffix>``, e.g. ``cnn_digits_int8.onnx``."""
        return f"{base}_{QuantSpec.parse(spec).tag}{self.suffix}"


CONVERTERS: Registry[Converter] = Registry("format")


def register_converter(name: str) -> Callable[[type[Converter]], type[Converter]]:
    """Class decorator: ``@register_converter("onnx")`` registers one instance under ``name``."""

    def add(cls: type[Converter]) -> type[Converter]:
        cls.name = name
        CONVERTERS.register(name)(cls())
        FORMAT_SUFFIXES[cls.suffix] = name  # names the format in the watcher's message if a conversion dies
        return cls

    return add


# messages in which a converter says it has no conversion for an operator (litert-torch, torch.onnx, coremltools)
_UNSUPPORTED_PATTERNS = (
    re.compile(r"Lowering not found: ([\w.]+)"),
    re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>"),
    re.compile(r"Torch `(\w+)` op"),
    re.compile(r"convert function for op '(\w+)' not implemented"),
)
_ATEN_OP = re.compile(r"(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)")


@dataclass(frozen=True)
class Failure:
    """Where a converter failed, read from its exception."""

    op: str | None  # the operator it was converting (``aten.add.Tensor``), if found
    target: Any  # that operator's torch.fx target, when it came from a graph node
    step: str | None  # the converter's step that raised (a pass class, a function), when known
    message: str  # the library's own message: ``AssertionError: <first line>`` of the root cause
    unsupported: bool  # the library said it has no conversion for ``op``


def diagnose(exc: BaseException) -> Failure:
    """Read a converter's exception: the operator the library says it cannot convert, else the innermost
    torch.fx node being processed in the traceback (and the step processing it), else an ATen op name in
    the messages; with the root cause's own message."""
    chain = _chain(exc)
    message = _message(chain[-1])
    for err in chain:
        for pattern in _UNSUPPORTED_PATTERNS:
            match = pattern.search(str(err))
            if match:
                return Failure(".".join(g for g in match.groups() if g), None, None, message, True)
    for err in reversed(chain):
        for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__))):
            node = frame.f_locals.get("node")
            if isinstance(node, torch.fx.Node) and node.op == "call_function":
                return Failure(str(node.target), node.target, _step(frame), message, False)
    for err in chain:
        match = _ATEN_OP.search(str(err))
        if match:
            return Failure(match.group(1), None, None, message, False)
    return Failure(None, None, None, message, False)


def failing_op(exc: BaseException) -> str | None:
    """The operator a converter was lowering when ``exc`` was raised, if it can be found (``diagnose``)."""
    return diagnose(exc).op


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first (an implicit context only where not suppressed)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)  # type: ignore[assignment]
    return chain


def _message(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else "(no message)"
    return f"{type(exc).__name__}: {text[:300]}"


def _step(frame: Any) -> str | None:
    owner = frame.f_locals.get("self")
    return type(owner).__name__ if owner is not None else frame.f_code.co_name


# a full disk, a quota, a read-only or forbidden folder: the write failed, not the conversion
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def raise_if_disk_error(exc: BaseException) -> None:
    """Re-raise an OSError of writing as itself: the bundle writer (``edgekit.io.atomic_output``) then
    names the file and the OS reason in one line, where a "conversion failed" message would mislead."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        raise exc


def conversion_error(fmt: str, exc: BaseException, *, convertible: Callable[[Any], bool] | None = None,
                     unconvertible: Callable[[], str | None] | None = None) -> EdgekitError:
    """Turn a converter's exception into a one-line error naming the operator where it failed and the
    library's own message (an OSError of writing is re-raised as itself, see ``raise_if_disk_error``).

    It is an ``UnsupportedOpError`` only when the operator has no conversion: the library says so, or
    ``convertible(target)`` (the format's lookup) is False. A failure at an operator that has one says
    "conversion failed at <op>" instead. ``unconvertible()``: an operator of the model without a conversion
    (or None), asked for and blamed only when the exception names no operator at all."""
    raise_if_disk_error(exc)
    found = diagnose(exc)
    if found.op and (found.unsupported or (found.target is not None and convertible is not None
                                           and not convertible(found.target))):
        return UnsupportedOpError(found.op, fmt, found.message)
    if found.op:
        where = f" (in {found.step})" if found.step else ""
        return EdgekitError(f"{fmt} conversion failed at {found.op}{where}: {found.message}")
    missing = unconvertible() if unconvertible is not None else None
    if missing:
        return UnsupportedOpError(missing, fmt, f"it has no {fmt} conversion; the converter raised "
                                                      f"{found.message}")
    return EdgekitError(f"{fmt} conversion failed: {found.message}")
