"""Will a Core ML artifact run on the Neural Engine? The lint (written rules, any OS) and, on macOS, Core ML's own
``MLComputePlan``.

The lint walks the saved ML Program's protobuf (no MIL rebuild, no weights read but the few constants a rule
asks for: a few milliseconds for a small model) and judges each executed op with ``ane_rules.ANE_RULES``.
On a Mac that can compile the model, ``MLComputePlan`` says which device Core ML prefers for each op; that is
the report (``source="MLComputePlan"``), and the lint's prediction is kept beside it in ``notes``. The two are
meant to disagree in known ways (docs/architecture.md, "Placement")."""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.converters.coreml._compat import blob_reader
from edgekit.converters.coreml.ane_rules import ANE_RULES, RULE_ORDER, OpView, Tensor
from edgekit.errors import EdgekitError, first_line, require
from edgekit.placement import OpPlacement, Placement, Where
from edgekit.quiet import quiet

WEIGHTS = Path("Data/com.apple.CoreML/weights")  # inside an .mlpackage
MAX_READ = 1 << 22  # elements: a constant larger than this is not read for a rule (cost), and that is noted
NOT_JUDGED = ("not judged from the program: the chip generation and OS version, which tensors stay in L2, kernel "
              "sizes' cost, and where Core ML cuts the graph (coremltools#1780: 'no static documentation'; "
              "MLComputePlan on a Mac measures it)")
_NUMPY = {"FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64, "INT8": np.int8, "UINT8": np.uint8,
          "INT16": np.int16, "UINT16": np.uint16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def ane_placement(path: Path) -> Placement:
    """The Neural Engine report of the .mlpackage at ``path``: measured on macOS, else the lint."""
    lint = lint_package(path)
    why_not = compute_plan_unavailable()
    if why_not is not None or lint.not_run is not None:
        lint.notes.append(f"MLComputePlan not run: {why_not or lint.not_run}")
        return lint
    try:
        return measured_placement(path, lint)
    except Exception as exc:  # noqa: BLE001 - Core ML's compiler or plan failed: the lint still stands, said so
        lint.notes.append(f"MLComputePlan failed: {type(exc).__name__}: {first_line(exc, 200, '(no message)')}")
        return lint


# --- the program, as the rules see it ----------------------------------------------------------------------


class ProgramView:
    """One function of a saved ML Program: the executed ops in order, every value's type, the constants."""

    def __init__(self, spec: Any, package: Path, function: str) -> None:
        fn = spec.mlProgram.functions[function]
        block = fn.block_specializations[fn.opset]
        self.function, self.opset = function, fn.opset
        self.function_inputs = {i.name for i in fn.inputs}
        self.function_outputs = set(block.outputs)
        self._types = {i.name: _tensor(i.name, i.type) for i in fn.inputs}
        self._consts: dict[str, Any] = {}  # name → MIL Value proto (None: a constexpr_* op, compressed)
        self.ops: list[Any] = []
        self.nested = 0  # ops inside control-flow blocks (not linted)
        for op in block.operations:
            for out in op.outputs:
                self._types[out.name] = _tensor(out.name, out.type)
            if op.type == "const":
                self._consts[op.outputs[0].name] = op.attributes["val"]
            elif op.type.startswith("constexpr_"):  # weight decompression, done when the model loads
                self._consts.update({o.name: None for o in op.outputs})
            else:
                self.ops.append(op)
                self.nested += sum(len(b.operations) for b in op.blocks)
        self._weights, self._readers = package / WEIGHTS, {}
        self.unread: list[str] = []  # constants too large to read

    def tensor(self, name: str) -> Tensor | None:
        return self._types.get(name)

    def is_const(self, name: str) -> bool:
        return name in self._consts

    def value(self, name: str) -> np.ndarray | None:
        """A constant's value (immediate or from the weight file); None when computed or compressed."""
        spec, tensor = self._consts.get(name), self._types.get(name)
        if spec is None or tensor is None or tensor.dtype not in _NUMPY:
            return None
        kind = spec.WhichOneof("value")
        if kind == "immediateValue":
            return _immediate(spec.immediateValue.tensor, tensor.dtype)
        if kind == "blobFileValue" and tensor.dtype in ("FLOAT16", "FLOAT32"):
            return self._blob(name, spec.blobFileValue, tensor)
        return None

    def float_value(self, name: str) -> np.ndarray | None:
        tensor = self._types.get(name)
        return self.value(name) if tensor is not None and tensor.dtype.startswith("FLOAT") else None

    def _blob(self, name: str, blob: Any, tensor: Tensor) -> np.ndarray | None:
        if not tensor.static or int(np.prod(tensor.shape, dtype=np.int64)) > MAX_READ:
            self.unread.append(name)
            return None
        file = str(self._weights / blob.fileName.split("/")[-1])
        if file not in self._readers:
            self._readers[file] = blob_reader(file)
        reader = self._readers[file]
        if tensor.dtype == "FLOAT16":
            return np.frombuffer(reader.read_fp16_data(blob.offset).tobytes(), np.float16)
        return np.asarray(reader.read_float_data(blob.offset), np.float32)

    def view(self, op: Any) -> OpView:
        inputs = {p: [a.name for a in arg.arguments if a.WhichOneof("binding") == "name"]
                  for p, arg in op.inputs.items()}
        outputs = [self._types[o.name] for o in op.outputs]
        return OpView(op.type, op.outputs[0].name if op.outputs else op.type, inputs, outputs, self)


def _tensor(name: str, value_type: Any) -> Tensor:
    """The dtype name and static shape of a MIL ValueType (a state's wrapped tensor for a state)."""
    from coremltools.proto import MIL_pb2

    kind = value_type.WhichOneof("type")
    tt = value_type.stateType.wrappedType.tensorType if kind == "stateType" else value_type.tensorType
    if kind not in ("tensorType", "stateType"):
        return Tensor(name, kind or "UNKNOWN", ())
    shape = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions)
    return Tensor(name, MIL_pb2.DataType.Name(tt.dataType), shape)


def _immediate(tensor: Any, dtype: str) -> np.ndarray | None:
    """An immediate tensor value as an array (fp16 and the narrow ints are stored as raw bytes)."""
    kind = tensor.WhichOneof("value")
    if kind == "bytes":
        return np.frombuffer(tensor.bytes.values, _NUMPY[dtype])
    if kind in ("floats", "ints", "bools", "longInts", "doubles"):
        return np.asarray(list(getattr(tensor, kind).values), _NUMPY[dtype])
    return None


# --- the lint ----------------------------------------------------------------------------------------------


def lint_package(path: Path) -> Placement:
    """Judge every executed op of the package's default function by the written rules (``source="lint"``)."""
    ct = require("coremltools", "coreml")
    try:
        with quiet():
            spec = ct.models.utils.load_spec(str(path))
    except Exception as exc:  # coremltools raises several types for a damaged package
        raise EdgekitError(f"{path} is not a loadable Core ML package: {first_line(exc, 200, '(no message)')}") from None
    if spec.WhichOneof("Type") != "mlProgram":
        return Placement("ane", "lint", not_run=f"the lint reads ML Programs; this is a {spec.WhichOneof('Type')} "
                                                "model (convert with convert_to='mlprogram')")
    functions = list(spec.mlProgram.functions)
    program = ProgramView(spec, Path(path), default_function(spec))
    ops, fired = [], Counter()
    for op in program.ops:
        judged, rules = judge(program.view(op))
        ops.append(judged)
        fired.update(rules)
    return Placement("ane", "lint", ops, notes=_lint_notes(program, functions, fired))


def default_function(spec: Any) -> str:
    """The function Core ML runs when none is named: the package's default, else ``main``, else the first."""
    functions = list(spec.mlProgram.functions)
    return spec.description.defaultFunctionName or ("main" if "main" in functions else functions[0])


def judge(op: OpView) -> tuple[OpPlacement, list[str]]:
    """One op against every rule: the worst verdict, its reasons and fixes; and the names of the rules that fired."""
    found = [rule for rule in (ANE_RULES.get(n) for n in RULE_ORDER) if rule.check(op) is not None]
    where = Where.OFF if any(r.where == Where.OFF for r in found) else Where.PENALTY if found else Where.ON
    worst = [r for r in found if r.where == where]
    reason = "; ".join(f"{r.name}: {r.reason}" for r in worst)
    fix = "; ".join(dict.fromkeys(r.fix for r in worst))
    return OpPlacement(op.type, op.name, where, reason, fix, estimate_flops(op)), [r.name for r in found]


def _lint_notes(program: ProgramView, functions: list[str], fired: Counter) -> list[str]:
    notes = [f"rule {name} ({count} ops): {ANE_RULES.get(name).source}" for name, count in sorted(fired.items())]
    if len(functions) > 1:
        notes.append(f"function {program.function!r} linted (the package has {', '.join(functions)})")
    if program.nested:
        notes.append(f"{program.nested} ops inside control-flow blocks not linted")
    if program.unread:
        notes.append(f"constants not read for the inf rule (over {MAX_READ} elements): {', '.join(program.unread[:5])}")
    notes.append(NOT_JUDGED)
    return notes


# --- estimated work ----------------------------------------------------------------------------------------


def _size(t: Tensor | None) -> int:
    return int(np.prod(t.shape, dtype=np.int64)) if t is not None and t.static else 0


def _conv_flops(op: OpView) -> float:
    weight = op.tensor("weight")  # (C_out, C_in / groups, k...)
    return 2.0 * _size(op.outputs[0]) * _size(weight) / max(weight.shape[0], 1) if _size(weight) else 0.0


def _conv_transpose_flops(op: OpView) -> float:
    weight = op.tensor("weight")  # (C_in, C_out / groups, k...)
    return 2.0 * _size(op.tensor("x")) * _size(weight) / max(weight.shape[0], 1) if _size(weight) else 0.0


def _linear_flops(op: OpView) -> float:
    weight = op.tensor("weight")  # (out, in)
    return 2.0 * _size(op.outputs[0]) * weight.shape[-1] if _size(weight) else 0.0


def _matmul_flops(op: OpView) -> float:
    x, transposed = op.tensor("x"), op.value("transpose_x")
    if not _size(x) or len(x.shape) < 2:
        return 0.0
    inner = x.shape[-2] if transposed is not None and bool(np.ravel(transposed)[0]) else x.shape[-1]
    return 2.0 * _size(op.outputs[0]) * inner


# op type → its multiply-adds ×2 from the program's static shapes; other ops count 0 (unknown)
FLOPS: dict[str, Callable[[OpView], float]] = {
    "conv": _conv_flops, "conv_transpose": _conv_transpose_flops, "linear": _linear_flops, "matmul": _matmul_flops,
}


def estimate_flops(op: OpView) -> float:
    count = FLOPS.get(op.type)
    return float(count(op)) if count is not None and op.outputs else 0.0


# --- MLComputePlan (macOS) ---------------------------------------------------------------------------------


def compute_plan_unavailable() -> str | None:
    """Why Core ML's compute plan cannot be asked here, or None when it can."""
    if sys.platform != "darwin":
        return f"MLComputePlan needs macOS; this is {sys.platform}"
    try:
        from coremltools.models import model as ct_model
        from coremltools.models.compute_plan import MLComputePlan  # noqa: F401
    except ImportError as exc:
        return f"coremltools has no compute plan API: {exc}"
    if getattr(ct_model, "_MLModelProxy", None) is None:
        return "coremltools has no native Core ML bindings (libcoremlpython); reinstall the macOS wheel"
    return None


def measured_placement(path: Path, lint: Placement) -> Placement:
    """Core ML's preferred device per op (compute units CPU_AND_NE: the question is the ANE or a fallback), the
    estimated cost as each op's work, the lint's prediction kept in ``notes``. Compiled in a temporary folder."""
    ct = require("coremltools", "coreml")
    from coremltools.models.compute_plan import MLComputePlan

    with quiet():
        function = default_function(ct.models.utils.load_spec(str(path)))
    with tempfile.TemporaryDirectory(prefix="edgekit-plan-") as tmp, quiet():
        compiled = ct.models.utils.compile_model(str(path), str(Path(tmp) / "model.mlmodelc"))
        plan = MLComputePlan.load_from_path(compiled, compute_units=ct.ComputeUnit.CPU_AND_NE)
        program = plan.model_structure.program
        if program is None:
            return Placement("ane", "MLComputePlan", not_run="the compiled model is not an ML Program")
        block = program.functions[function].block
        ops = [judged for operation in block.operations
               if (judged := _measured_op(plan, operation, {o.name: o for o in lint.ops})) is not None]
    return Placement("ane", "MLComputePlan", ops, notes=compare_notes(lint, ops))


def _device_name(device: Any) -> str:
    """"ANE", "GPU" or "CPU" for an ``MLComputeDevice``."""
    kind = type(device).__name__
    return {"MLNeuralEngineComputeDevice": "ANE", "MLGPUComputeDevice": "GPU", "MLCPUComputeDevice": "CPU"}.get(kind,
                                                                                                            kind)


def _measured_op(plan: Any, operation: Any, predicted: dict[str, OpPlacement]) -> OpPlacement | None:
    """One op as Core ML plans it; None for what it does not run (constants)."""
    if operation.operator_name == "const" or operation.operator_name.startswith("constexpr_"):
        return None
    usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
    if usage is None:
        return None
    cost = plan.get_estimated_cost_for_mlprogram_operation(operation)
    name = operation.outputs[0].name if operation.outputs else operation.operator_name
    preferred = _device_name(usage.preferred_compute_device)
    supported = "/".join(sorted(_device_name(d) for d in usage.supported_compute_devices))
    lint = predicted.get(name)
    on = preferred == "ANE"
    reason = "" if on else (f"Core ML prefers the {preferred} (supported: {supported or 'none'})"
                            + (f"; lint: {lint.reason}" if lint is not None and lint.reason else ""))
    return OpPlacement(operation.operator_name, name, Where.ON if on else Where.OFF, reason,
                       lint.fix if lint is not None and not on else "", float(cost.weight) if cost else 0.0)


def compare_notes(lint: Placement, measured: list[OpPlacement], limit: int = 8) -> list[str]:
    """The lint's prediction beside the measurement: its summary and the ops where the two disagree."""
    predicted = {o.name: o.where for o in lint.ops}
    missed = [o.name for o in measured if o.where == Where.OFF and predicted.get(o.name, Where.OFF) != Where.OFF]
    strict = [o.name for o in measured if o.where != Where.OFF and predicted.get(o.name) == Where.OFF]
    notes = [f"lint predicted: {lint.summary()} ({len(lint.ops)} ops); measured: flops = MLComputePlan's estimated "
             "cost weight per op"]
    if missed:
        notes.append(f"lint said ANE, Core ML prefers another device ({len(missed)}): {', '.join(missed[:limit])}")
    if strict:
        notes.append(f"lint said fallback, Core ML prefers the ANE ({len(strict)}): {', '.join(strict[:limit])}")
    return notes + [n for n in lint.notes if n.startswith("rule ")]
