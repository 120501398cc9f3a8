"""NumPy kernels for the MIL ops whose coremltools ``value_inference`` is missing, slow or
imprecise: dense algebra, activations, normalizations, cumsum and attention.

Ops not listed here (elementwise arithmetic, reshape, transpose, slicing, reductions, …)
run through coremltools' own ``value_inference``. Convolution and pooling live in
``conv.py``; compressed-weight (``constexpr_*``) ops in ``constexpr.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekit.converters.coreml.mil_reference.registry import IOS18, kernel

Args = dict[str, Any]


def _axis_list(axes: Any, rank: int) -> tuple[int, ...]:
    """Normalize MIL axes (None = all, negatives count from the end) to sorted positives."""
    if axes is None:
        return tuple(range(rank))
    return tuple(sorted(int(a) % rank for a in np.atleast_1d(axes)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:  # scipy comes with scikit-learn; keep a slow exact fallback
        return np.vectorize(math.erf, otypes=[np.float64])(x)
    return erf(x)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


# --- dense algebra -------------------------------------------------------------------


@kernel("linear")
def linear(op: Any, a: Args) -> np.ndarray:
    """y = x @ weight.T + bias, weight (C_out, C_in)."""
    x, w = a["x"], a["weight"]
    y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0])  # 2-D: BLAS
    return y if a.get("bias") is None else y + a["bias"]


@kernel("matmul")
def matmul(op: Any, a: Args) -> np.ndarray:
    """Batched matmul with NumPy broadcasting and optional transposes of the last two axes."""
    x, y = a["x"], a["y"]
    if a.get("transpose_x") and np.ndim(x) > 1:
        x = np.swapaxes(x, -1, -2)
    if a.get("transpose_y") and np.ndim(y) > 1:
        y = np.swapaxes(y, -1, -2)
    return _bmm(x, y)


def _bmm(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """np.matmul; batched operands made contiguous, as NumPy skips BLAS for strided stacks."""
    if np.ndim(x) > 2 or np.ndim(y) > 2:
        x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    return np.matmul(x, y)


@kernel("scaled_dot_product_attention", opset=IOS18)
def scaled_dot_product_attention(op: Any, a: Args) -> np.ndarray:
    """softmax(Q Kᵀ / sqrt(d) + mask) V; a bool mask marks the positions to keep."""
    q, k, v = a["query"], a["key"], a["value"]
    scores = _bmm(q, np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    mask = a.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    return _bmm(_softmax(scores, -1), v)


# --- activations -----------------------------------------------------------------------


@kernel("relu")
def relu(op: Any, a: Args) -> np.ndarray:
    return np.maximum(a["x"], 0)


@kernel("relu6")
def relu6(op: Any, a: Args) -> np.ndarray:
    return np.clip(a["x"], 0, 6)


@kernel("clip")
def clip(op: Any, a: Args) -> np.ndarray:
    """min(max(x, alpha), beta)."""
    return np.minimum(np.maximum(a["x"], a["alpha"]), a["beta"])


@kernel("sigmoid")
def sigmoid(op: Any, a: Args) -> np.ndarray:
    return _sigmoid(a["x"])


@kernel("silu")
def silu(op: Any, a: Args) -> np.ndarray:
    """x * sigmoid(x) (also called swish)."""
    return a["x"] * _sigmoid(a["x"])


@kernel("softplus")
def softplus(op: Any, a: Args) -> np.ndarray:
    """log(1 + exp(x)), computed without overflow."""
    x = a["x"]
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


@kernel("gelu")
def gelu(op: Any, a: Args) -> np.ndarray:
    """GELU in the three MIL modes: EXACT (erf), TANH_APPROXIMATION, SIGMOID_APPROXIMATION."""
    x, mode = a["x"], str(a.get("mode") or "EXACT")
    if mode == "TANH_APPROXIMATION":
        inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)
        return 0.5 * x * (1.0 + np.tanh(inner))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))


@kernel("erf")
def erf(op: Any, a: Args) -> np.ndarray:
    return _erf(a["x"])


@kernel("softmax")
def softmax(op: Any, a: Args) -> np.ndarray:
    return _softmax(a["x"], int(a.get("axis", -1)))


# --- normalization ---------------------------------------------------------------------


@kernel("layer_norm")
def layer_norm(op: Any, a: Args) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * gamma + beta over ``axes``; gamma has x.shape[axes]."""
    x = a["x"]
    axes = _axis_list(a.get("axes"), x.ndim)
    mean = np.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    y = centered / np.sqrt(var + a.get("epsilon", 1e-5))
    norm_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if a.get("gamma") is not None:
        y = y * np.reshape(a["gamma"], norm_shape)
    if a.get("beta") is not None:
        y = y + np.reshape(a["beta"], norm_shape)
    return y


def _channel_shape(x: np.ndarray) -> list[int]:
    return [1, x.shape[1]] + [1] * (x.ndim - 2)


@kernel("batch_norm")
def batch_norm(op: Any, a: Args) -> np.ndarray:
    """Inference batch norm of x (N, C, ...) with per-channel running mean/variance."""
    x = a["x"]
    shape = _channel_shape(x)
    y = (x - a["mean"].reshape(shape)) / np.sqrt(a["variance"].reshape(shape) + a.get("epsilon", 1e-5))
    if a.get("gamma") is not None:
        y = y * a["gamma"].reshape(shape)
    if a.get("beta") is not None:
        y = y + a["beta"].reshape(shape)
    return y


@kernel("instance_norm")
def instance_norm(op: Any, a: Args) -> np.ndarray:
    """Normalize each (sample, channel) of x (N, C, ...) over its spatial axes."""
    x = a["x"]
    axes = tuple(range(2, x.ndim))
    centered = x - np.mean(x, axis=axes, keepdims=True)
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    y = centered / np.sqrt(var + a.get("epsilon", 1e-5))
    shape = _channel_shape(x)
    if a.get("gamma") is not None:
        y = y * a["gamma"].reshape(shape)
    if a.get("beta") is not None:
        y = y + a["beta"].reshape(shape)
    return y


# --- scans -----------------------------------------------------------------------------


@kernel("cumsum")
def cumsum(op: Any, a: Args) -> np.ndarray:
    """Cumulative sum along ``axis``; ``exclusive`` shifts by one, ``reverse`` scans backwards."""
    x, axis = a["x"], int(a.get("axis", 0))
    if a.get("reverse"):
        x = np.flip(x, axis=axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if a.get("exclusive"):
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=axis)), np.delete(y, -1, axis=axis)], axis=axis)
    return np.flip(y, axis=axis) if a.get("reverse") else y
