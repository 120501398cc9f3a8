"""Kernels for compressed-weight ops (``constexpr_*``): dequantize, de-palettize, de-sparsify.

These ops only ever see constants, so the evaluator runs them once per program and keeps
the dense weight. Each kernel follows the op's MIL definition (coremltools'
``ops/defs/iOS16/constexpr_ops.py`` and ``iOS18/compression.py`` docstrings):

- ``constexpr_affine_dequantize`` (iOS16): ``scale * (q - zero_point)`` along ``axis``
- ``constexpr_blockwise_shift_scale`` (iOS18): the same per block, block = data / scale shape
- ``constexpr_lut_to_dense``: iOS16 packs n-bit indices LSB first into bytes and has one
  table; iOS18 has typed indices, one table per block and optional vector entries
- ``constexpr_sparse_to_dense``: a bit mask says where the non-zero values go
- ``constexpr_cast``: fp16 → fp32

Joint-compression ops without a kernel here (``constexpr_lut_to_sparse``,
``constexpr_sparse_blockwise_shift_scale``) fall back to coremltools'
``materialized_val_inference`` in the evaluator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.converters.coreml.mil_reference.precision import var_spec
from edgekit.converters.coreml.mil_reference.registry import IOS16, IOS17, IOS18, MilEvaluationError, kernel

Args = dict[str, Any]


def _along_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Reshape a scalar or vector parameter to broadcast along ``axis`` of a rank-``rank`` tensor."""
    param = np.asarray(param)
    if param.ndim == 0:
        return param
    shape = [1] * rank
    shape[axis % rank] = param.shape[0]
    return param.reshape(shape)


def _unpack_lsb_first(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unsigned n-bit fields packed one byte at a time, least significant bit first."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8), bitorder="little")
    if bits.size < nbits * count:
        raise MilEvaluationError(f"packed data has {bits.size} bits, {count} {nbits}-bit fields need {nbits * count}")
    fields = bits[: nbits * count].reshape(count, nbits).astype(np.uint32)
    return (fields << np.arange(nbits, dtype=np.uint32)).sum(axis=1)


def _block_repeat(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Repeat each entry of ``param`` over its block so that it takes ``shape``."""
    for axis, (size, n) in enumerate(zip(shape, param.shape)):
        if size % n:
            raise MilEvaluationError(f"dimension {axis} of size {size} is not a multiple of {n} blocks")
        if size != n:
            param = np.repeat(param, size // n, axis=axis)
    return param


@kernel("constexpr_affine_dequantize", opset=IOS16)
def affine_dequantize(op: Any, a: Args) -> np.ndarray:
    """scale * (quantized_data - zero_point), computed in fp32 and rounded once."""
    q = np.asarray(a["quantized_data"])
    axis = int(a["axis"])
    zero = _along_axis(np.asarray(a["zero_point"], np.float32), q.ndim, axis)
    scale = _along_axis(np.asarray(a["scale"], np.float32), q.ndim, axis)
    return (q.astype(np.float32) - zero) * scale


@kernel("constexpr_blockwise_shift_scale", opset=IOS18)
def blockwise_shift_scale(op: Any, a: Args) -> np.ndarray:
    """scale * (data - offset) with one scale/offset per block, in the scale's dtype."""
    data = np.asarray(a["data"]).astype(np.float32)
    scale = _block_repeat(np.asarray(a["scale"], np.float32), data.shape)
    round_step = var_spec(op.scale).is_fp16  # MIL computes in the scale's dtype (DstT)
    if a.get("offset") is not None:
        data = data - _block_repeat(np.asarray(a["offset"], np.float32), data.shape)
        if round_step:
            data = data.astype(np.float16).astype(np.float32)
    return data * scale


@kernel("constexpr_lut_to_dense", opset=IOS16)
def lut_to_dense_ios16(op: Any, a: Args) -> np.ndarray:
    """One table of 2**n entries; n-bit indices packed LSB first; output ``shape``."""
    lut = np.asarray(a["lut"]).reshape(-1)
    nbits = int(np.log2(lut.size))
    shape = tuple(int(s) for s in np.asarray(a["shape"]))
    indices = _unpack_lsb_first(a["indices"], nbits, int(np.prod(shape)))
    return lut[indices].reshape(shape)


def _group_ids(indices_shape: tuple[int, ...], groups: tuple[int, ...]) -> np.ndarray:
    """Flat index of the lookup table that each element of the indices tensor uses."""
    ids = np.zeros(indices_shape, dtype=np.int64)
    for axis, (size, n) in enumerate(zip(indices_shape, groups)):
        if size % n:
            raise MilEvaluationError(f"indices dimension {axis} ({size}) is not a multiple of {n} tables")
        along = np.arange(size) // (size // n)
        shape = [1] * len(indices_shape)
        shape[axis] = size
        ids = ids * n + along.reshape(shape)
    return ids


@kernel("constexpr_lut_to_dense", opset=IOS18)
def lut_to_dense_ios18(op: Any, a: Args) -> np.ndarray:
    """lut (*tables, 2**n, vector): per-block tables; vectors fill ``vector_axis``."""
    indices = np.asarray(a["indices"]).astype(np.int64)
    lut = np.asarray(a["lut"])
    groups, palettes, vector = lut.shape[:-2], lut.shape[-2], lut.shape[-1]
    tables = lut.reshape(-1, palettes, vector)
    out = tables[_group_ids(indices.shape, groups), indices]  # (*indices.shape, vector)
    if vector == 1:
        return out[..., 0]
    axis = int(a["vector_axis"]) % indices.ndim
    out = np.moveaxis(out, -1, axis + 1)
    shape = list(indices.shape)
    shape[axis] *= vector
    return out.reshape(shape)


@kernel("constexpr_sparse_to_dense", opset=IOS16)
def sparse_to_dense_ios16(op: Any, a: Args) -> np.ndarray:
    """Bit mask (LSB first) marks the non-zero positions, filled in row-major order."""
    shape = tuple(int(s) for s in np.asarray(a["shape"]))
    mask = _unpack_lsb_first(a["mask"], 1, int(np.prod(shape))).astype(bool)
    return _scatter(np.asarray(a["nonzero_data"]), mask).reshape(shape)


@kernel("constexpr_sparse_to_dense", opset=IOS18)
def sparse_to_dense_ios18(op: Any, a: Args) -> np.ndarray:
    """A uint1 mask of the output's shape marks the non-zero positions."""
    mask = np.asarray(a["mask"]) != 0
    return _scatter(np.asarray(a["nonzero_data"]), mask)


def _scatter(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if int(mask.sum()) != values.size:
        raise MilEvaluationError(f"sparse mask has {int(mask.sum())} set bits but {values.size} values")
    dense = np.zeros(mask.shape, dtype=values.dtype)
    dense[mask] = values
    return dense


@kernel("constexpr_cast", opset=IOS16)
def constexpr_cast(op: Any, a: Args) -> np.ndarray:
    """Cast a constant to ``output_dtype`` (the evaluator applies the declared dtype)."""
    return np.asarray(a["source_val"])


# --- activation quantization (iOS17 ``quantize`` / ``dequantize``, W8A8 programs) ---------------


def _affine_params(a: Args, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point broadcast along ``axis`` (scalars when per-tensor; zero point 0 if absent)."""
    axis = a.get("axis")
    axis = 0 if axis is None else int(axis)
    scale = _along_axis(np.asarray(a["scale"], np.float32), rank, axis)
    zero = a.get("zero_point")
    zero = np.float32(0) if zero is None else _along_axis(np.asarray(zero, np.float32), rank, axis)
    return scale, zero


@kernel("quantize", opset=IOS17)
def quantize(op: Any, a: Args) -> np.ndarray:
    """clip(round(x / scale) + zero_point) in int8 or uint8 (round half to even)."""
    x = np.asarray(a["input"], np.float32)
    scale, zero = _affine_params(a, x.ndim)
    dtype = np.dtype(str(a["output_dtype"]))
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero, info.min, info.max).astype(dtype)


@kernel("dequantize", opset=IOS17)
def dequantize(op: Any, a: Args) -> np.ndarray:
    """(q - zero_point) * scale, in the scale's float type."""
    q = np.asarray(a["input"]).astype(np.float32)
    scale, zero = _affine_params(a, q.ndim)
    return (q - zero) * scale
