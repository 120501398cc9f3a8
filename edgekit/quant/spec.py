"""QuantSpec: one typed, frozen description of how an artifact's numbers are stored and computed.

Scheme and weight granularity, calibration (source, sample count, method: PT2E observers or NNCF), an accuracy budget or
QAT epochs, and overrides that keep op types or layers in float. Overrides follow coremltools'
``OptimizationConfig``: the global scheme, then the op type, then the layer (op name); ``None`` keeps float.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar

from edgekit.errors import EdgekitError


class Scheme(str, enum.Enum):
    """What is quantized: nothing, weights only, or weights and activations."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8_STATIC = "int8"  # W8A8, activation ranges from calibration data
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized per call at run time
    INT8_WEIGHT = "int8-weight"  # int8 weights dequantized to float, float compute
    INT4_WEIGHT = "int4-weight"  # int4 weights (per block), float compute
    PALETTIZE = "palettize"  # n-bit look-up table of weights (k-means), float compute


class Granularity(str, enum.Enum):
    """How many scales a weight tensor gets."""

    PER_TENSOR = "per-tensor"
    PER_CHANNEL = "per-channel"
    PER_BLOCK = "per-block"


class CalibMethod(str, enum.Enum):
    """How static int8 finds its ranges: PT2E observers, or NNCF's post-training algorithms on the same graph."""

    HISTOGRAM = "histogram"  # PT2E histogram observers on activations (min/max on weights)
    MINMAX = "minmax"  # PT2E min/max observers on activations
    NNCF = "nncf"  # NNCF range estimators + fast bias correction
    NNCF_SMOOTHQUANT = "nncf-smoothquant"  # + SmoothQuant (activation outliers moved into linear weights)
    NNCF_BIAS_CORRECTION = "nncf-bias-correction"  # NNCF range estimators + full (layer-wise) bias correction

    @property
    def uses_nncf(self) -> bool:
        """True for the methods NNCF runs (they need static int8 without QAT)."""
        return self.value.startswith("nncf")


CALIBRATION_METHODS = tuple(m.value for m in CalibMethod)  # how static int8 calibrates
OP_TYPES = ("conv1d", "conv2d", "linear")  # the op types an override can name (the layers that get int8 weights)
Overrides = tuple[tuple[str, None], ...]  # (op type or layer name, None = keep float), in the order given
_DEFAULT_GRANULARITY = {Scheme.INT4_WEIGHT: Granularity.PER_BLOCK, Scheme.PALETTIZE: Granularity.PER_TENSOR}
_DEFAULT_BITS = {Scheme.FP32: 32, Scheme.FP16: 16, Scheme.INT4_WEIGHT: 4, Scheme.PALETTIZE: 4}
_NEEDS_CALIBRATION = {Scheme.INT8_STATIC}
_PALETTE = re.compile(r"palettize(\d)$")
_MAX_BUDGET = 100.0  # percentage points
_MAX_SQNR_DB = 100.0  # an output SQNR goal above this is fp32's territory (int8 reaches ~50 dB at best)


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize. Build it with :meth:`parse` (``"int8"``, ``"palettize4"``) or directly.

    ``budget_points``, ``min_sqnr_db``, ``qat_epochs`` and the overrides need static int8 (``int8``); a budget or
    SQNR goal (mixed precision) and QAT exclude each other. Calibration arrays given from Python travel beside
    the spec, not in it."""

    scheme: Scheme = Scheme.FP32
    # weights
    granularity: Granularity = Granularity.PER_CHANNEL  # of weight scales
    bits: int = 8  # weight bits (palettization: log2 of the look-up table size)
    block_size: int = 32  # input channels per scale when granularity is per-block
    # calibration (static int8)
    # an .npz keyed by input name (any model), or for one float input a .npy or an image folder; None = the recipe's
    # training split
    calib_source: str | None = None
    calib_samples: int = 128  # calibration inputs drawn from the data
    calib_method: CalibMethod = CalibMethod.HISTOGRAM  # one of CALIBRATION_METHODS (a name is accepted)
    smooth_quant_alpha: float | None = None  # nncf-smoothquant: migration strength 0..1; None = NNCF's default
    # accuracy (static int8; one or the other)
    budget_points: float | None = None  # allowed accuracy drop in points: keep sensitive layers float until met
    min_sqnr_db: float | None = None  # output SQNR goal (dB) vs fp32: keep sensitive layers float until met
    qat_epochs: int = 0  # fine-tune with fake quantization after calibration (0 = none)
    # overrides of the scheme, global → op type → layer: None keeps that op type / layer in float
    op_types: Overrides = ()  # e.g. (("linear", None),); a mapping {"linear": None} is accepted too
    layers: Overrides = ()  # module names, e.g. (("head.1", None),); a layer's entry wins over its op type's

    def __post_init__(self) -> None:
        _set = object.__setattr__  # frozen: normalise the given values once, here
        _set(self, "scheme", _enum(Scheme, self.scheme, "scheme", scheme_names()))
        _set(self, "granularity", _enum(Granularity, self.granularity, "granularity", [g.value for g in Granularity]))
        _set(self, "calib_method", _enum(CalibMethod, self.calib_method, "calib_method", list(CALIBRATION_METHODS),
                                         what="calibration method"))
        if isinstance(self.calib_source, Path):
            _set(self, "calib_source", str(self.calib_source))
        _set(self, "op_types", _overrides(self.op_types, "op_types", OP_TYPES))
        _set(self, "layers", _overrides(self.layers, "layers", None))
        _check_values(self)
        _check_combination(self)

    @classmethod
    def parse(cls, name: str | QuantSpec, **fields: Any) -> QuantSpec:
        """``fp32``, ``fp16``, ``int8``, ``int8-dynamic``, ``int8-weight``, ``int4-weight``, ``palettizeN``;
        ``fields`` set the other fields (``calib_samples=32``, ``budget_points=2``). A QuantSpec is returned
        with ``fields`` replaced."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise EdgekitError(f"QuantSpec has no field {unknown[0]!r}; fields: {', '.join(_field_names())}")
        if isinstance(name, QuantSpec):
            return replace(name, **fields) if fields else name
        match = _PALETTE.match(name) if isinstance(name, str) else None
        try:
            scheme = Scheme.PALETTIZE if match else Scheme(name)
        except ValueError:
            raise EdgekitError(f"unknown quantization {name!r}; choose one of: {', '.join(scheme_names())}") from None
        defaults = {"scheme": scheme, "bits": int(match.group(1)) if match else _DEFAULT_BITS.get(scheme, 8),
                    "granularity": _DEFAULT_GRANULARITY.get(scheme, Granularity.PER_CHANNEL)}
        return cls(**(defaults | fields))

    @property
    def tag(self) -> str:
        """The short name used in artifact names and the manifest's ``precision``."""
        return f"palettize{self.bits}" if self.scheme is Scheme.PALETTIZE else self.scheme.value

    @property
    def needs_calibration(self) -> bool:
        """True when activation ranges come from calibration data (static int8)."""
        return self.scheme in _NEEDS_CALIBRATION

    @property
    def quantizes(self) -> bool:
        """True for every integer / look-up-table scheme (not fp32/fp16)."""
        return self.scheme not in (Scheme.FP32, Scheme.FP16)

    @property
    def qat(self) -> bool:
        """True when quantization-aware fine-tuning follows calibration."""
        return self.qat_epochs > 0

    @property
    def float_layers(self) -> tuple[str, ...]:
        """The layers (module names) an override keeps in float."""
        return tuple(name for name, keep in self.layers if keep is None)

    def keeps_float(self, layer: str, op_type: str) -> bool:
        """Whether ``layer`` (a module name) of ``op_type`` stays float: its layer entry, else its op type's."""
        for overrides, key in ((self.layers, layer), (self.op_types, op_type)):
            found = dict(overrides)
            if key in found:
                return found[key] is None
        return False

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON (overrides as ``{name: null}``); :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {"tag": self.tag}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else dict(value) if f.name in (
                "op_types", "layers") else value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> QuantSpec:
        """The spec :meth:`to_dict` wrote (e.g. read from an untrusted manifest): unknown keys, wrong types
        and values out of range are refused with an EdgekitError naming the field."""
        if not isinstance(data, dict):
            raise EdgekitError(f"a quantization spec must be an object, not {type(data).__name__}")
        fields = {k: v for k, v in data.items() if k != "tag"}
        unknown = sorted(set(fields) - set(_field_names()))
        if unknown or "scheme" not in fields:
            what = f"has unknown field {unknown[0]!r:.40}" if unknown else "names no scheme"
            raise EdgekitError(f"quantization spec {what}; fields: {', '.join(_field_names())}")
        spec = cls(**fields)
        if "tag" in data and data["tag"] != spec.tag:
            raise EdgekitError(f"quantization spec tag {data['tag']!r:.40} does not match its fields ({spec.tag})")
        return spec


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(QuantSpec)]


def _enum(kind: type[enum.Enum], value: Any, field: str, valid: list[str], what: str = "") -> Any:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (ValueError, TypeError):
        raise EdgekitError(f"{what or 'QuantSpec.' + field} {value!r:.40} is not one of: {', '.join(valid)}") from None


def _overrides(value: Any, field: str, allowed: tuple[str, ...] | None) -> Overrides:
    """``{name: None}`` or ``((name, None), ...)`` as a tuple of pairs; names checked, None the only value."""
    pairs = list(value.items()) if isinstance(value, Mapping) else value
    if isinstance(pairs, str) or not isinstance(pairs, (list, tuple)):
        raise EdgekitError(f"QuantSpec.{field} must map names to None (keep float), e.g. {{'head.1': None}}; "
                           f"got {value!r:.60}")
    out: dict[str, None] = {}
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str) and pair[0]):
            raise EdgekitError(f"QuantSpec.{field} entry {pair!r:.60} is not a (name, None) pair")
        name, setting = pair
        if allowed is not None and name not in allowed:
            raise EdgekitError(f"QuantSpec.{field} names {name!r:.40}; op types: {', '.join(allowed)}")
        if setting is not None:
            raise EdgekitError(f"QuantSpec.{field}[{name!r}] = {setting!r:.40}; the only override is None "
                               "(keep float)")
        out[name] = None
    return tuple(out.items())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_values(spec: QuantSpec) -> None:
    """Types and ranges of each field, one at a time, naming the field and what is allowed."""
    for field, least in (("bits", 1), ("block_size", 1), ("qat_epochs", 0)):
        value = getattr(spec, field)
        if not _is_int(value) or value < least:
            raise EdgekitError(f"QuantSpec.{field} must be an integer >= {least}, got {value!r:.40}")
    alpha = spec.smooth_quant_alpha
    if alpha is not None and (not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 <= alpha <= 1):
        raise EdgekitError(f"QuantSpec.smooth_quant_alpha must be a number from 0 to 1 or None (NNCF's default), "
                           f"got {alpha!r:.40}")
    if not _is_int(spec.calib_samples) or spec.calib_samples < 1:
        raise EdgekitError(f"calibration sample count must be at least 1, got {spec.calib_samples!r:.40}")
    if spec.calib_source is not None and (not isinstance(spec.calib_source, str) or not spec.calib_source):
        raise EdgekitError(f"QuantSpec.calib_source must be a path or None, got {spec.calib_source!r:.40}")
    budget = spec.budget_points
    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or math.isnan(budget)):
        raise EdgekitError(f"accuracy budget must be a number of percentage points or None, got {budget!r:.40}")
    if budget is not None and not 0 <= budget <= _MAX_BUDGET:
        raise EdgekitError(f"accuracy budget must be >= 0 and <= {_MAX_BUDGET:g} percentage points, got {budget}")
    _check_sqnr_goal(spec.min_sqnr_db)
    if spec.scheme is Scheme.PALETTIZE and not 1 <= spec.bits <= 8:
        raise EdgekitError(f"palettization takes 1 to 8 bits, got {spec.bits}")


def _check_sqnr_goal(goal: Any) -> None:
    """An output SQNR goal is a finite number of dB in (0, _MAX_SQNR_DB], or None."""
    if goal is not None and (not isinstance(goal, (int, float)) or isinstance(goal, bool) or math.isnan(goal)):
        raise EdgekitError(f"output SQNR goal must be a number of dB or None, got {goal!r:.40}")
    if goal is not None and not 0 < goal <= _MAX_SQNR_DB:
        raise EdgekitError(f"output SQNR goal must be > 0 and <= {_MAX_SQNR_DB:g} dB, got {goal}")


def _check_combination(spec: QuantSpec) -> None:
    """Mixed precision, QAT and float overrides need calibrated int8 (``int8``); mixed precision (a budget or an
    SQNR goal) and QAT exclude each other."""
    asked = [name for name, on in (("an accuracy budget", spec.budget_points is not None),
                                    ("an output SQNR goal", spec.min_sqnr_db is not None), ("QAT", spec.qat),
                                    ("keeping op types or layers in float", bool(spec.op_types or spec.layers))) if on]
    if asked and spec.scheme is not Scheme.INT8_STATIC:
        raise EdgekitError(f"{asked[0]} needs --quant int8 (static W8A8), not {spec.tag}")
    if spec.budget_points is not None and spec.qat:
        raise EdgekitError("choose either an accuracy budget (mixed precision) or QAT, not both")
    if spec.min_sqnr_db is not None and spec.qat:
        raise EdgekitError("choose either an output SQNR goal (mixed precision) or QAT, not both")
    _check_method(spec)


def _check_method(spec: QuantSpec) -> None:
    """NNCF's algorithms calibrate static int8 after training; SmoothQuant's alpha belongs to nncf-smoothquant."""
    method = spec.calib_method.value
    if spec.calib_method.uses_nncf and spec.scheme is not Scheme.INT8_STATIC:
        raise EdgekitError(f"--calib-method {method} calibrates static int8 (--quant int8), not {spec.tag}; "
                           f"{spec.tag} takes no calibration method")
    if spec.calib_method.uses_nncf and spec.qat:
        raise EdgekitError(f"--calib-method {method} is post-training only and does not combine with QAT; use "
                           "--calib-method histogram or minmax with --qat, or drop --qat")
    if spec.smooth_quant_alpha is not None and spec.calib_method is not CalibMethod.NNCF_SMOOTHQUANT:
        raise EdgekitError(f"smooth_quant_alpha applies to --calib-method nncf-smoothquant, not {method}")


def scheme_names() -> list[str]:
    """Every name :meth:`QuantSpec.parse` accepts (palettization shown with its usual 4 bits)."""
    return [s.value if s is not Scheme.PALETTIZE else "palettizeN (N=1..8)" for s in Scheme]


F = TypeVar("F", bound=Callable)


class QuantMethods(Generic[F]):
    """A converter's quantization methods, one per scheme; asking for another names the supported ones."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._methods: dict[Scheme, F] = {}

    def register(self, scheme: Scheme) -> Callable[[F], F]:
        """Decorator: ``fn`` writes ``scheme`` for this format."""
        def add(fn: F) -> F:
            if scheme in self._methods:
                raise ValueError(f"{self.fmt}: quantization scheme {scheme.value} registered twice")
            self._methods[scheme] = fn
            return fn

        return add

    def get(self, spec: QuantSpec) -> F:
        """The method for ``spec``'s scheme, or an error naming the schemes this format supports."""
        try:
            return self._methods[spec.scheme]
        except KeyError:
            raise EdgekitError(
                f"the {self.fmt} converter does not support quantization {spec.tag!r}; "
                f"it supports: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """The supported schemes' names."""
        return [s.value if s is not Scheme.PALETTIZE else "palettizeN" for s in self._methods]

    def __contains__(self, scheme: object) -> bool:
        return scheme in self._methods
