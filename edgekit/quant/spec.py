"""QuantSpec: one typed description of how an artifact's numbers are stored and computed."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from typing import Callable, Generic, TypeVar

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


CALIBRATION_METHODS = ("histogram", "minmax")  # activation range observers for static int8
_DEFAULT_GRANULARITY = {Scheme.INT4_WEIGHT: Granularity.PER_BLOCK, Scheme.PALETTIZE: Granularity.PER_TENSOR}
_DEFAULT_BITS = {Scheme.FP32: 32, Scheme.FP16: 16, Scheme.INT4_WEIGHT: 4, Scheme.PALETTIZE: 4}
_NEEDS_CALIBRATION = {Scheme.INT8_STATIC}
_PALETTE = re.compile(r"palettize(\d)$")


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize. Build it with :meth:`parse` (``"int8"``, ``"palettize4"``) or directly."""

    scheme: Scheme = Scheme.FP32
    granularity: Granularity = Granularity.PER_CHANNEL  # of weight scales
    bits: int = 8  # weight bits (palettization: log2 of the look-up table size)
    block_size: int = 32  # input channels per scale when granularity is per-block
    calibration: str = "histogram"  # activation observer: one of CALIBRATION_METHODS
    calib_samples: int = 128  # calibration inputs drawn from the data
    float_layers: tuple[str, ...] = ()  # module names kept in float (mixed precision)
    qat: bool = False  # fine-tuned with fake quantization after PTQ

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise EdgekitError(f"calibration method {self.calibration!r} is not one of: {', '.join(CALIBRATION_METHODS)}")
        if self.calib_samples < 1:
            raise EdgekitError(f"calibration sample count must be at least 1, got {self.calib_samples}")
        if self.scheme is Scheme.PALETTIZE and not 1 <= self.bits <= 8:
            raise EdgekitError(f"palettization takes 1 to 8 bits, got {self.bits}")

    def check_options(self, budget_points: float | None, qat_epochs: int) -> None:
        """Mixed precision, QAT and float layers need calibrated int8 (``int8``); refuse them elsewhere."""
        asked = [name for name, on in (("an accuracy budget", budget_points is not None), ("QAT", qat_epochs or self.qat),
                                        ("float layers", bool(self.float_layers))) if on]
        if asked and self.scheme is not Scheme.INT8_STATIC:
            raise EdgekitError(f"{asked[0]} needs --quant int8 (static W8A8), not {self.tag}")
        if budget_points is not None and (qat_epochs or self.qat):
            raise EdgekitError("choose either an accuracy budget (mixed precision) or QAT, not both")
        if budget_points is not None and budget_points < 0:
            raise EdgekitError(f"accuracy budget must be >= 0 percentage points, got {budget_points}")

    @classmethod
    def parse(cls, name: str | QuantSpec, **overrides) -> QuantSpec:
        """``fp32``, ``fp16``, ``int8``, ``int8-dynamic``, ``int8-weight``, ``int4-weight``, ``palettizeN``."""
        if isinstance(name, QuantSpec):
            return replace(name, **overrides) if overrides else name
        match = _PALETTE.match(name)
        try:
            scheme = Scheme.PALETTIZE if match else Scheme(name)
        except ValueError:
            raise EdgekitError(f"unknown quantization {name!r}; choose one of: {', '.join(scheme_names())}") from None
        bits = int(match.group(1)) if match else _DEFAULT_BITS.get(scheme, 8)
        granularity = _DEFAULT_GRANULARITY.get(scheme, Granularity.PER_CHANNEL)
        return cls(scheme=scheme, bits=bits, granularity=granularity, **overrides)

    @property
    def tag(self) -> str:
        """The short name used in artifact names and the manifest's ``precision``."""
        return f"palettize{self.bits}" if self.scheme is Scheme.PALETTIZE else self.scheme.value

    @property
    def needs_calibration(self) -> bool:
        return self.scheme in _NEEDS_CALIBRATION

    @property
    def quantizes(self) -> bool:
        """True for every integer / look-up-table scheme (not fp32/fp16)."""
        return self.scheme not in (Scheme.FP32, Scheme.FP16)

    def to_dict(self) -> dict:
        return {"scheme": self.scheme.value, "tag": self.tag, "granularity": self.granularity.value,
                "bits": self.bits, "block_size": self.block_size, "calibration": self.calibration,
                "calib_samples": self.calib_samples, "float_layers": list(self.float_layers), "qat": self.qat}


def scheme_names() -> list[str]:
    """Every name :meth:`QuantSpec.parse` accepts (palettization shown with its usual 4 bits)."""
    return [s.value if s is not Scheme.PALETTIZE else "palettizeN (N=1..8)" for s in Scheme]


def as_spec(precision: str | QuantSpec) -> QuantSpec:
    return QuantSpec.parse(precision)


F = TypeVar("F", bound=Callable)


class QuantMethods(Generic[F]):
    """A converter's quantization methods, one per scheme; asking for another names the supported ones."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._methods: dict[Scheme, F] = {}

    def register(self, scheme: Scheme) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if scheme in self._methods:
                raise ValueError(f"{self.fmt}: quantization scheme {scheme.value} registered twice")
            self._methods[scheme] = fn
            return fn

        return add

    def get(self, spec: QuantSpec) -> F:
        try:
            return self._methods[spec.scheme]
        except KeyError:
            raise EdgekitError(
                f"the {self.fmt} converter does not support quantization {spec.tag!r}; "
                f"it supports: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return [s.value if s is not Scheme.PALETTIZE else "palettizeN" for s in self._methods]

    def __contains__(self, scheme: object) -> bool:
        return scheme in self._methods
