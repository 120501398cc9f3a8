"""Core ML states (iOS 18) in the reference evaluator: buffers that outlive one evaluation.

A stateful ML program takes ``state<tensor>`` inputs besides its tensors. ``read_state`` copies
a state's content into a value; ``coreml_update_state`` (``write_state`` then ``read_state``)
overwrites the whole state and returns the written value. ``MilState`` holds one buffer per state,
zero-filled like Core ML's ``MLModel.make_state()``; passing the same ``MilState`` to successive
evaluations carries the states from one step to the next, as an app's ``MLState`` does.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgekit.converters.coreml.mil_reference.precision import VarSpec, round_to_declared, to_declared
from edgekit.converters.coreml.mil_reference.registry import MilEvaluationError, kernel
from edgekit.errors import require


def is_state(var: Any) -> bool:
    """True for a ``state<…>`` function input."""
    types = require("coremltools.converters.mil.mil.types", "coreml")
    return types.is_state(var.sym_type)


def state_spec(var: Any) -> VarSpec:
    """The declared dtype and shape of the tensor a state input wraps."""
    types = require("coremltools.converters.mil.mil.types", "coreml")
    wrapped = var.sym_type.wrapped_type()
    dtype = np.dtype(types.nptype_from_builtin(wrapped.get_primitive()))
    return VarSpec(var.name, "tensor", dtype, tuple(int(d) for d in wrapped.get_shape()))


class StateBuffer:
    """One state's current content, in compute form (fp16 states as exactly-representable float32)."""

    __slots__ = ("spec", "value")

    def __init__(self, spec: VarSpec) -> None:
        self.spec = spec
        self.value = round_to_declared(np.zeros(spec.shape, spec.dtype), spec)

    def write(self, value: Any) -> None:
        """Overwrite the whole buffer; a value of another shape is an error (states never resize)."""
        if tuple(np.shape(value)) != self.spec.shape:
            raise MilEvaluationError(f"state {self.spec.describe()} written with shape {np.shape(value)}")
        self.value = round_to_declared(np.array(value, copy=True), self.spec)


class MilState:
    """The states of one stream: create with ``MilEvaluator.make_state()``, reuse across steps."""

    def __init__(self, specs: Mapping[str, VarSpec]) -> None:
        self.buffers = {name: StateBuffer(spec) for name, spec in specs.items()}

    def __getitem__(self, name: str) -> np.ndarray:
        """A copy of state ``name`` in its declared dtype (fp16 states as float16)."""
        buffer = self._buffer(name)
        return to_declared(buffer.value.copy(), buffer.spec)

    def __setitem__(self, name: str, value: Any) -> None:
        """Set state ``name`` (e.g. to start from a prefill's states instead of zeros)."""
        self._buffer(name).write(value)

    def _buffer(self, name: str) -> StateBuffer:
        if name not in self.buffers:
            raise MilEvaluationError(f"no state {name!r}; the program's states are: {', '.join(self.buffers)}")
        return self.buffers[name]


@kernel("read_state")
def read_state(op: Any, a: dict[str, Any]) -> np.ndarray:
    """A copy of the state's content."""
    return a["input"].value.copy()


@kernel("coreml_update_state")
def coreml_update_state(op: Any, a: dict[str, Any]) -> np.ndarray:
    """Write ``value`` into the state, then read it back (the op's result is the state's new content)."""
    buffer: StateBuffer = a["state"]
    buffer.write(a["value"])
    return buffer.value.copy()
