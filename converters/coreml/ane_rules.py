"""The Neural Engine's written rules, as data: each ``AneRule`` judges one op of an ML Program.

A rule reads only what the saved program says (op type, tensor dtypes and static shapes, constant values) and
cites the public text it comes from. ``check(op)`` returns what it found (``"stride 5"``) or None. The lint
(``placement.py``) applies every registered rule to every op; the worst verdict wins (OFF over PENALTY over
ON) and every finding's reason is kept. What Core ML finally does also depends on the chip, the OS version
and the tensor sizes (coremltools#1780): this is a prediction, which ``MLComputePlan`` measures on a Mac.

Sources cited below (read 2026-12):
  APPLE_RULES  apple/coreai-models skills/skills/model-authoring/references/neural_engine_rules.md
  ANE_TFM      apple/ml-ane-transformers (README and ane_transformers/reference/multihead_attention.py)
  HOLLANCE     hollance/neural-engine docs/unsupported-layers.md
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgekit.placement import Where
from edgekit.registry import Registry

APPLE_RULES = ("https://github.com/apple/coreai-models/blob/main/skills/skills/model-authoring/references/"
               "neural_engine_rules.md")
ANE_TFM = "https://github.com/apple/ml-ane-transformers"
HOLLANCE = "https://github.com/hollance/neural-engine/blob/master/docs/unsupported-layers.md"
FP16 = "export with --precision fp16 (or an int8 scheme)"

# tensor dtypes the Neural Engine computes in (APPLE_RULES "Supported dtypes: fp16, int8, int16"); BOOL masks
# and unsigned 8/16-bit are passed as written, the rest (fp32, int32, ...) fall back
ANE_DTYPES = frozenset({"FLOAT16", "INT8", "UINT8", "INT16", "UINT16", "BOOL"})
WIDE_FLOATS = frozenset({"FLOAT32", "FLOAT64"})
ALIGN_BYTES = 64  # APPLE_RULES "Tensor memory alignment": the last axis in 64-byte blocks
BYTES = {"FLOAT16": 2, "INT16": 2, "UINT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1, "FLOAT32": 4, "INT32": 4}


@dataclass(frozen=True)
class Tensor:
    """One typed value of the program: dtype as the MIL proto names it ("FLOAT16"), static shape (None = unknown)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    @property
    def static(self) -> bool:
        return all(d is not None for d in self.shape)


@dataclass
class OpView:
    """One executed op of the program, with what the rules may ask about its neighbours."""

    type: str
    name: str  # its first output's name (what Core ML tools and MLComputePlan show)
    inputs: dict[str, list[str]]  # parameter → the names of the values bound to it
    outputs: list[Tensor]
    program: Any = field(repr=False)  # placement.ProgramView: tensor(name), value(name), is_const(name), io

    def tensor(self, param: str, index: int = 0) -> Tensor | None:
        names = self.inputs.get(param, [])
        return self.program.tensor(names[index]) if index < len(names) else None

    def value(self, param: str) -> np.ndarray | None:
        """The constant bound to ``param`` (None when it is computed, or absent)."""
        names = self.inputs.get(param, [])
        return self.program.value(names[0]) if names else None

    def activations(self) -> list[Tensor]:
        """The computed (non-constant) tensors this op reads."""
        return [t for names in self.inputs.values() for n in names
                if not self.program.is_const(n) and (t := self.program.tensor(n)) is not None]

    def constants(self, skip: frozenset[str] = frozenset()) -> list[str]:
        """The names of the constants this op reads, but those bound to a parameter in ``skip``."""
        return [n for p, names in self.inputs.items() if p not in skip for n in names if self.program.is_const(n)]


@dataclass(frozen=True)
class AneRule:
    """A written rule: what it flags (``check``), how bad (``where``), why, how to fix it, and its source."""

    name: str
    where: Where
    reason: str
    fix: str
    source: str
    check: Callable[[OpView], str | None]


ANE_RULES: Registry[AneRule] = Registry("Neural Engine rule")
RULE_ORDER: list[str] = []  # registration order: an op's reasons are listed in it (op-type rules first)


def ane_rule(name: str, where: Where, reason: str, fix: str, source: str) -> Callable:
    """Decorator: register ``check(op) -> finding | None`` as the rule ``name``."""

    def add(check: Callable[[OpView], str | None]) -> Callable[[OpView], str | None]:
        ANE_RULES.register(name)(AneRule(name, where, reason, fix, source, check))
        RULE_ORDER.append(name)
        return check

    return add


def _boundary_cast(op: OpView) -> bool:
    """A cast that converts a function input or output between fp32/int and the program's fp16."""
    reads_input = any(n in op.program.function_inputs for n in op.inputs.get("x", []))
    return op.type == "cast" and (reads_input or any(t.name in op.program.function_outputs for t in op.outputs))


# op types that run off the Neural Engine, each with its source and fix
_OFF_OPS: dict[str, tuple[str, str, str]] = {
    "gather-ops": ("gather / scatter (indexed lookup) runs on the CPU",
                   "look embeddings up outside the model (Apple exports the embedding separately) or one-hot @ table",
                   f"{HOLLANCE}; https://github.com/roboflow/rf-detr/pull/1495 (MLComputePlan: gather_along_axis "
                   f"on the CPU); {APPLE_RULES} (Model decomposition)"),
    "topk-ops": ("topk / argsort runs on the CPU", "take the top-k in the app, after the model",
                 "https://github.com/roboflow/rf-detr/pull/1495 (MLComputePlan: topk on the CPU)"),
    "resample-ops": ("resample (grid_sample) runs on the CPU",
                     "avoid grid_sample; use upsample/conv_transpose where the grid is regular",
                     "https://github.com/apple/coremltools/issues/1875; "
                     "https://github.com/apple/coremltools/issues/2299"),
    "rnn-ops": ("RNN / LSTM / GRU run on the CPU", "use a convolution, attention or an SSM scan written as matmuls",
                "https://github.com/apple/coremltools/issues/1780 (coremltools maintainer); " + HOLLANCE),
}
_OFF_TYPES: dict[str, frozenset[str]] = {
    "gather-ops": frozenset({"gather", "gather_nd", "gather_along_axis", "scatter", "scatter_nd",
                             "scatter_along_axis"}),
    "topk-ops": frozenset({"topk", "argsort"}),
    "resample-ops": frozenset({"resample"}),
    "rnn-ops": frozenset({"lstm", "gru", "rnn"}),
}


def _op_type_rule(types: frozenset[str]) -> Callable[[OpView], str | None]:
    return lambda op: f"op type {op.type}" if op.type in types else None


for _name, (_reason, _fix, _source) in _OFF_OPS.items():
    ane_rule(_name, Where.OFF, _reason, _fix, _source)(_op_type_rule(_OFF_TYPES[_name]))


@ane_rule("cast", Where.OFF, "cast inside the program: a dtype change the Neural Engine does not keep on-chip",
          "keep the whole graph in fp16 (no .float()/.to(int) inside forward)",
          f"{APPLE_RULES} (Avoid unnecessary memory copies; Float32 intermediates); "
          "https://github.com/vx-lang/Vx/issues/436 (MLComputePlan: cast on the CPU)")
def _cast(op: OpView) -> str | None:
    return "interior cast" if op.type == "cast" and not _boundary_cast(op) else None


@ane_rule("fp32", Where.OFF, "fp32 tensor: the Neural Engine computes fp16/int8 only, fp32 falls back to GPU/CPU",
          FP16, f"{APPLE_RULES} (Supported dtypes; Float32 intermediates)")
def _fp32(op: OpView) -> str | None:
    if _boundary_cast(op):
        return None  # the I/O conversion is the io-cast rule's
    wide = [t for t in [*op.outputs, *op.activations()] if t.dtype in WIDE_FLOATS]
    return f"{wide[0].name} is {wide[0].dtype.lower()}" if wide else None


@ane_rule("dtype", Where.OFF, "tensor dtype the Neural Engine does not compute in (it takes fp16, int8, int16)",
          "keep index arithmetic out of the model (feed positions and masks as fp16 inputs)",
          f"{APPLE_RULES} (Supported dtypes)")
def _dtype(op: OpView) -> str | None:
    if _boundary_cast(op):
        return None
    other = [t for t in [*op.outputs, *op.activations()] if t.dtype not in ANE_DTYPES | WIDE_FLOATS]
    return f"{other[0].name} is {other[0].dtype.lower()}" if other else None


@ane_rule("rank", Where.OFF, "rank > 5 tensor: the Neural Engine rejects rank-6+ intermediates",
          "reshape away singleton dimensions to rank <= 5", f"{APPLE_RULES} (Max tensor rank: 5)")
def _rank(op: OpView) -> str | None:
    high = [t for t in op.outputs if len(t.shape) > 5]
    return f"{high[0].name} has rank {len(high[0].shape)}" if high else None


@ane_rule("flexible-shape", Where.OFF, "flexible (range or enumerated) shape: the Neural Engine needs static shapes",
          "export with static shapes (one function per shape)",
          f"{APPLE_RULES} (Fully static shapes); https://github.com/apple/coremltools/issues/1764")
def _flexible(op: OpView) -> str | None:
    loose = [t for t in [*op.outputs, *op.activations()] if not t.static]
    return f"{loose[0].name} has shape {tuple('?' if d is None else d for d in loose[0].shape)}" if loose else None


_LEARNED = frozenset({"weight", "bias", "gamma", "beta", "mean", "variance"})


@ane_rule("inf-constant", Where.OFF, "±inf constant (a mask): the Neural Engine does not handle IEEE -inf in softmax",
          "mask with a large negative fp16 value (-1e4, masked_fill(mask, -1e4)), not float('-inf')",
          f"{APPLE_RULES} (Causal mask: -40000.0, NOT float('-inf'))")
def _inf_constant(op: OpView) -> str | None:
    for name in op.constants(skip=_LEARNED):  # weights are not masks: not read, which keeps the lint cheap
        value = op.program.float_value(name)
        if value is not None and np.isinf(value).any():
            return f"constant {name!r} holds {'-inf' if np.isneginf(value).any() else 'inf'}"
    return None


@ane_rule("io-cast", Where.PENALTY, "fp32 input/output converted to fp16 at the model boundary (an extra pass)",
          "declare fp16 inputs/outputs (ct.TensorType(dtype=np.float16), iOS 16+)",
          f"{APPLE_RULES} (Supported dtypes; Avoid unnecessary memory copies)")
def _io_cast(op: OpView) -> str | None:
    return "boundary cast" if _boundary_cast(op) else None


@ane_rule("activation-matmul", Where.PENALTY,
          "matmul of two activations (attention): no fused attention on the Neural Engine; runs only in its "
          "per-head layout, else the compiler may move it",
          "per-head attention as einsum 'bchq,bkhc->bkhq' in (B, C, 1, S) layout (apple/ml-ane-transformers)",
          f"{APPLE_RULES} (Per-head attention; BC1S format); {ANE_TFM}; "
          "https://github.com/apple/coremltools/issues/1761 (batched matmul left on the GPU)")
def _activation_matmul(op: OpView) -> str | None:
    if op.type not in ("matmul", "einsum"):
        return None
    computed = [p for p in ("x", "y", "values") for n in op.inputs.get(p, []) if not op.program.is_const(n)]
    return "both operands computed" if len(computed) >= 2 else None


@ane_rule("linear", Where.PENALTY, "linear layer: the Neural Engine's native form is a 1x1 conv2d; linear is "
          "decomposed into less efficient ops", "nn.Conv2d(in, out, kernel_size=1) on (B, C, 1, S) tensors",
          f"{APPLE_RULES} (Conv2d instead of Linear); {ANE_TFM}")
def _linear(op: OpView) -> str | None:
    return "linear" if op.type == "linear" else None


@ane_rule("last-dim", Where.PENALTY, "last dimension under 64 bytes or not 64-byte aligned: the Neural Engine pads "
          "it (a singleton costs 32x memory in fp16)",
          "move a larger dimension last; make it a multiple of 32 fp16 elements",
          f"{APPLE_RULES} (Tensor memory alignment)")
def _last_dim(op: OpView) -> str | None:
    for t in op.outputs:
        if t.shape and t.shape[-1] is not None and t.dtype in BYTES:
            width = t.shape[-1] * BYTES[t.dtype]
            if width % ALIGN_BYTES:
                return f"{t.name} last dim {t.shape[-1]}"
    return None


def _smooth(n: int) -> bool:
    """Only prime factors 2 and 3 (1 included)."""
    for p in (2, 3):
        while n > 1 and n % p == 0:
            n //= p
    return n == 1


@ane_rule("stride", Where.PENALTY, "conv/pool stride or dilation with a prime factor other than 2 and 3 (pools: "
          "other than 1, 2, 4) maps with overhead", "use strides of 2, 3, 4, 6, 8 (pools 2 or 4); factor dilations",
          f"{APPLE_RULES} (Convolution stride optimization; Dilated convolution factorization; Pooling stride)")
def _stride(op: OpView) -> str | None:
    pool = op.type in ("max_pool", "avg_pool", "l2_pool")
    if op.type not in ("conv", "conv_transpose") and not pool:
        return None
    for param in ("strides", "dilations"):
        value = op.value(param)
        bad = [int(s) for s in np.ravel(value)] if value is not None else []
        bad = [s for s in bad if (s not in (1, 2, 4) if pool else not _smooth(s))]
        if bad:
            return f"{param} {bad[0]}"
    return None
