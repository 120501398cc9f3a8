"""NumPy kernels for MIL's indexing ops that coremltools cannot evaluate itself (no ``value_inference``).

Semantics follow the op definitions in ``coremltools/converters/mil/mil/ops/defs`` (iOS15–iOS17). An index
outside its dimension is an error here, never a clamp: Core ML leaves it undefined, so a reference that
picked some value would hide the bug it exists to find.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.converters.coreml.mil_reference.registry import IOS17, MilEvaluationError, kernel

Args = dict[str, Any]


def _in_bounds(indices: np.ndarray, dims: tuple[int, ...], negative: bool, what: str) -> np.ndarray:
    """``indices`` (…, len(dims)) as int64 within ``dims``; negative ones count from the end when ``negative``."""
    idx = np.asarray(indices).astype(np.int64)
    size = np.asarray(dims, dtype=np.int64)
    low = -size if negative else np.zeros_like(size)
    if np.any((idx < low) | (idx >= size)):
        allowed = "-D ≤ i < D" if negative else "0 ≤ i < D"
        raise MilEvaluationError(f"{what}: an index is out of bounds for dims {list(dims)} ({allowed}); "
                                 "Core ML leaves that undefined")
    return np.where(idx < 0, idx + size, idx)


def _gather_nd(x: np.ndarray, indices: np.ndarray, batch_dims: int, negative: bool) -> np.ndarray:
    """``out[b…, i…] = x[b…, indices[b…, i…, :], …]``: the last axis of ``indices`` addresses the
    ``indices.shape[-1]`` dims of ``x`` after its first ``batch_dims`` (shared with ``indices``)."""
    depth = indices.shape[-1]
    if indices.shape[:batch_dims] != x.shape[:batch_dims] or batch_dims + depth > x.ndim:
        raise MilEvaluationError(f"gather_nd: indices {indices.shape} do not fit x {x.shape} with batch_dims={batch_dims}")
    idx = _in_bounds(indices, x.shape[batch_dims:batch_dims + depth], negative, "gather_nd")
    batch = int(np.prod(x.shape[:batch_dims], dtype=np.int64))
    flat_x = x.reshape(batch, *x.shape[batch_dims:])
    flat_idx = idx.reshape(batch, -1, depth)  # (B, M, depth)
    rows = np.arange(batch)[:, None]  # (B, 1): each batch gathers from its own slice
    picked = flat_x[(rows, *np.moveaxis(flat_idx, -1, 0))]  # (B, M, *rest)
    return picked.reshape(*indices.shape[:-1], *x.shape[batch_dims + depth:])


@kernel("gather_nd")
def gather_nd(op: Any, a: Args) -> np.ndarray:
    """iOS15/16 ``gather_nd``: negative indices count from the end."""
    return _gather_nd(a["x"], a["indices"], int(a.get("batch_dims") or 0), negative=True)


@kernel("gather_nd", opset=IOS17)
def gather_nd_ios17(op: Any, a: Args) -> np.ndarray:
    """iOS17+ ``gather_nd``: indices are non-negative only ("negative values are considered out-of-bound")."""
    return _gather_nd(a["x"], a["indices"], int(a.get("batch_dims") or 0), negative=False)
