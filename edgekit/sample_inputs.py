"""A model's inputs: the values each may take, seeded random ones, and real ones from a ``.npz`` file.

Integer inputs of a ``torch.export`` program are followed to the table they index (``input_ranges``): token ids
take values below the embedding's rows, an integer input that indexes nothing is a 0/1 mask. Random inputs
(``random_input``) respect that; real ones come from ``--sample-inputs`` (verification) and int8 calibration.

A ``.npz`` (``read_sample_inputs``) is what ``numpy.savez(path, input_ids=..., attention_mask=...)`` writes:
one array per model input, keyed by the input's name. Samples are stacked on the batch axis: for an input
of shape (1, 16) the array is (N, 16), sample i being ``array[i:i+1]`` ((N, 1, 16) is refused); an input
whose first axis is not a batch axis of 1 (shape (16,)) takes (N, 16), sample i being ``array[i]``. An array
of exactly the input's shape is one sample. Every key holds the same N.

Dtypes are kept and checked, never guessed: an integer input takes an integer array (a bool input a bool
array), cast to the model's integer dtype only when every value fits, and token ids must index inside the
embedding they feed; a float input takes a float array (cast to the model's float dtype), with no NaN or inf.
Reading is cheap (no model runs), so callers check the file before any work starts. Nothing is unpickled.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from edgekit.errors import EdgekitError, first_line
from edgekit.graph import ModelSource

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries, an empty zip
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


# ---- integer inputs: which table each one indexes -------------------------------------------------------------
# ops that pass an integer tensor's values through unchanged (layout, dtype, copies), followed to the op it indexes
_PASS_THROUGH = frozenset({
    "view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "expand", "expand_as", "slice", "select", "narrow",
    "to", "_to_copy", "clone", "contiguous", "flatten", "alias", "detach", "lift_fresh_copy", "type_as", "repeat",
    "permute", "transpose", "t", "view_copy", "expand_copy", "slice_copy", "unsqueeze_copy", "squeeze_copy"})


def input_ranges(program: ExportedProgram) -> tuple[tuple[int, int] | None, ...]:
    """Per user input, the integer values [low, high) it may take: (0, rows) for one that indexes an
    embedding (or an ``index_select`` / ``index`` of a weight), (0, 2) for a bool or an integer input that
    indexes nothing (a mask); None for a float input."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    ranges: list[tuple[int, int] | None] = []
    for name, rows in zip(user_input_names(program), embedding_rows(program)):
        val = placeholders[name].meta.get("val")
        floating = isinstance(val, torch.Tensor) and (val.dtype.is_floating_point or val.dtype.is_complex)
        ranges.append(None if floating else (0, rows) if rows is not None else (0, 2))
    return tuple(ranges)


def embedding_rows(program: ExportedProgram) -> tuple[int | None, ...]:
    """Per user input, the rows of the smallest table it indexes (``aten.embedding``, ``index_select``,
    ``index``), followed through value-preserving ops; None where it indexes none."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    return tuple(_rows_indexed(program, placeholders[name]) for name in user_input_names(program))


def _rows_indexed(program: ExportedProgram, start: torch.fx.Node) -> int | None:
    found: list[int] = []
    todo, seen = [start], {start}
    while todo:
        node = todo.pop()
        for user in node.users:
            op = _op_name(user)
            rows = _table_rows(program, user, node, op)
            if rows is not None:
                found.append(rows)
            elif op in _PASS_THROUGH and user.args and user.args[0] is node and user not in seen:
                seen.add(user)
                todo.append(user)
    return min(found) if found else None


def _op_name(node: torch.fx.Node) -> str:
    packet = getattr(node.target, "overloadpacket", None)
    return packet.__name__ if packet is not None else ""


def _table_rows(program: ExportedProgram, user: torch.fx.Node, index: torch.fx.Node, op: str) -> int | None:
    """The size of the axis ``index`` selects along when ``user`` indexes a table with it, else None."""
    args = user.args
    if op == "embedding" and len(args) > 1 and args[1] is index:
        return _axis_size(program, args[0], 0)
    if op == "index_select" and len(args) > 2 and args[2] is index and isinstance(args[1], int):
        return _axis_size(program, args[0], args[1])
    if op == "index" and len(args) > 1 and isinstance(args[1], (list, tuple)) and index in args[1]:
        return _axis_size(program, args[0], list(args[1]).index(index))
    return None


def _axis_size(program: ExportedProgram, table: Any, axis: int) -> int | None:
    """The static size of ``axis`` of a table: a parameter, buffer or constant of the program (from its state
    dict), else the node's traced shape."""
    sig = program.graph_signature
    name = getattr(table, "name", None)
    fqn = sig.inputs_to_parameters.get(name) or sig.inputs_to_buffers.get(name) or (
        sig.inputs_to_lifted_tensor_constants.get(name))
    tensor = program.state_dict.get(fqn, program.constants.get(fqn)) if fqn else None
    if tensor is None and isinstance(table, torch.fx.Node):
        tensor = table.meta.get("val")
    shape = getattr(tensor, "shape", None)
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    size = shape[axis]
    return size if isinstance(size, int) and size > 0 else None



def user_input_names(program: ExportedProgram) -> tuple[str, ...]:
    """The names of the program's user inputs (its forward's argument names), in order."""
    return tuple(s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT")



# ---- random inputs -------------------------------------------------------------------------------------------
def random_input(shape: tuple[int, ...], dtype: torch.dtype, value_range: tuple[int, int] | None, name: str,
                 gen: torch.Generator) -> torch.Tensor:
    """One seeded input: standard-normal floats; integers uniform in ``value_range`` (token ids); a bool,
    a 0/1 range or (range unknown) a name with "mask" as a padding mask; 0/1 integers when nothing is known."""
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=dtype)
    masklike = dtype == torch.bool or (value_range is not None and value_range[1] - value_range[0] <= 2) or (
        value_range is None and "mask" in name.lower())
    if masklike:
        return padding_mask(shape, dtype, gen)
    low, high = value_range or (0, 2)
    return torch.randint(low, high, shape, generator=gen, dtype=dtype)


def padding_mask(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Ones, then zeros after a random length ≥ 1 along the last axis (a valid attention/padding mask)."""
    if not shape or shape[-1] == 0:
        return torch.ones(shape, dtype=dtype)
    length = int(torch.randint(1, shape[-1] + 1, (), generator=gen))
    return (torch.arange(shape[-1]) < length).expand(shape).to(dtype).clone()



# ---- real inputs from a .npz ---------------------------------------------------------------------------------
def read_sample_inputs(path: str | Path, source: ModelSource) -> list[tuple[torch.Tensor, ...]]:
    """The samples of a ``.npz`` keyed by ``source``'s input names: one batch-1 tuple per sample, in the
    model's input order, each tensor of the model's shape and dtype. Any problem is a one-line EdgekitError."""
    path = Path(path)
    arrays = _read_npz(path, source.input_names)
    bounds = index_bounds(source)
    columns = {name: _column(path, name, arrays[name], example, rows)
               for name, example, rows in zip(source.input_names, source.example_inputs, bounds)}
    counts = {name: len(column) for name, column in columns.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise EdgekitError(f"{path}: the inputs hold different numbers of samples ({listed}); "
                           "give every input the same N along its first axis")
    return list(zip(*columns.values()))


def index_bounds(source: ModelSource) -> tuple[int | None, ...]:
    """Per input, the number of rows of the table it indexes (token ids must be below it), None if unknown.

    A .pt2's come from its graph (the embedding each input reaches); other sources' from ``input_ranges``
    where it is set (a family's vocabulary)."""
    if source.exported is not None and source.kind == "pt2":
        return embedding_rows(source.exported)  # a 0/1 mask range is a guess, not a bound: not checked
    ranges = source.input_ranges or (None,) * len(source.input_names)
    return tuple(r[1] if r is not None and r[0] == 0 else None for r in ranges)


def _read_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of the file, exactly one per input name."""
    _check_is_npz(path)
    expected = ", ".join(names)
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise EdgekitError(f"{path} is not a readable .npz file ({first_line(exc)}); expected numpy.savez "
                           f"arrays keyed by input name ({expected})") from None
    with archive:
        keys = list(archive.files)
        missing = [n for n in names if n not in keys]
        unknown = [k for k in keys if k not in names]
        if missing:
            raise EdgekitError(f"{path} has no array {missing[0]!r}; give one array per model input, "
                               f"keyed {expected}")
        if unknown:
            raise EdgekitError(f"{path}: key {unknown[0]!r} is not an input of the model; "
                               f"its inputs are {expected}")
        return {name: _entry(path, archive, name) for name in names}


def _check_is_npz(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise EdgekitError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not head:
        raise EdgekitError(f"{path} is empty; expected a .npz (numpy.savez) with one array per model input")
    if head not in _ZIP_MAGIC:
        what = "a single .npy array" if head == b"\x93NUM" else "not a .npz archive"
        raise EdgekitError(f"{path} is {what}; expected a .npz (numpy.savez) keyed by input name")


def _entry(path: Path, archive: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        array = archive[name]
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise EdgekitError(f"{path}: {name} holds Python objects, which edgekit does not unpickle; "
                               "save plain numeric arrays") from None
        raise EdgekitError(f"{path}: {name} is damaged ({first_line(exc)})") from None
    except _READ_ERRORS as exc:
        raise EdgekitError(f"{path}: {name} is damaged ({first_line(exc)}); the file is truncated or corrupt") \
            from None
    if not isinstance(array, np.ndarray):
        raise EdgekitError(f"{path}: {name} is not an array")
    return array


def _column(path: Path, name: str, array: np.ndarray, example: torch.Tensor,
            rows: int | None) -> list[torch.Tensor]:
    """One input's samples: checked, converted to the model's dtype, split into batch-1 tensors."""
    where = f"{path}: {name}"
    shape = tuple(example.shape)
    tensor = _convert(where, array, example.dtype, rows)
    if tuple(array.shape) == shape:
        return [tensor]
    if shape[:1] == (1,) and array.ndim == len(shape) and tuple(array.shape[1:]) == shape[1:]:
        samples = [tensor[i:i + 1] for i in range(array.shape[0])]
    elif shape[:1] != (1,) and array.ndim == len(shape) + 1 and tuple(array.shape[1:]) == shape:
        samples = [tensor[i] for i in range(array.shape[0])]
    else:
        stacked = (("N", *shape[1:]) if shape[:1] == (1,) else ("N", *shape))
        raise EdgekitError(f"{where} has shape {tuple(array.shape)}; the model's input is {shape}, so give "
                           f"({', '.join(map(str, stacked))}): N samples stacked on the first axis")
    if not samples:
        raise EdgekitError(f"{where} holds no samples (its first axis is 0); give at least one")
    return samples


def _convert(where: str, array: np.ndarray, dtype: torch.dtype, rows: int | None) -> torch.Tensor:
    """The array as a tensor of the model's dtype, refused where its kind or values do not fit."""
    kind = array.dtype.kind
    if dtype == torch.bool:
        if kind != "b":
            raise EdgekitError(f"{where} holds {array.dtype} values; the model's input is bool: give a bool array")
        return torch.from_numpy(np.array(array, dtype=np.bool_))
    if dtype.is_floating_point:
        return _float(where, array, dtype)
    if dtype.is_complex or kind not in "iu":
        raise EdgekitError(f"{where} holds {array.dtype} values; the model's input is {_name(dtype)} "
                           "(integers, e.g. token ids or a 0/1 mask): give an integer array")
    if array.size:
        _check_fits(where, array, dtype, rows)
    return torch.from_numpy(array.astype(np.int64)).to(dtype)


def _float(where: str, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if array.dtype.kind != "f":
        raise EdgekitError(f"{where} holds {array.dtype} values; the model's input is {_name(dtype)}: "
                           "give a float array")
    bad = ~np.isfinite(array)
    if bad.any():
        raise EdgekitError(f"{where} holds {int(bad.sum())} NaN/inf values (first at index "
                           f"{tuple(int(i) for i in np.argwhere(bad)[0])}); give finite values")
    tensor = torch.from_numpy(np.array(array, dtype=np.float64 if array.dtype == np.float64 else np.float32))
    cast = tensor.to(dtype)
    if not torch.isfinite(cast).all():
        raise EdgekitError(f"{where} holds values beyond the range of the model's {_name(dtype)} "
                           f"(largest |x| = {float(np.abs(array).max()):g})")
    return cast


def _check_fits(where: str, array: np.ndarray, dtype: torch.dtype, rows: int | None) -> None:
    """Integer values fit the model's dtype and index inside the embedding they feed."""
    low, high = int(array.min()), int(array.max())
    info = torch.iinfo(dtype)
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise EdgekitError(f"{where} holds {bad}, which does not fit the model's {_name(dtype)} "
                           f"([{info.min}, {info.max}])")
    if rows is not None and (low < 0 or high >= rows):
        bad = low if low < 0 else high
        raise EdgekitError(f"{where} holds {bad}, outside the embedding it indexes ({rows} rows); "
                           f"give values in [0, {rows})")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")

