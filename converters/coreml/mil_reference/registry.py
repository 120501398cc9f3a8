"""The op kernel registry: one NumPy kernel per MIL op type, added with ``@kernel("conv")``.

A kernel is ``fn(op, args) -> value | tuple[value, ...]``: ``op`` is the coremltools
``Operation`` (for its declared types and names), ``args`` maps each input name to its
runtime value. Floating-point tensors arrive as float32 arrays (fp16 values are widened
exactly); the evaluator rounds each result to the dtype the program declares.

Some op types changed meaning between opsets (``constexpr_lut_to_dense`` in iOS16 and
iOS18); ``opset`` selects the variant: the kernel with the highest ``opset`` that is
not newer than the op's own opset wins. An op's opset (``op.opset_version``) is the first
opset whose definition of that op it uses, e.g. 4 (iOS13) for ``conv``.
"""

from __future__ import annotations

from typing import Any, Callable

from edgekit.errors import CannotVerify, EdgekitError

Kernel = Callable[[Any, dict[str, Any]], Any]

# coremltools' opset numbers (AvailableTarget): iOS16=7, iOS17=8, iOS18=9.
IOS16, IOS17, IOS18 = 7, 8, 9

# op type -> [(opset, kernel)], kept sorted by opset
_KERNELS: dict[str, list[tuple[int, Kernel]]] = {}


class MilEvaluationError(EdgekitError):
    """The MIL program cannot be evaluated (unknown op, bad inputs, kernel failure)."""


class MissingKernel(MilEvaluationError, CannotVerify):
    """The program needs an op the evaluator has no kernel for: the artifact converted, but this machine
    cannot check it (kept as "not run: <reason>", not deleted as failed)."""

    def __init__(self, op_type: str, detail: str) -> None:
        self.op_type = op_type
        super().__init__(f"the MIL reference evaluator has no kernel for {op_type} ({detail})")


def kernel(*op_types: str, opset: int = 0) -> Callable[[Kernel], Kernel]:
    """Register ``fn`` as the NumPy kernel of each op type in ``op_types`` from ``opset`` on
    (0: every opset)."""

    def add(fn: Kernel) -> Kernel:
        for op_type in op_types:
            variants = _KERNELS.setdefault(op_type, [])
            if any(v == opset for v, _ in variants):
                raise ValueError(f"MIL kernel {op_type!r} (opset {opset}) is registered twice")
            variants.append((opset, fn))
            variants.sort(key=lambda item: item[0])
        return fn

    return add


def find_kernel(op_type: str, opset: int | None) -> Kernel | None:
    """The registered kernel for ``op_type`` at ``opset`` (None when there is none)."""
    chosen = None
    for version, fn in _KERNELS.get(op_type, ()):
        if opset is None or version <= opset:
            chosen = fn
    return chosen


def kernel_op_types() -> list[str]:
    """Names of all op types with a NumPy kernel."""
    return sorted(_KERNELS)
