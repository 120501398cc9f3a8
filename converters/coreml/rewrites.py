"""Exact rewrites of torch.export ops that coremltools' torch frontend cannot lower.

Models from other libraries (transformers' BERT, DistilBERT, Llama, Mamba, Mamba-2) carry a few ATen ops
that coremltools 9 has no converter for, although each has an exact equivalent it does convert:
``aten.alias`` is an identity, ``aten.diff`` a slice and a subtract, ``aten.new_ones`` a ``full``,
``aten.__and__``/``__or__`` of bool masks a logical and/or (coremltools' name lookup strips the
underscores only before the namespace, so it never finds its own ``and`` converter), and a ``cumsum``
along dim -2 (Mamba-2) the same cumsum with the dim counted from the front (MIL's takes -1 … rank-1).

Each rewrite is registered for one op with ``@rewrite(op, check)``: ``check(node)`` returns what the op
becomes (or raises ``UnsupportedOpError`` naming the variant it cannot rewrite exactly), and the decorated
function is either a decomposition written with torch ops or (``edits=True``) an in-place edit of the
node's arguments. The ops live in the program after ``run_decompositions({})`` (which ``ct.convert``
needs anyway), so ``apply_rewrites`` looks for them there; decompositions go through torch.export's own
``ExportedProgram.run_decompositions``, so the rewritten program is retraced by torch (shapes, dtypes and
the graph signature stay consistent) and computes bit for bit what the original computes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.export import ExportedProgram

from edgekit.errors import UnsupportedOpError
from edgekit.registry import Registry

FORMAT = "coreml"
aten = torch.ops.aten


@dataclass(frozen=True)
class Rewrite:
    """How one op is rewritten.

    ``check(node)`` says what the node becomes (a short text), None when this node needs nothing, or raises
    ``UnsupportedOpError`` naming the variant it cannot rewrite exactly. Then either ``decompose``, the op
    written with torch ops (traced by torch for every node of the op, so its ``check`` never returns None),
    or ``edit(node)``, which changes the node's own arguments in place (a fix that keeps the op)."""

    op: Any  # the torch OpOverload, e.g. torch.ops.aten.diff.default
    check: Callable[[torch.fx.Node], str | None]
    decompose: Callable[..., Any] | None = None
    edit: Callable[[torch.fx.Node], None] | None = None


REWRITES: Registry[Rewrite] = Registry("Core ML rewrite")  # keyed by op name, e.g. "aten.diff.default"


def rewrite(op: Any, check: Callable[[torch.fx.Node], str | None] | str,
            *, edits: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function for ``op`` (an ``OpOverload``): its exact decomposition, or with
    ``edits=True`` a function that edits a node of it in place. ``check`` is what the op becomes (text) or
    a function of the node returning that (see ``Rewrite``)."""
    checker = check if callable(check) else (lambda node, text=check: text)

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        REWRITES.register(str(op))(Rewrite(op, checker, edit=fn) if edits else Rewrite(op, checker, decompose=fn))
        return fn

    return add


def apply_rewrites(program: ExportedProgram) -> tuple[ExportedProgram, list[str]]:
    """``program`` decomposed for Core ML (``run_decompositions({})``) with every registered op rewritten,
    and what was done, one line per op and replacement: ``"aten.alias.default → identity (4×)"``."""
    program = program.run_decompositions({})
    found: Counter[tuple[str, str]] = Counter()
    decompose: dict[Any, Callable[..., Any]] = {}
    for node in list(program.graph.nodes):
        how = REWRITES.get(str(node.target)) if node.op == "call_function" and str(node.target) in REWRITES else None
        what = how.check(node) if how else None
        if what is None:
            continue
        found[str(node.target), what] += 1
        if how.edit is not None:
            how.edit(node)
        else:
            decompose[how.op] = how.decompose
    if not found:
        return program, []
    program.graph_module.recompile()
    if decompose:
        program = program.run_decompositions(decompose)
        for node in program.graph.nodes:
            if node.op == "call_function" and node.target in decompose:
                raise UnsupportedOpError(str(node.target), FORMAT, "it is still in the graph after its rewrite")
    return program, [f"{op} → {what} ({count}×)" for (op, what), count in sorted(found.items())]


def _val(node: Any) -> Any:
    """The fake tensor torch.export recorded for a node's value (None for a non-tensor argument)."""
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


# --- the rewrites --------------------------------------------------------------------------------------


@rewrite(aten.alias.default, "identity")
def _alias(x: torch.Tensor) -> torch.Tensor:
    """A view of the whole tensor: the tensor itself (programs from torch.export never mutate it)."""
    return x


def _diff_args(node: torch.fx.Node) -> tuple[Any, int, int, Any, Any]:
    """``aten.diff(self, n=1, dim=-1, prepend=None, append=None)``'s arguments, defaults filled in."""
    args = [*node.args, *[None] * (5 - len(node.args))]
    kwargs = node.kwargs
    x, n, dim, prepend, append = (kwargs.get(k, v) for k, v in
                                  zip(("self", "n", "dim", "prepend", "append"), args))
    return x, 1 if n is None else int(n), -1 if dim is None else int(dim), prepend, append


def _check_diff(node: torch.fx.Node) -> str:
    """A diff whose result is not empty, of a number (not bool) tensor, becomes slices and subtracts."""
    x, n, dim, prepend, append = _diff_args(node)
    value = _val(x)
    if value is not None and value.dtype == torch.bool:
        raise UnsupportedOpError(str(node.target), FORMAT, "diff of a bool tensor (torch computes it with xor); "
                                 "cast the tensor to an integer dtype before torch.diff")
    out = _val(node)
    if out is not None and out.shape[dim] == 0:
        raise UnsupportedOpError(str(node.target), FORMAT, f"n={n} leaves no elements along dim {dim}; "
                                 "Core ML has no empty tensors, so n must be less than that dim's length")
    extra = " + concat" if _val(prepend) is not None or _val(append) is not None else ""
    return f"slice + sub{extra}"


@rewrite(aten.diff.default, _check_diff)
def _diff(x: torch.Tensor, n: int = 1, dim: int = -1, prepend: torch.Tensor | None = None,
          append: torch.Tensor | None = None) -> torch.Tensor:
    """``out[i] = x[i + 1] - x[i]`` along ``dim``, ``n`` times, after joining ``prepend`` and ``append``."""
    parts = [t for t in (prepend, x, append) if t is not None]
    if len(parts) > 1:
        x = torch.cat(parts, dim)
    for _ in range(n):
        length = x.shape[dim] - 1
        x = x.narrow(dim, 1, length) - x.narrow(dim, 0, length)
    return x


@rewrite(aten.new_ones.default, "full")
def _new_ones(x: torch.Tensor, size: list[int], *, dtype: torch.dtype | None = None, layout: Any = None,
              device: Any = None, pin_memory: bool | None = None) -> torch.Tensor:
    """Ones of ``size`` in ``dtype`` (default: ``x``'s)."""
    return torch.full(size, 1, dtype=x.dtype if dtype is None else dtype, device=x.device)


def _logical(name: str) -> Callable[[torch.fx.Node], str]:
    """The check of a bitwise op: bool operands only (Core ML has logical ops, no integer bitwise ones)."""
    def check(node: torch.fx.Node) -> str:
        dtypes = [getattr(_val(a), "dtype", None) for a in node.args[:2]]
        if any(d != torch.bool for d in dtypes):
            shown = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
            raise UnsupportedOpError(str(node.target), FORMAT, f"bitwise {name} of {shown} tensors; Core ML has "
                                     f"logical_{name} of bool tensors only, so compute the masks as bool")
        return f"logical_{name}"

    return check


@rewrite(aten.__and__.Tensor, _logical("and"))
def _and(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x & other`` of bool tensors."""
    return torch.logical_and(x, other)


@rewrite(aten.__or__.Tensor, _logical("or"))
def _or(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x | other`` of bool tensors."""
    return torch.logical_or(x, other)


def _check_cumsum(node: torch.fx.Node) -> str | None:
    """coremltools' MIL ``cumsum`` takes axis -1 … rank-1 only: a dim below -1 is counted from the front."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
    return "cumsum along a non-negative dim" if dim < -1 else None


@rewrite(aten.cumsum.default, _check_cumsum, edits=True)
def _cumsum(node: torch.fx.Node) -> None:
    """The same cumsum with its dim counted from the front (-2 of a rank-4 tensor → 2)."""
    rank = _val(node.args[0]).dim()
    if len(node.args) > 1:
        node.args = (node.args[0], node.args[1] % rank, *node.args[2:])
    else:
        node.kwargs = {**node.kwargs, "dim": node.kwargs["dim"] % rank}
