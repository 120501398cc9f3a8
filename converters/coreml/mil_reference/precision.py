"""Precision emulation: every op result is rounded to the dtype the program declares.

Values travel between ops in a *compute form*: floating-point tensors as float32 arrays
(an fp16 tensor is an fp32 array whose values are exactly representable in fp16), so
kernels always compute in fp32. After each op the result is rounded once to the
declared dtype — fp16 results go through ``astype(float16)`` — which reproduces an fp16
program computed in fp32 and rounded to fp16 per op. Program outputs are returned in
their declared dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import require


@dataclass(frozen=True)
class VarSpec:
    """What the program declares about one variable: kind, numpy dtype, static shape."""

    name: str
    kind: str  # "tensor", "scalar" or "other" (strings, lists, tuples)
    dtype: np.dtype | None  # declared numpy dtype (None for "other")
    shape: tuple[int | None, ...] | None  # declared shape, None for a symbolic dimension

    @property
    def is_fp16(self) -> bool:
        return self.dtype == np.float16

    def shape_matches(self, shape: tuple[int, ...]) -> bool:
        """True when ``shape`` has the declared rank and every static dimension."""
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(d is None or d == s for d, s in zip(self.shape, shape))

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape or ())
        return f"{self.name} ({dims}) {self.dtype}" if self.kind != "other" else self.name


def var_spec(var: Any) -> VarSpec:
    """Read the declared kind, dtype and static shape of a coremltools ``Var``."""
    types = require("coremltools.converters.mil.mil.types", "coreml")
    sym_type = var.sym_type
    if types.is_tensor(sym_type):
        dtype = np.dtype(types.nptype_from_builtin(sym_type.get_primitive()))
        shape = tuple(int(d) if isinstance(d, (int, np.integer)) else None for d in var.shape)
        return VarSpec(var.name, "tensor", dtype, shape)
    if types.is_scalar(sym_type) and not types.is_str(sym_type):
        return VarSpec(var.name, "scalar", np.dtype(types.nptype_from_builtin(sym_type)), ())
    return VarSpec(var.name, "other", None, None)


def to_compute(value: Any) -> Any:
    """Widen fp16 (and fp64) arrays/scalars to float32, the dtype every kernel computes in;
    NumPy bool scalars become Python bools (NumPy 2 refuses ``keepdims=np.bool_``)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype in (np.float16, np.float64):
        return value.astype(np.float32)
    if isinstance(value, tuple):
        return tuple(to_compute(v) for v in value)
    return value


def round_fp16(value: Any) -> np.ndarray:
    """Round to the nearest fp16 value (ties to even), kept as float32.

    Same result as ``x.astype(float16).astype(float32)`` for every float32 bit pattern
    (checked exhaustively), about 3x faster: NumPy's float16 cast is scalar code. Normal
    numbers keep 10 mantissa bits by integer rounding; fp16 subnormals (|x| < 2**-14) are
    multiples of 2**-24; beyond 65504 is inf; NaN stays NaN.
    """
    x = np.asarray(value, dtype=np.float32)
    u = x.view(np.uint32)
    r = ((u + _HALF_ULP + ((u >> _SHIFT) & _ONE)) & _MASK).view(np.float32)
    tiny = np.abs(x) < _FP16_MIN_NORMAL
    if tiny.any():
        r[tiny] = np.round(x[tiny] * _TWO_24) / _TWO_24
    out_of_range = ~(np.abs(r) <= _FP16_MAX) | np.isnan(x)
    if out_of_range.any():
        bad = x[out_of_range]
        r[out_of_range] = np.where(np.isnan(bad), bad, np.copysign(np.float32(np.inf), bad))
    return r


_HALF_ULP, _SHIFT, _ONE, _MASK = np.uint32(0x0FFF), np.uint32(13), np.uint32(1), np.uint32(0xFFFFE000)
_FP16_MIN_NORMAL, _FP16_MAX, _TWO_24 = np.float32(2.0**-14), np.float32(65504.0), np.float32(2.0**24)


def round_to_declared(value: Any, spec: VarSpec) -> Any:
    """Round a kernel result to ``spec``'s dtype and return it in compute form."""
    if spec.kind == "other":
        return value
    arr = np.asarray(value)
    if spec.dtype == np.float16:
        arr = arr.astype(np.float16).astype(np.float32) if arr.dtype != np.float32 else round_fp16(arr)
    elif spec.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    else:
        arr = arr.astype(spec.dtype, copy=False)
    if spec.kind == "scalar":
        return bool(arr) if arr.dtype == bool else arr.reshape(())[()]
    return arr


def to_declared(value: Any, spec: VarSpec) -> Any:
    """Convert a compute-form value to the declared dtype (fp16 outputs become float16)."""
    if spec.kind == "other":
        return value
    return np.asarray(value).astype(spec.dtype, copy=False)


def function_precision(function: Any) -> str:
    """"fp16", "fp32" or "mixed": the float dtypes of a MIL function's compute op results."""
    seen: set[str] = set()
    for op in function.operations:
        if op.op_type in ("const", "cast") or op.op_type.startswith("constexpr_"):
            continue  # weights and the casts at the program's edges do not set its precision
        for out in op.outputs:
            spec = var_spec(out)
            if spec.dtype is not None and spec.dtype.kind == "f":
                seen.add("fp16" if spec.is_fp16 else "fp32")
    if len(seen) == 1:
        return seen.pop()
    return "mixed" if seen else "fp32"
