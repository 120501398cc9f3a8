"""Load a saved ML program and run it op by op in NumPy.

Each op gets, in this order: a NumPy kernel registered with ``@kernel`` (``kernels.py``,
``conv.py``, ``constexpr.py``); for a compressed-weight op without one, coremltools'
``materialized_val_inference``; otherwise coremltools' own ``value_inference`` (the
semantics coremltools uses to fold constants), run on a copy of the op whose inputs carry
the runtime values. An op with none of these stops the plan with ``MissingKernel``, a ``CannotVerify``:
the artifact is kept, reported as not verified here.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgekit.converters.coreml.mil_reference import constexpr, conv, indexing, kernels  # noqa: F401  (register kernels)
from edgekit.converters.coreml.mil_reference.precision import (
    VarSpec,
    function_precision,
    round_to_declared,
    to_compute,
    to_declared,
    var_spec,
)
from edgekit.converters.coreml.mil_reference.registry import MilEvaluationError, MissingKernel, find_kernel
from edgekit.converters.coreml.mil_reference.state import MilState, is_state, state_spec
from edgekit.errors import require
from edgekit.converters.coreml._compat import has_own_value_inference, load_milproto, set_input_var

Ref = str | tuple[str, ...]  # the name(s) of the variable(s) an op input reads


def load_program(source: str | Path | Any) -> Any:
    """The MIL program of a saved ``.mlpackage`` (a path or an ``MLModel``); a program passes through."""
    if hasattr(source, "functions"):
        return source
    ct = require("coremltools", "coreml")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_dir():
            raise MilEvaluationError(f"{path} is not an .mlpackage directory; save the model with MLModel.save('model.mlpackage')")
        source = ct.models.MLModel(str(path), skip_model_load=True)
    spec = source.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise MilEvaluationError(
            f"the model is a {spec.WhichOneof('Type')} model; only ML programs (convert_to='mlprogram') can be evaluated"
        )
    return load_milproto(spec, source.weights_dir or "")


_BLAS: list[Any] = []  # the threadpoolctl controller, made on first use


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """Limit NumPy's BLAS to one thread while evaluating: the matmuls are small, and
    BLAS threads spinning on a busy machine made runs 10x slower (measured, 2 cores)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # comes with scikit-learn; without it, run as configured
        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


class _Bound:
    """A program variable carrying a runtime value, for coremltools' ``value_inference``."""

    __slots__ = ("_var", "_value")

    def __init__(self, var: Any, value: Any) -> None:
        self._var, self._value = var, value

    val = property(lambda self: self._value)
    sym_val = property(lambda self: self._value)
    shape = property(lambda self: tuple(np.shape(self._value)))
    rank = property(lambda self: np.ndim(self._value))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._var, name)


def _value_inference(op: Any, a: dict[str, Any]) -> Any:
    """Run coremltools' ``value_inference`` of ``op`` on a copy whose inputs hold ``a``."""
    shadow = copy.copy(op)
    for name, var in op.inputs.items():
        if isinstance(var, (tuple, list)):
            bound: Any = tuple(_Bound(v, x) for v, x in zip(var, a[name]))
        else:
            bound = _Bound(var, a[name])
        set_input_var(shadow, name, bound)
        setattr(shadow, name, bound)
    result = shadow.value_inference()
    if result is None:
        raise MilEvaluationError(f"cannot evaluate op {op.op_type} ({op.name}): value_inference returned nothing")
    return result


def _materialize(op: Any, a: dict[str, Any]) -> Any:
    """coremltools' own decompression of a compressed-weight op (all its inputs are constants)."""
    return op.materialized_val_inference()


def _opset(op: Any) -> int | None:
    """The op's opset; None for a dialect op outside the versioned opsets (``coreml_update_state``),
    whose ``opset_version`` coremltools cannot compute."""
    try:
        return op.opset_version
    except AttributeError:
        return None


def _resolve(op: Any) -> Callable[[Any, dict[str, Any]], Any]:
    """The kernel that evaluates ``op``, or a ``MissingKernel`` (a ``CannotVerify``) saying why there is none."""
    if op.blocks:
        raise MissingKernel(op.op_type, f"op {op.name}: control flow")
    fn = find_kernel(op.op_type, _opset(op))
    if fn is not None:
        return fn
    if op.op_type.startswith("constexpr_") and hasattr(op, "materialized_val_inference"):
        return _materialize
    if has_own_value_inference(op):
        return _value_inference
    raise MissingKernel(op.op_type, f"op {op.name}")  # add one with @kernel(op_type) in mil_reference


@dataclass
class _Step:
    """One op of the plan: its kernel, where each input comes from, what each output must be."""

    op: Any
    fn: Callable[[Any, dict[str, Any]], Any]
    args: list[tuple[str, Ref]]
    outs: list[VarSpec]

    def run(self, env: dict[str, Any]) -> None:
        a = {name: env[ref] if isinstance(ref, str) else tuple(env[r] for r in ref) for name, ref in self.args}
        try:
            result = self.fn(self.op, a)
        except MilEvaluationError:
            raise
        except Exception as exc:  # a kernel bug or an unsupported attribute: name the op
            raise MilEvaluationError(f"cannot evaluate op {self.op.op_type} ({self.op.name}): {type(exc).__name__}: {exc}") from exc
        results = (result,) if len(self.outs) == 1 else tuple(result)
        for spec, value in zip(self.outs, results):
            value = round_to_declared(value, spec)
            if spec.kind == "tensor" and not spec.shape_matches(np.shape(value)):
                raise MilEvaluationError(
                    f"op {self.op.op_type} ({self.op.name}) produced shape {np.shape(value)}; the program declares {spec.describe()}"
                )
            env[spec.name] = value


def _check_integer_range(name: str, value: np.ndarray, spec: VarSpec) -> None:
    """An integer input must fit the integer type the program declares (Core ML inputs: int32)."""
    if value.dtype.kind not in "iu" or spec.dtype is None or spec.dtype.kind not in "iu" or not value.size:
        return
    info = np.iinfo(spec.dtype)
    if value.min() < info.min or value.max() > info.max:
        raise MilEvaluationError(f"input {name!r} holds values in [{value.min()}, {value.max()}]; the program "
                                 f"stores it as {spec.dtype} ([{info.min}, {info.max}])")


class MilEvaluator:
    """A reusable plan for one function of a MIL program: weights decoded once, ops in order.

    ``emulate_fp16=False`` evaluates an fp16 program with fp32 activations (the weights
    keep their fp16 values), which separates fp16 rounding from conversion errors.

    A stateful program (iOS 18 ``ct.StateType``) lists its states in ``states``; every evaluation
    then takes a ``MilState`` from ``make_state()``, reused across calls so the states carry over.
    """

    def __init__(self, program: Any, function_name: str = "main", *, emulate_fp16: bool = True) -> None:
        program = load_program(program)
        if function_name not in program.functions:
            names = ", ".join(sorted(program.functions))
            raise MilEvaluationError(f"the program has no function {function_name!r}; it has: {names}")
        self.function = program.functions[function_name]
        self.function_name = function_name
        self.emulate_fp16 = emulate_fp16
        self.precision = function_precision(self.function)
        inputs = self.function.inputs.items()
        self.states = {name: self._spec(state_spec(var)) for name, var in inputs if is_state(var)}
        self.inputs = {name: self._spec(var_spec(var)) for name, var in inputs if name not in self.states}
        self.outputs = [self._spec(var_spec(var)) for var in self.function.outputs]
        self._consts: dict[str, Any] = {}
        self._const_vars: dict[str, Any] = {}  # name -> Var, for declared dtypes
        self._steps: list[_Step] = []
        with _one_blas_thread():
            self._plan()

    def _spec(self, spec: VarSpec) -> VarSpec:
        return spec if self.emulate_fp16 or not spec.is_fp16 else replace(spec, dtype=np.dtype(np.float32))

    def _plan(self) -> None:
        """Resolve every op's kernel and fold the ops whose inputs are all constants."""
        for op in self.function.operations:
            if op.op_type == "const":
                self._consts[op.outputs[0].name] = to_compute(op.outputs[0].val)
                self._const_vars[op.outputs[0].name] = op.outputs[0]
                continue
            args: list[tuple[str, Ref]] = []
            for name, var in op.inputs.items():
                args.append((name, tuple(v.name for v in var) if isinstance(var, (tuple, list)) else var.name))
            step = _Step(op, _resolve(op), args, [self._spec(var_spec(v)) for v in op.outputs])
            refs = [r for _, ref in args for r in ((ref,) if isinstance(ref, str) else ref)]
            if all(r in self._consts for r in refs):
                step.run(self._consts)  # constant: weights decompression, shape arithmetic
                self._const_vars.update((v.name, v) for v in op.outputs)
            else:
                self._steps.append(step)

    def make_state(self) -> MilState:
        """Zero-filled states for one stream (Core ML's ``MLModel.make_state()``)."""
        return MilState(self.states)

    def _bind_state(self, env: dict[str, Any], state: MilState | None) -> None:
        """Put the stream's state buffers where ``read_state``/``coreml_update_state`` find them."""
        if not self.states and state is None:
            return
        if state is None:
            raise MilEvaluationError(f"the program is stateful (states {', '.join(self.states)}); "
                                     "pass state=evaluator.make_state() and reuse it for every step of a stream")
        if set(state.buffers) != set(self.states) or any(
                b.spec.shape != self.states[n].shape for n, b in state.buffers.items()):
            raise MilEvaluationError("the state was made for another program; use this evaluator's make_state()")
        env.update(state.buffers)

    def _prepare(self, inputs: Mapping[str, Any], state: MilState | None = None) -> dict[str, Any]:
        """Check names and shapes of the user's inputs and cast them to the declared dtypes."""
        expected = ", ".join(s.describe() for s in self.inputs.values())
        missing, extra = set(self.inputs) - set(inputs), set(inputs) - set(self.inputs)
        if missing or extra:
            raise MilEvaluationError(f"inputs {sorted(missing)} missing, {sorted(extra)} unknown; the program takes: {expected}")
        env = dict(self._consts)
        for name, spec in self.inputs.items():
            value = np.asarray(inputs[name])
            if not spec.shape_matches(value.shape):
                raise MilEvaluationError(
                    f"input {name!r} has shape {value.shape}; the program takes {spec.describe()} "
                    "(evaluate one sample at a time, or convert with a flexible dimension such as ct.RangeDim)"
                )
            _check_integer_range(name, value, spec)
            env[name] = round_to_declared(value, spec)  # int64 token ids → the int32 Core ML stores
        self._bind_state(env, state)
        return env

    def run(self, inputs: Mapping[str, Any], state: MilState | None = None) -> dict[str, np.ndarray]:
        """Evaluate the function; outputs are keyed by name, in their declared dtype.

        A stateful program reads and updates ``state`` in place (one ``MilState`` per stream)."""
        env = self._prepare(inputs, state)
        with _one_blas_thread():
            for step in self._steps:
                step.run(env)
        return {spec.name: to_declared(env[spec.name], spec) for spec in self.outputs}

    __call__ = run

    def run_list(self, arrays: Sequence[Any], state: MilState | None = None) -> list[np.ndarray]:
        """Positional form: inputs and outputs in the program's order (a parity ``Runner``)."""
        if len(arrays) != len(self.inputs):
            raise MilEvaluationError(f"got {len(arrays)} inputs; the program takes {len(self.inputs)}: {', '.join(self.inputs)}")
        outputs = self.run(dict(zip(self.inputs, arrays)), state)
        return [outputs[spec.name] for spec in self.outputs]

    def constant(self, name: str) -> np.ndarray:
        """A constant of the plan in its declared dtype: a weight (decompressed) or a folded value."""
        if name not in self._consts:
            raise MilEvaluationError(f"{name!r} is not a constant of function {self.function_name!r}")
        value = self._consts[name]
        declared = var_spec(self._const_vars[name])
        return to_declared(value, declared)

    def op_counts(self) -> dict[str, int]:
        """How many ops of each type run per evaluation (constants folded away)."""
        counts: dict[str, int] = {}
        for step in self._steps:
            counts[step.op.op_type] = counts.get(step.op.op_type, 0) + 1
        return counts


def evaluate(program: Any, inputs: Mapping[str, Any], *, function_name: str = "main",
             emulate_fp16: bool = True, state: MilState | None = None) -> dict[str, np.ndarray]:
    """Run ``function_name`` of ``program`` (a program, an MLModel or an .mlpackage path) on ``inputs``
    (and, for a stateful program, ``state``, which it updates)."""
    return MilEvaluator(program, function_name, emulate_fp16=emulate_fp16).run(inputs, state)
