"""A LiteRT model's inputs and outputs as the app sees them: the model's own names, and values cast to
the dtype each input tensor stores.

litert-torch names a signature's inputs after the positional arguments (``args_0``, ``args_1``, ...) and
its outputs after the output pytree (``output_0``, ... for a tuple; a dict's keys), and each I/O tensor
``serving_default_args_0`` / ``serving_default_output_0_output``. Names given as keyword arguments must be
Python parameters that ``torch.export`` can generate code for (``self``, ``lambda`` cannot be), so edgekit
converts positionally and renames afterwards, in the flatbuffer: each signature key and I/O tensor takes
the model's name of the same position (``name_io``). LiteRT stores int64 inputs as int32 (litert-torch's
``enable_x64=False``, the default that phones' delegates need); ``feed_value`` casts what is fed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError

IONames = tuple[tuple[str, ...], tuple[str, ...]]  # (input names, output names) of one signature, in model order


def name_io(model: Any, names: dict[str, IONames]) -> None:
    """Rename, in a ``schema.ModelT``, the inputs and outputs of each signature named in ``names``: its
    signature keys and its subgraph's I/O tensors take the model's names (position for position).
    A tensor that is both an input and an output (a pass-through) keeps the input's name."""
    for signature in model.signatureDefs or []:
        key = _text(signature.signatureKey)
        if key not in names:
            continue
        subgraph = model.subgraphs[signature.subgraphIndex or 0]
        inputs, outputs = names[key]
        for entries, order, wanted in ((signature.outputs, subgraph.outputs, outputs),
                                       (signature.inputs, subgraph.inputs, inputs)):
            for entry, position in zip(entries or [], positions(entries or [], order)):
                if position < len(wanted):
                    entry.name = wanted[position].encode()
                    subgraph.tensors[entry.tensorIndex].name = wanted[position].encode()


def positions(entries: list[Any], order: Any) -> list[int]:
    """Each signature entry's position among its subgraph's inputs (or outputs) ``order``; entries on
    the same tensor (an output returned twice) take its positions in turn."""
    taken: set[int] = set()
    found = []
    for entry in entries:
        spots = [p for p, index in enumerate(list(order)) if index == entry.tensorIndex and p not in taken]
        position = spots[0] if spots else len(order) + len(found)
        taken.add(position)
        found.append(position)
    return found


def signature_order(model: Any) -> dict[str, IONames]:
    """Per signature of a ``schema.Model`` (read-only API): its input and output keys in model order."""
    order = {}
    for s in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(s)
        subgraph = model.Subgraphs(signature.SubgraphIndex())
        ins = [signature.Inputs(i) for i in range(signature.InputsLength())]
        outs = [signature.Outputs(i) for i in range(signature.OutputsLength())]
        order[_text(signature.SignatureKey())] = (
            _in_order(ins, subgraph.InputsAsNumpy()), _in_order(outs, subgraph.OutputsAsNumpy()))
    return order


def _in_order(entries: list[Any], order: Any) -> tuple[str, ...]:
    views = [_Entry(_text(e.Name()), e.TensorIndex()) for e in entries]
    placed = sorted(zip(positions(views, order), views), key=lambda pair: pair[0])
    return tuple(entry.name for _, entry in placed)


class _Entry:
    """A signature entry read from the flatbuffer, shaped like the object API's ``TensorMapT``."""

    def __init__(self, name: str, tensor_index: int) -> None:
        self.name, self.tensorIndex = name, tensor_index


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def feed_value(detail: dict[str, Any], value: np.ndarray) -> np.ndarray:
    """``value`` as input tensor ``detail`` (the interpreter's tensor details) stores it: an integer or
    bool value cast to the tensor's integer or bool dtype (LiteRT's int32 for int64 token ids), refused
    with one line when a value does not fit; a float value quantized with the tensor's scale and zero
    point (static int8 inputs); anything else unchanged (the interpreter names a mismatch)."""
    value = np.asarray(value)
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale and value.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)
    if value.dtype == dtype or value.dtype.kind not in "iub" or dtype.kind not in "iub":
        return value
    if dtype.kind == "b":
        return value.astype(dtype)
    return _fit_integers(value, dtype, detail.get("name", "?"))


def _fit_integers(value: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    info = np.iinfo(dtype)
    if value.size and value.dtype.kind != "b":
        low, high = value.min(), value.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise EdgekitError(f"input {name}: value {bad} does not fit the {dtype.name} this LiteRT model "
                               f"stores; feed values in [{info.min}, {info.max}]")
    return value.astype(dtype)
