"""Read a user's ``.pt2`` (written by ``torch.export.save``) without unpickling anything.

``torch.export.load`` unpickles: weights and constants flagged ``use_pickle`` go through
``torch.load(weights_only=False)``, opaque constants through ``pickle.loads``, the sample inputs fall back
to an unsafe load, and legacy archives hold a pickled state dict. A model file is untrusted input, so this
module opens the archive as the zip it is, checks every entry it will use before anything is deserialized,
reads tensors from their raw bytes, never reads the sample inputs, and refuses (one line naming the entry)
whatever would need arbitrary unpickling. Example inputs are built from the graph's placeholder metadata;
``flat_outputs`` gives the program returning one flat, named tuple of outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.pt2_archive import constants as names

from edgekit.errors import EdgekitError, first_line
from edgekit.quiet import quiet
from edgekit.sample_inputs import input_ranges, random_input, user_input_names

MODEL = "model"  # the program name torch.export.save gives a single ExportedProgram
WEIGHTS_CONFIG = names.WEIGHTS_CONFIG_FILENAME_FORMAT.format(MODEL)
CONSTANTS_CONFIG = names.CONSTANTS_CONFIG_FILENAME_FORMAT.format(MODEL)
MODEL_JSON = names.MODELS_FILENAME_FORMAT.format(MODEL)
# entries of formats that always hold a pickle: the pre-PT2-archive zip layout and the legacy PT2 state dicts
LEGACY_PICKLED = {
    "serialized_state_dict.json": "a pickled state dict (the older, pre-PT2-archive torch.export format)",
    "serialized_constants.json": "pickled constants (the older, pre-PT2-archive torch.export format)",
    "serialized_example_inputs.json": "pickled example inputs (the older, pre-PT2-archive torch.export format)",
    f"{names.WEIGHTS_DIR}{MODEL}.pt": "a pickled state dict (the legacy PT2 weights format)",
    f"{names.CONSTANTS_DIR}{MODEL}.pt": "pickled constants (the legacy PT2 constants format)",
}
RESAVE = (f"edgekit does not unpickle model files; re-save it with torch.export.save "
          f"(torch {torch.__version__.split('+')[0]} stores plain tensors as raw bytes)")
_TORCH_LOGGERS = ("torch", "torch.export", "torch._export", "torch.fx", "torch._dynamo")


class Archive:
    """The entries of one .pt2 zip, named without its top-level folder (as torch names them)."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, root: str) -> None:
        self.path, self.zf, self.root = path, zf, root
        self.names = {info.filename[len(root):]: info for info in zf.infolist() if not info.is_dir()}

    def has(self, name: str) -> bool:
        return name in self.names

    def read(self, name: str) -> bytes:
        """The bytes of entry ``name``; a damaged entry is an error naming it."""
        if name not in self.names:
            raise EdgekitError(f"{self.path}: entry {name} is missing; expected a file written by torch.export.save")
        try:
            return self.zf.read(self.names[name])
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise EdgekitError(f"{self.path}: entry {name} is damaged ({first_line(exc)}); "
                               "the file is truncated or corrupt") from None

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8")
        except UnicodeDecodeError:
            raise EdgekitError(f"{self.path}: entry {name} is not UTF-8 text") from None

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.text(name))
        except json.JSONDecodeError as exc:
            raise EdgekitError(f"{self.path}: entry {name} is not valid JSON ({exc})") from None


def load_pt2(path: str | Path) -> tuple[ExportedProgram, dict[str, str]]:
    """The program in a ``torch.export.save`` file and its extra files (name → text), read without pickle."""
    path = Path(path)
    with _open(path) as archive:
        _check_format(archive)
        # every entry is checked before any tensor is read: a pickled payload anywhere refuses the whole file
        weights = _payload_config(archive, WEIGHTS_CONFIG, names.WEIGHTS_DIR, "weight")
        consts = _payload_config(archive, CONSTANTS_CONFIG, names.CONSTANTS_DIR, "constant")
        program_json = archive.read(MODEL_JSON)
        state_dict = _tensors(archive, WEIGHTS_CONFIG, names.WEIGHTS_DIR, weights)
        constants = _tensors(archive, CONSTANTS_CONFIG, names.CONSTANTS_DIR, consts)
        extra = {name[len(names.EXTRA_DIR):]: archive.text(name)
                 for name in sorted(archive.names) if name.startswith(names.EXTRA_DIR)}
    return _deserialize(path, program_json, state_dict, constants), extra


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Archive]:
    unreadable = f"{path} is not a readable torch.export program"
    try:
        if path.stat().st_size == 0:
            raise EdgekitError(f"{unreadable}: the file is empty; expected a file written by torch.export.save")
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise EdgekitError(f"{unreadable}: not a zip archive (truncated, or not written by "
                           "torch.export.save)") from None
    except OSError as exc:
        raise EdgekitError(f"{unreadable}: {exc.strerror or first_line(exc)}") from None
    with zf:
        listed = [info.filename for info in zf.infolist()]
        for name in listed:
            tail = name.split("/", 1)[-1]
            for legacy, what in LEGACY_PICKLED.items():
                if legacy in (name, tail):
                    raise EdgekitError(f"{path}: entry {legacy} is {what}; {RESAVE}")
        root = listed[0].split("/", 1)[0] + "/" if listed and "/" in listed[0] else ""
        if not root or not all(name.startswith(root) for name in listed):
            raise EdgekitError(f"{unreadable}: a zip archive, but not a PT2 archive (its entries do not share one "
                               "top-level folder); expected a file written by torch.export.save")
        yield Archive(path, zf, root)


def _check_format(archive: Archive) -> None:
    """The archive's format, version and byte order are the ones this reader understands."""
    if not archive.has(names.ARCHIVE_FORMAT_PATH):
        raise EdgekitError(f"{archive.path} is not a readable torch.export program: a zip archive without the entry "
                           f"{names.ARCHIVE_FORMAT_PATH}; expected a file written by torch.export.save")
    fmt = archive.text(names.ARCHIVE_FORMAT_PATH).strip()
    if fmt != names.ARCHIVE_FORMAT_VALUE:
        raise EdgekitError(f"{archive.path}: entry {names.ARCHIVE_FORMAT_PATH} says {fmt[:40]!r}; "
                           f"expected {names.ARCHIVE_FORMAT_VALUE!r} (a file written by torch.export.save)")
    version = archive.text(names.ARCHIVE_VERSION_PATH).strip() if archive.has(names.ARCHIVE_VERSION_PATH) else "?"
    if version != names.ARCHIVE_VERSION_VALUE:
        raise EdgekitError(f"{archive.path}: entry {names.ARCHIVE_VERSION_PATH} says archive version {version[:40]!r}; "
                           f"torch {torch.__version__} reads version {names.ARCHIVE_VERSION_VALUE!r}; "
                           "re-save it with this torch's torch.export.save")
    order = archive.text("byteorder").strip() if archive.has("byteorder") else "little"
    if order != sys.byteorder:
        raise EdgekitError(f"{archive.path}: entry byteorder says {order[:40]!r}; "
                           f"this machine is {sys.byteorder}-endian")


def _payload_config(archive: Archive, config_name: str, directory: str, kind: str) -> dict[str, Any]:
    """A weights/constants config (fqn → PayloadMeta) in which every entry is a raw tensor, never a pickle."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import _dict_to_dataclass

    raw = archive.json(config_name)
    try:
        config = _dict_to_dataclass(schema.PayloadConfig, raw).config
        if not isinstance(config, dict):
            raise TypeError("no 'config' mapping")
    except Exception as exc:  # a malformed config: any type error of torch's schema parser
        raise EdgekitError(f"{archive.path}: entry {config_name} is not a torch.export payload config "
                           f"({first_line(exc)})") from None
    tensor_prefixes = (names.WEIGHT_FILENAME_PREFIX, names.TENSOR_CONSTANT_FILENAME_PREFIX)
    for fqn, meta in config.items():
        if meta.use_pickle or not meta.path_name.startswith(tensor_prefixes):
            what = "an opaque Python object" if meta.path_name.startswith(names.OPAQUE_OBJ_FILENAME_PREFIX) else (
                "a torchbind object" if meta.path_name.startswith(names.CUSTOM_OBJ_FILENAME_PREFIX) else "pickled")
            raise EdgekitError(f"{archive.path}: entry {config_name} marks {kind} {fqn!r} ({directory}"
                               f"{meta.path_name}) as {what}; {RESAVE}, with plain tensors only "
                               "(no tensor subclasses or script objects)")
    return config


def _tensors(archive: Archive, config_name: str, directory: str, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checked config, read from raw bytes."""
    flat: dict[str, torch.Tensor] = {}  # one storage per file: entries sharing a file stay aliased
    return {fqn: _tensor(archive, config_name, fqn, meta, directory + meta.path_name, flat)
            for fqn, meta in config.items()}


def _tensor(archive: Archive, config_name: str, fqn: str, meta: Any, entry: str,
            flat: dict[str, torch.Tensor]) -> torch.Tensor:
    """One tensor: the flat storage of ``entry`` viewed with the config's dtype, sizes, strides and offset."""
    from torch._export.serde import serialize as serde

    where = f"{archive.path}: entry {config_name}, {fqn!r}"
    tm = meta.tensor_meta
    try:
        dtype = serde.deserialize_scalar_type(tm.dtype)
        size, stride = serde.deserialize_size(tm.sizes), serde.deserialize_stride(tm.strides)
        offset = serde.deserialize_storage_offset(tm.storage_offset)
        strided = tm.layout == serde.schema.Layout.Strided
    except Exception as exc:  # missing metadata, an unknown dtype or a symbolic size
        raise EdgekitError(f"{where}: unreadable tensor metadata ({first_line(exc)})") from None
    if not strided or len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
        raise EdgekitError(f"{where}: only dense strided tensors with non-negative sizes and strides are supported")
    if entry not in flat:
        flat[entry] = _flat(archive, entry, dtype, size)
    storage = flat[entry]
    needed = 0 if 0 in size else offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if storage.dtype != dtype or needed > storage.numel():
        raise EdgekitError(f"{where}: entry {entry} holds {storage.numel()} {storage.dtype} values; the config needs "
                           f"{needed} {dtype} (the archive is damaged)")
    tensor = torch.as_strided(storage, size, stride, offset)
    if meta.is_param:
        return torch.nn.Parameter(tensor, requires_grad=bool(tm.requires_grad))
    return tensor


def _flat(archive: Archive, entry: str, dtype: torch.dtype, size: tuple[int, ...]) -> torch.Tensor:
    """The raw bytes of ``entry`` as a flat CPU tensor of ``dtype`` (torch writes no bytes for a fake tensor)."""
    data = archive.read(entry)
    if not data:
        return torch.zeros(size, dtype=dtype).reshape(-1)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) % itemsize:
        raise EdgekitError(f"{archive.path}: entry {entry} has {len(data)} bytes, not a whole number of {dtype} "
                           "values (the archive is damaged)")
    return torch.frombuffer(bytearray(data), dtype=dtype)


def _deserialize(path: Path, program_json: bytes, state_dict: dict[str, torch.Tensor],
                 constants: dict[str, torch.Tensor]) -> ExportedProgram:
    """torch's own JSON → ExportedProgram step, given tensors only and no sample inputs."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass

    program_json = _plain_output_types(program_json)
    try:
        with _silenced(), _no_unpickling(path, MODEL_JSON):
            serialized = _bytes_to_dataclass(schema.ExportedProgram, program_json)
            return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)
    except EdgekitError:
        raise
    except Exception as exc:  # torch's deserializer raises many types for a malformed or newer program
        raise EdgekitError(f"{path}: entry {MODEL_JSON} is not a program torch {torch.__version__} can read "
                           f"({first_line(exc)}); re-save it with this torch's torch.export.save") from None


# Two layers: the entry checks above refuse every pickled entry before torch sees the archive, and no pickled
# bytes are handed to torch at all. The guard below is defence in depth for what we did not foresee (a newer
# torch whose deserializer unpickles something new): any unpickling during the call fails loudly instead of
# running, and TORCH_FORCE_WEIGHTS_ONLY_LOAD makes even a torch.load we failed to patch weights-only.
@contextlib.contextmanager
def _no_unpickling(path: Path, entry: str) -> Iterator[None]:
    message = f"{path}: entry {entry} made torch unpickle data; {RESAVE}"

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise EdgekitError(message)

    class RefusingUnpickler(pickle.Unpickler):  # a class still, so isinstance/subclassing keep working
        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            raise EdgekitError(message)

    targets = {(pickle, "loads"): refuse, (pickle, "load"): refuse, (pickle, "Unpickler"): RefusingUnpickler,
               (torch, "load"): refuse, (torch.serialization, "load"): refuse, (torch._C, "_pickle_load_obj"): refuse}
    saved = [(obj, attr, getattr(obj, attr), guard) for (obj, attr), guard in targets.items() if hasattr(obj, attr)]
    env = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    for obj, attr, _, guard in saved:
        setattr(obj, attr, guard)
    try:
        yield
    finally:
        for obj, attr, original, _ in saved:
            setattr(obj, attr, original)
        if env is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = env


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """torch's loggers and warnings (and native prints) stay off the terminal; errors still raise."""
    levels = {name: logging.getLogger(name).level for name in _TORCH_LOGGERS}
    for name in _TORCH_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with quiet():
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def example_inputs(program: ExportedProgram, path: str | Path, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of the shapes and dtypes of the program's positional tensor inputs, from its graph metadata:
    seeded standard-normal floats; integer inputs in their valid range (``input_ranges``: token ids below the
    embedding's rows, masks as padding masks). A symbolic size takes the smallest value ≥ 1 it allows."""
    in_spec = program.call_spec.in_spec
    if in_spec is not None and in_spec.num_children == 2 and in_spec.children()[1].num_children:
        raise EdgekitError(f"{path} takes keyword inputs; export it with positional tensors: "
                           "torch.export.export(model, (x,))")
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    vals = [placeholders[s.arg.name].meta.get("val") if hasattr(s.arg, "name") else None
            for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if not vals or not all(isinstance(v, torch.Tensor) for v in vals):
        raise EdgekitError(f"{path} has no positional tensor example inputs; "
                           "export it with torch.export.export(model, (x,))")
    gen = torch.Generator().manual_seed(seed)
    sizes = _concrete_sizes(program, vals)
    names = user_input_names(program)
    return tuple(random_input(size, v.dtype, rng, name, gen)
                 for v, size, rng, name in zip(vals, sizes, input_ranges(program), names))


def _concrete_sizes(program: ExportedProgram, vals: list[torch.Tensor]) -> list[tuple[int, ...]]:
    """Each input's shape with every symbol set to the smallest value ≥ 1 in its range constraint."""
    ranges = {str(sym): vr for sym, vr in program.range_constraints.items()}
    sizes = []
    for v in vals:
        dims = []
        for d in v.shape:
            if isinstance(d, int):
                dims.append(d)
                continue
            expr = d.node.expr
            values = {s: _smallest(ranges.get(str(s))) for s in expr.free_symbols}
            dims.append(int(expr.subs(values)))
        sizes.append(tuple(dims))
    return sizes


def _smallest(vr: Any) -> int:
    try:
        low = int(vr.lower)
    except (AttributeError, TypeError, ValueError, OverflowError):
        low = 1
    return max(low, 1)



# ---- outputs: one flat tuple, named from the output pytree -----------------------------------------------------
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # an I/O name every format accepts (Core ML, TFLite, ONNX)


def flat_outputs(program: ExportedProgram) -> tuple[ExportedProgram, tuple[str, ...]]:
    """The program returning its outputs as one flat tuple (the same graph, weights and inputs: only the output
    spec changes; a program whose outputs are already a tensor or a tuple of tensors is returned as it is) and
    one name per output from its pytree: dict keys and ModelOutput / namedtuple fields (nested ones joined with
    "_"), ``output_0``, ``output_1``, ... for positions, ``output`` for a single tensor."""
    entries = list(program.module_call_graph)
    root = next((i for i, e in enumerate(entries) if e.fqn == "" and e.signature is not None), None)
    if root is None:
        return program, safe_names(list(default_output_names(_user_outputs(program))), user_input_names(program))
    spec = entries[root].signature.out_spec
    names = output_names_of(spec, user_input_names(program))
    if spec.is_leaf() or (spec.type is tuple and all(c.is_leaf() for c in spec.children())):
        return program, names
    flat_spec = pytree.tree_structure(tuple(range(spec.num_leaves)))
    entries[root] = dataclasses.replace(
        entries[root], signature=dataclasses.replace(entries[root].signature, out_spec=flat_spec))
    flat = ExportedProgram(
        root=program.graph_module, graph=program.graph, graph_signature=program.graph_signature,
        state_dict=program.state_dict, range_constraints=program.range_constraints, module_call_graph=entries,
        example_inputs=program.example_inputs, constants=program.constants, verifiers=program.verifiers)
    return flat, names


def output_names_of(spec: pytree.TreeSpec, taken: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A valid name per leaf of an output pytree (see ``flat_outputs``), unique and none of ``taken``."""
    if spec.is_leaf() or (spec.type in (tuple, list) and all(c.is_leaf() for c in spec.children())):
        return safe_names(list(default_output_names(spec.num_leaves)), taken)
    raw = ["_".join(("output", *p) if p[0][:1].isdigit() else p) for p in _leaf_paths(spec, ())]
    return safe_names(raw, taken)


def default_output_names(count: int) -> tuple[str, ...]:
    """``output`` for a model's only output, ``output_0``, ``output_1``, ... for several."""
    return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))


def safe_names(raw: list[str], taken: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Names made valid in every format (``NAME_PATTERN``: other characters become "_") and unique (a repeat,
    or one in ``taken``, gets "_2", "_3", ...)."""
    used, names = set(taken), []
    for text in raw:
        name = re.sub(r"[^A-Za-z0-9_]", "_", text) or "output"
        name = name if NAME_PATTERN.fullmatch(name) else f"output_{name}"
        unique, n = name, 2
        while unique in used:
            unique, n = f"{name}_{n}", n + 1
        used.add(unique)
        names.append(unique)
    return tuple(names)


def _leaf_paths(spec: pytree.TreeSpec, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    if spec.is_leaf():
        return [prefix]
    return [path for key, child in zip(_child_keys(spec), spec.children())
            for path in _leaf_paths(child, (*prefix, key))]


def _child_keys(spec: pytree.TreeSpec) -> list[str]:
    """A pytree node's child names: dict / ModelOutput keys (its context), namedtuple fields, else positions."""
    n, context = spec.num_children, spec.context
    if isinstance(context, (list, tuple)) and len(context) == n:
        return [str(k) for k in context]
    fields = getattr(context, "_fields", None)  # a namedtuple's context is its class
    if isinstance(fields, tuple) and len(fields) == n:
        return list(fields)
    return [str(i) for i in range(n)]


def _user_outputs(program: ExportedProgram) -> int:
    return len([s for s in program.graph_signature.output_specs if s.kind.name == "USER_OUTPUT"])


def _plain_output_types(program_json: bytes) -> bytes:
    """The program's JSON with each output pytree node of a type this process has not registered (transformers'
    ModelOutput classes when transformers is not imported) and whose context is its keys read as a dict of those
    keys: the program loads, and its outputs keep their names. Anything else is left for torch to judge."""
    try:
        doc = json.loads(program_json)
        entries = doc["graph_module"]["module_call_graph"]
    except (ValueError, KeyError, TypeError):
        return program_json
    changed = False
    for entry in entries if isinstance(entries, list) else ():
        signature = entry.get("signature") if isinstance(entry, dict) else None
        if isinstance(signature, dict) and isinstance(signature.get("out_spec"), str):
            text = _plain_spec(signature["out_spec"])
            changed = changed or text != signature["out_spec"]
            signature["out_spec"] = text
    return json.dumps(doc).encode() if changed else program_json


def _plain_spec(text: str) -> str:
    try:
        protocol, node = json.loads(text)
    except (ValueError, TypeError):
        return text
    return json.dumps([protocol, node]) if _as_dicts(node) else text


def _as_dicts(node: Any) -> bool:
    """Rewrites unregistered keyed nodes below ``node`` to dicts, in place; whether any was."""
    if not isinstance(node, dict):
        return False
    children = node.get("children_spec") or []
    changed = False
    if node.get("type") is not None and node["type"] not in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
        try:
            keys = json.loads(node.get("context") or "null")
        except (ValueError, TypeError):
            keys = None
        if isinstance(keys, list) and len(keys) == len(children) and all(isinstance(k, str) for k in keys):
            node["type"], changed = "builtins.dict", True
    for child in children if isinstance(children, list) else ():
        changed = _as_dicts(child) or changed
    return changed
