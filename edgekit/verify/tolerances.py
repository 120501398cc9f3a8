"""Parity tolerances, one row per precision: how close an artifact must stay to PyTorch, per output.

A row is relative with an absolute floor: each output may differ by at most ``atol + rtol · scale``
(``scale`` = max |PyTorch output| of that output over all samples) and must keep an SNR of at least
``min_snr_db``; arg-max outputs add top-1 agreement (and, for next-token logits only, a KL escape). A
QuantSpec picks its row (its accuracy budget, when given, is the allowed accuracy drop); the user may
override any output's tolerance (``--tolerance NAME:rtol=…``, ``parse_tolerances``). Each verification
records the tolerance it used; ``recorded_tolerance`` reads it back from an untrusted manifest for
``edgekit verify``, never looser than the recorded spec allows and without the recorded overrides.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Mapping

from edgekit.errors import EdgekitError
from edgekit.quant.spec import QuantSpec

# how an output is judged: "logits" (a classifier's: top-1 agreement, accuracy drop), "tokens" (next-token
# logits of a language model: top-1 agreement or mean KL), "values" (boxes, embeddings, states: |Δ| and SNR)
KINDS = ("logits", "tokens", "values")
ALL_OUTPUTS = "*"  # the override key of a --tolerance without an output name


@dataclass(frozen=True)
class OutputTolerance:
    """A user's override of the tolerance of one output (or of all): a field left None keeps the row's."""

    rtol: float | None = None  # max |Δ| ≤ atol + rtol · scale
    atol: float | None = None  # the absolute floor of that bound
    top1: float | None = None  # least top-1 agreement (logits and tokens outputs)
    snr: float | None = None  # least SNR in dB
    kind: str | None = None  # how the output is judged, one of KINDS

    def to_dict(self) -> dict[str, float | str]:
        """The fields that are set, as the manifest records them."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> OutputTolerance:
        """A recorded override (untrusted): keys of ``OUTPUT_KEYS``, each value as that key allows."""
        if not isinstance(data, dict) or not data:
            raise EdgekitError(f"{where} is {data!r:.40}; expected an object of {', '.join(OUTPUT_KEYS)}")
        for key, value in data.items():
            _key(key, where).check(value, f"{where}: {key}")
        return cls(**data)

    def over(self, base: OutputTolerance | None) -> OutputTolerance:
        """This override on top of ``base`` (an all-outputs one): each field set here wins."""
        if base is None:
            return self
        return OutputTolerance(**{f.name: getattr(base, f.name) if getattr(self, f.name) is None
                                  else getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class _Key:
    """One key of a --tolerance: what values it allows and how its text is read."""

    allowed: str
    check_value: Callable[[Any], bool]
    read: Callable[[str], Any] = float

    def check(self, value: Any, where: str) -> None:
        if not self.check_value(value):
            raise EdgekitError(f"{where} = {value!r:.40}; expected {self.allowed}")


def _number(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high


# --tolerance keys → what each allows
OUTPUT_KEYS: dict[str, _Key] = {
    "rtol": _Key("a number ≥ 0 (relative to the output's largest |value|)", _number(0.0, math.inf)),
    "atol": _Key("a number ≥ 0 (absolute floor)", _number(0.0, math.inf)),
    "top1": _Key("a share in [0, 1] (least top-1 agreement)", _number(0.0, 1.0)),
    "snr": _Key("a number of dB ≥ 0 (least signal-to-noise ratio)", _number(0.0, 1000.0)),
    "kind": _Key(f"one of {', '.join(KINDS)}", lambda v: v in KINDS, str),
}
_EXAMPLE = "e.g. --tolerance boxes:rtol=1e-3,atol=0.5 or --tolerance rtol=1e-3 for every output"


def _key(key: Any, where: str) -> _Key:
    if key not in OUTPUT_KEYS:
        raise EdgekitError(f"{where}: unknown key {key!r:.30}; allowed keys: {', '.join(OUTPUT_KEYS)}")
    return OUTPUT_KEYS[key]


def parse_tolerances(texts: Iterable[str]) -> dict[str, OutputTolerance]:
    """Repeated ``--tolerance [OUTPUT:]key=value[,key=value]`` flags → overrides by output name
    (``ALL_OUTPUTS`` for a flag without a name); an output may be named in several flags, a key once."""
    found: dict[str, dict[str, Any]] = {}
    for text in texts:
        name, pairs = _split_flag(text)
        given = found.setdefault(name, {})
        for pair in pairs.split(","):
            key, sep, raw = (part.strip() for part in pair.partition("="))
            where = f"--tolerance {text}"
            if not sep or not raw:
                raise EdgekitError(f"{where}: {pair.strip() or 'an empty item'!r} is not key=value; {_EXAMPLE}")
            spec = _key(key, where)
            if key in given:
                raise EdgekitError(f"{where}: {key} is given twice for {_label(name)}; give it once")
            try:
                given[key] = spec.read(raw)
            except ValueError:
                raise EdgekitError(f"{where}: {key} = {raw!r:.30}; expected {spec.allowed}") from None
            spec.check(given[key], f"{where}: {key}")
    return {name: OutputTolerance(**given) for name, given in found.items()}


def _split_flag(text: str) -> tuple[str, str]:
    """``"boxes:rtol=1e-3"`` → ("boxes", "rtol=1e-3"); ``"rtol=1e-3"`` → (ALL_OUTPUTS, "rtol=1e-3")."""
    head, sep, tail = text.partition(":")
    if not sep or "=" in head:
        name, pairs = ALL_OUTPUTS, text
    else:
        name, pairs = head.strip(), tail
        if not name:
            raise EdgekitError(f"--tolerance {text}: the output name before ':' is empty; {_EXAMPLE}")
    if not pairs.strip():
        raise EdgekitError(f"--tolerance {text}: no key=value given; {_EXAMPLE}")
    return name, pairs


def _label(name: str) -> str:
    return "every output" if name == ALL_OUTPUTS else f"output {name!r}"


def check_output_names(overrides: Mapping[str, OutputTolerance], names: Iterable[str]) -> None:
    """Every output an override names must be one of the model's ``names`` (all its graphs' outputs)."""
    names = list(dict.fromkeys(names))
    for name in overrides:
        if name != ALL_OUTPUTS and name not in names:
            raise EdgekitError(f"--tolerance {name}: the model has no output {name!r}; its outputs are "
                               f"{', '.join(names) or '(none)'} (or give no name to apply to all outputs)")


@dataclass(frozen=True)
class Criteria:
    """What one output must meet: a Tolerance resolved for the output's name and kind (None = not checked)."""

    kind: str
    rtol: float | None  # None: max |Δ| is no criterion (quantized rows)
    atol: float
    min_snr_db: float | None
    min_top1_agreement: float | None  # logits and tokens only
    max_mean_kl_bits: float | None  # tokens only: passes also when the mean KL stays within this

    def max_abs_diff(self, scale: float) -> float | None:
        """The allowed max |Δ| of an output whose largest |PyTorch value| is ``scale``."""
        return None if self.rtol is None else self.atol + self.rtol * scale


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's outputs must stay to PyTorch's (see ``edgekit.verify.parity.compare``)."""

    rtol: float | None  # per output max |Δ| ≤ atol + rtol · scale; None = |Δ| is not a criterion (quantized)
    atol: float  # the absolute floor of the |Δ| bound
    # least 10·log10(Σref² / ΣΔ²) per output: every output where rtol is set, else "values" outputs only
    min_snr_db: float | None
    min_top1_agreement: float  # share of rows whose arg-max class must match PyTorch's (logits, tokens)
    max_accuracy_drop: float | None = None  # PyTorch fp32 accuracy minus the artifact's (labelled data only)
    # next-token logits only: pass also when the mean KL(PyTorch ‖ artifact) of their softmax stays within
    # this many bits per position, even if arg-max agreement is lower (near ties among a whole vocabulary)
    max_mean_kl_bits: float | None = None
    overrides: Mapping[str, OutputTolerance] = field(default_factory=dict)  # the user's, by output name

    def to_dict(self) -> dict[str, Any]:
        """Every field, as the manifest records it (overrides as {name: {key: value}})."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "overrides"} | {
            "overrides": {name: o.to_dict() for name, o in self.overrides.items()}}

    @classmethod
    def from_dict(cls, data: Any) -> Tolerance:
        """A recorded tolerance (untrusted): every field present, a number in its range or null where allowed."""
        if not isinstance(data, dict):
            raise EdgekitError(f"it is a {type(data).__name__}, not an object")
        names = [f.name for f in fields(cls)]
        if sorted(data) != sorted(names):
            odd = sorted(set(data) ^ set(names))[0]
            raise EdgekitError(f"field {odd!r:.40} is {'unknown' if odd in data else 'missing'}; "
                               f"fields: {', '.join(names)}")
        for name, (low, high, nullable) in _RANGES.items():
            value = data[name]
            if not ((value is None and nullable) or _number(low, high)(value)):
                allowed = f"a number in [{low:g}, {high:g}]" + (" or null" if nullable else "")
                raise EdgekitError(f"{name} is {value!r:.40}; expected {allowed}")
        overrides = data["overrides"]
        if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
            raise EdgekitError(f"overrides is {overrides!r:.40}; expected an object of output name → override")
        return cls(**{n: data[n] for n in _RANGES}, overrides={
            name: OutputTolerance.from_dict(value, f"overrides[{name!r:.30}]") for name, value in overrides.items()})

    def kind_for(self, name: str) -> str | None:
        """The kind the user's overrides give output ``name``, or None."""
        return self._override(name).kind

    def criteria(self, name: str, kind: str) -> Criteria:
        """What output ``name`` of ``kind`` must meet: this row with the user's overrides applied."""
        over = self._override(name)
        checks_abs = self.rtol is not None or over.rtol is not None or over.atol is not None
        rtol = over.rtol if over.rtol is not None else (self.rtol or 0.0)
        snr = self.min_snr_db if kind == "values" or self.rtol is not None else None
        arg_max = kind != "values"
        top1 = over.top1 if over.top1 is not None else self.min_top1_agreement
        return Criteria(kind, rtol if checks_abs else None, self.atol if over.atol is None else over.atol,
                        over.snr if over.snr is not None else snr, top1 if arg_max else None,
                        self.max_mean_kl_bits if kind == "tokens" else None)

    def _override(self, name: str) -> OutputTolerance:
        named, every = self.overrides.get(name), self.overrides.get(ALL_OUTPUTS)
        return (named or OutputTolerance()).over(every)

    def within(self, bound: Tolerance) -> Tolerance:
        """This tolerance, tightened field by field wherever ``bound`` is stricter (never looser than ``bound``);
        overrides are dropped (the bound's are kept)."""
        # a |Δ| bound also widens the near-tie allowance of top-1 agreement: accepted only where the bound has one
        rtol = None if bound.rtol is None else _low(self.rtol, bound.rtol, False)
        atol = bound.atol if bound.rtol is None else min(self.atol, bound.atol)
        snr = bound.min_snr_db if self.min_snr_db is None else max(self.min_snr_db, bound.min_snr_db or 0.0)
        return Tolerance(rtol, atol, snr, max(self.min_top1_agreement, bound.min_top1_agreement),
                         _low(self.max_accuracy_drop, bound.max_accuracy_drop, False),
                         _low(self.max_mean_kl_bits, bound.max_mean_kl_bits, True),  # null: no KL escape at all
                         dict(bound.overrides))


def _low(a: float | None, b: float | None, none_is_strict: bool) -> float | None:
    """The stricter of two upper bounds, where None means no bound (or, ``none_is_strict``, no escape)."""
    if a is None or b is None:
        return None if none_is_strict else (b if a is None else a)
    return min(a, b)


# field → (lowest, highest, may be null) of a recorded tolerance
_RANGES: dict[str, tuple[float, float, bool]] = {
    "rtol": (0.0, math.inf, True), "atol": (0.0, math.inf, False), "min_snr_db": (0.0, 1000.0, True),
    "min_top1_agreement": (0.0, 1.0, False), "max_accuracy_drop": (0.0, 1.0, True),
    "max_mean_kl_bits": (0.0, math.inf, True)}
# the fields of a tolerance recorded before parity became scale-aware (an absolute max |Δ|)
_BEFORE_SCALE_AWARE = {"max_abs_diff", "min_top1_agreement", "max_accuracy_drop", "max_mean_kl_bits", "max_rel_error"}


# Float precisions must reproduce PyTorch's numbers, relative to each output's scale. Measured fp32 max |Δ| over
# ONNX Runtime, LiteRT and the Core ML MIL reference: 7e-8..1.7e-6 of the scale on foreign models (logits of 7e-25
# to boxes of 424) and 1.5e-7..3.9e-6 on edgekit's recipes, except an SSM's state after a 1024-byte prefill,
# 1.2e-5 in all three (its error grows with the length: 2.9e-6 at 256); SNR 106..155 dB. fp16 (Core ML):
# 4e-4..4.5e-3 of the scale, SNR 53..73 dB. rtol sits ~8× and ~7× above the worst of those, SNR 26 dB below;
# the floors only matter for outputs far below 1. A conversion off by 1e-3 of an output's scale fails fp32.
# Quantized ones cannot (int8 logits differ by ~1e-2..1e-1), so logits are judged like a user would: the same
# top-1 class on nearly every input and an accuracy drop against fp32 within budget (1 point;
# `--accuracy-budget` sets it per run); a language model's next-token logits, whose near ties among a whole
# vocabulary flip arg-max, pass also on a small mean KL (measured ≤ 0.16 bits on tiny byte LMs). 8-bit weights
# alone are judged like W8A8 (98%): an adapter on a hard shifted domain has many near ties (0.8-1.2% flips
# measured with 99.2% of its accuracy kept). Weight-only 4-bit / palettized get a looser row. Other outputs
# (states, boxes) keep an SNR above what was measured on tiny byte LMs (int8-weight ≥ 42 dB, int8 ≥ 20 dB where
# the conversion is sound) and far above a collapsed or zeroed one (≤ 0 dB): 12 dB is a relative error of
# 0.25, 9 dB of 0.35, the bounds these rows had before they were written in dB.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rtol=1e-4, atol=1e-7, min_snr_db=80.0, min_top1_agreement=1.0),
    "fp16": Tolerance(rtol=3e-2, atol=1e-4, min_snr_db=26.0, min_top1_agreement=0.99),
    "int8": Tolerance(rtol=None, atol=0.0, min_snr_db=12.0, min_top1_agreement=0.98, max_accuracy_drop=0.01,
                      max_mean_kl_bits=0.05),
    "int8-dynamic": Tolerance(rtol=None, atol=0.0, min_snr_db=12.0, min_top1_agreement=0.98,
                              max_accuracy_drop=0.01, max_mean_kl_bits=0.05),
    "int8-weight": Tolerance(rtol=None, atol=0.0, min_snr_db=12.0, min_top1_agreement=0.98,
                             max_accuracy_drop=0.01, max_mean_kl_bits=0.05),
    "int4-weight": Tolerance(rtol=None, atol=0.0, min_snr_db=9.0, min_top1_agreement=0.95, max_accuracy_drop=0.02),
    "palettize": Tolerance(rtol=None, atol=0.0, min_snr_db=9.0, min_top1_agreement=0.95, max_accuracy_drop=0.02),
}


def tolerance_for(spec: QuantSpec | str, overrides: Mapping[str, OutputTolerance] | None = None) -> Tolerance:
    """The row of ``spec``'s scheme, its accuracy budget (when given) as the allowed accuracy drop, and the
    user's per-output ``overrides`` (``parse_tolerances``). A name (``"int8"``) stands for ``QuantSpec.parse(name)``."""
    spec = QuantSpec.parse(spec)
    row = TOLERANCES[spec.scheme.value]
    if spec.budget_points is not None:
        row = replace(row, max_accuracy_drop=spec.budget_points / 100)
    return replace(row, overrides=dict(overrides or {}))


def recorded_tolerance(verification: Any, precision: str,
                       overrides: Mapping[str, OutputTolerance] | None = None) -> tuple[Tolerance, str]:
    """The tolerance an artifact was verified with, from its manifest entry (untrusted): the recorded one,
    never looser than what the recorded spec allows (``tolerance_for(spec)``, budget included). Overrides
    recorded in the manifest are not applied: only the user's ``overrides`` (``edgekit verify --tolerance``)
    are. Returns it with a note saying what was rebuilt or dropped and why ("" when nothing was)."""
    spec, why = _recorded_spec(verification, precision)
    bound = tolerance_for(spec, overrides)
    named = f"the {'default ' if why else ''}{spec.tag} tolerance" + (
        f" (budget {spec.budget_points:g} points)" if spec.budget_points is not None else "")
    notes = [why] if why else []
    recorded = verification.get("tolerance") if isinstance(verification, dict) else None
    if recorded is None:
        return bound, "; ".join([*notes, f"manifest.json records no tolerance; checked with {named}"])
    if isinstance(recorded, dict) and set(recorded) == _BEFORE_SCALE_AWARE:
        return bound, "; ".join([*notes, "recorded tolerance predates scale-aware parity (an absolute max |Δ|); "
                                 f"checked with {named}"])
    try:
        tolerance = Tolerance.from_dict(recorded)
    except EdgekitError as exc:
        return bound, "; ".join([*notes, f"recorded tolerance is damaged ({exc}); checked with {named}"])
    notes += _dropped_overrides(tolerance.overrides, bound.overrides)
    used = tolerance.within(bound)
    looser = [f.name for f in fields(Tolerance)
              if f.name != "overrides" and getattr(used, f.name) != getattr(tolerance, f.name)]
    if looser:
        notes.append(f"recorded tolerance is looser than {named} allows ({', '.join(looser)}); checked within it")
    elif why:
        notes.append(f"recorded tolerance used within {named}")
    return used, "; ".join(notes)


def _dropped_overrides(recorded: Mapping[str, OutputTolerance], given: Mapping[str, OutputTolerance]) -> list[str]:
    """The note on overrides a manifest records but the user did not pass again (they are not applied)."""
    dropped = {name: o for name, o in recorded.items() if given.get(name) != o}
    if not dropped:
        return []
    flags = " ".join(f"--tolerance {'' if n == ALL_OUTPUTS else n + ':'}"
                     + ",".join(f"{k}={v:g}" if not isinstance(v, str) else f"{k}={v}" for k, v in o.to_dict().items())
                     for n, o in dropped.items())
    return [f"manifest.json records tolerance overrides that a manifest cannot impose ({flags[:200]}); not applied: "
            "pass them to edgekit verify to check with them"]


def _recorded_spec(verification: Any, precision: str) -> tuple[QuantSpec, str]:
    """The QuantSpec recorded in a verification (``quantization.spec``), or else the default spec of
    ``precision`` with the reason the recorded one is not used."""
    quant = verification.get("quantization") if isinstance(verification, dict) else None
    data = quant.get("spec") if isinstance(quant, dict) else None
    default = QuantSpec.parse(precision)
    if data is None:
        return default, "manifest.json records no quantization spec"
    try:
        spec = QuantSpec.from_dict(data)
    except EdgekitError as exc:
        return default, f"recorded quantization spec is damaged ({exc})"
    if spec.tag != default.tag:
        return default, f"recorded quantization spec is {spec.tag}, the artifact {default.tag}"
    return spec, ""
