"""NumPy kernels for convolution and pooling over 1, 2 or 3 spatial axes (channels first).

All of them slice the padded input into windows with ``sliding_window_view`` (a view, no
copy), step it by the stride and the dilation, and reduce each window.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgekit.converters.coreml.mil_reference.registry import MilEvaluationError, kernel

Args = dict[str, Any]
Pads = list[tuple[int, int]]  # (begin, end) per spatial axis


def _ints(value: Any, n: int, default: int) -> list[int]:
    if value is None:
        return [default] * n
    return [int(v) for v in np.atleast_1d(value)]


def _pads(a: Args, size: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> Pads:
    """Begin/end padding per spatial axis for MIL's pad_type valid, custom, same, same_lower."""
    pad_type = str(a.get("pad_type") or "valid")
    n = len(size)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        flat = _ints(a.get("pad"), 2 * n, 0)
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(n)]
    if pad_type not in ("same", "same_lower"):
        raise MilEvaluationError(f"unknown pad_type {pad_type!r}; MIL defines valid, custom, same, same_lower")
    pads = []
    for length, k, s, d in zip(size, kernel, strides, dilations):
        out = math.ceil(length / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - length, 0)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if pad_type == "same" else (big, small))
    return pads


def _windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
             dilations: Sequence[int], pads: Pads, fill: float = 0.0) -> np.ndarray:
    """View of x (N, C, *D) as windows (N, C, *out, *kernel) after padding with ``fill``."""
    if any(p for pair in pads for p in pair):
        x = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(x, spans, axis=tuple(range(2, x.ndim)))
    steps = tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dilations)
    return win[(slice(None), slice(None)) + steps]


@kernel("conv")
def conv(op: Any, a: Args) -> np.ndarray:
    """Grouped N-d convolution: x (N, C_in, *D), weight (C_out, C_in/groups, *K), bias (C_out)."""
    x, w = a["x"], a["weight"]
    n_sp = x.ndim - 2
    k = list(w.shape[2:])
    strides, dilations = _ints(a.get("strides"), n_sp, 1), _ints(a.get("dilations"), n_sp, 1)
    groups = int(a.get("groups", 1))
    win = _windows(x, k, strides, dilations, _pads(a, x.shape[2:], k, strides, dilations))
    n, c_in = x.shape[:2]
    c_out, c_group = w.shape[0], w.shape[1]
    if c_in != c_group * groups:
        raise MilEvaluationError(f"conv {op.name}: input has {c_in} channels, weight expects {c_group}×{groups}")
    out_sp = win.shape[2 : 2 + n_sp]
    if c_group == 1 and c_out == groups:  # depthwise: one multiply-add per kernel tap
        y = np.zeros((n, c_out, *out_sp), dtype=np.result_type(x, w))
        chan = (1, c_out) + (1,) * n_sp
        for tap in np.ndindex(*k):
            y += win[(Ellipsis, *tap)] * w[(slice(None), 0, *tap)].reshape(chan)
    else:  # im2col per group, one batched matmul of contiguous operands (BLAS)
        taps = int(np.prod(k))
        positions = int(np.prod(out_sp))
        order = (0, 1, *range(2 + n_sp, 2 + 2 * n_sp), *range(2, 2 + n_sp))  # (N, C, *K, *out)
        cols = win.transpose(order).reshape(n, groups, c_group * taps, positions)
        wg = np.ascontiguousarray(w.reshape(groups, c_out // groups, c_group * taps))
        y = np.matmul(wg, cols).reshape(n, c_out, *out_sp)  # (N, G, C_out/G, P)
    if a.get("bias") is not None:
        y = y + a["bias"].reshape((1, c_out) + (1,) * n_sp)
    return y


def _pool_geometry(a: Args, x: np.ndarray) -> tuple[list[int], list[int], Pads, Pads]:
    """Kernel, strides, explicit pads and the extra end pads that ceil_mode adds."""
    n_sp = x.ndim - 2
    k = _ints(a.get("kernel_sizes"), n_sp, 1)
    strides = _ints(a.get("strides"), n_sp, 1)
    pads = _pads(a, x.shape[2:], k, strides, [1] * n_sp)
    extra = [(0, 0)] * n_sp
    if a.get("ceil_mode"):
        extra = []
        for length, kk, s, (pb, pe) in zip(x.shape[2:], k, strides, pads):
            span = length + pb + pe
            out = math.ceil((span - kk) / s) + 1
            if (out - 1) * s >= length + pb:  # the last window must start inside the input
                out -= 1
            extra.append((0, max((out - 1) * s + kk - span, 0)))
    return k, strides, pads, extra


def _pad_more(x: np.ndarray, extra: Pads, fill: float) -> np.ndarray:
    if not any(e for pair in extra for e in pair):
        return x
    return np.pad(x, [(0, 0), (0, 0), *extra], constant_values=fill)


@kernel("max_pool")
def max_pool(op: Any, a: Args) -> np.ndarray:
    x = a["x"]
    k, strides, pads, extra = _pool_geometry(a, x)
    xp = _pad_more(np.pad(x, [(0, 0), (0, 0), *pads], constant_values=-np.inf), extra, -np.inf)
    win = _windows(xp, k, strides, [1] * len(k), [(0, 0)] * len(k))
    return win.max(axis=tuple(range(-len(k), 0)))


def _window_sums(x: np.ndarray, k: list[int], strides: list[int], pads: Pads, extra: Pads,
                 include_pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sums of x over each window and the number of elements each window averages."""
    n_sp, ones = len(k), [1] * len(k)
    xp = _pad_more(np.pad(x, [(0, 0), (0, 0), *pads]), extra, 0.0)
    sums = _windows(xp, k, strides, ones, [(0, 0)] * n_sp).sum(axis=tuple(range(-n_sp, 0)))
    mask = np.pad(np.ones((1, 1, *x.shape[2:]), np.float32), [(0, 0), (0, 0), *pads],
                  constant_values=1.0 if include_pad else 0.0)
    mask = _pad_more(mask, extra, 0.0)
    counts = _windows(mask, k, strides, ones, [(0, 0)] * n_sp).sum(axis=tuple(range(-n_sp, 0)))
    return sums, counts


@kernel("avg_pool")
def avg_pool(op: Any, a: Args) -> np.ndarray:
    """Average over each window; padding counts unless exclude_padding_from_average."""
    x = a["x"]
    k, strides, pads, extra = _pool_geometry(a, x)
    include = not a.get("exclude_padding_from_average", False)
    sums, counts = _window_sums(x, k, strides, pads, extra, include)
    return sums / np.maximum(counts, 1.0)


@kernel("l2_pool")
def l2_pool(op: Any, a: Args) -> np.ndarray:
    """sqrt of the sum of squares over each window."""
    x = a["x"]
    k, strides, pads, extra = _pool_geometry(a, x)
    sums, _ = _window_sums(x * x, k, strides, pads, extra, True)
    return np.sqrt(sums)
