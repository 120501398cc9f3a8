"""Typed validation of user-given options: unknown keys and wrong types name the key, value and options."""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

from edgekit.errors import EdgekitError


def dataclass_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``values``; types are checked against the field defaults."""
    defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}
    checked = check_options(values, defaults, where)
    return cls(**checked)


def check_kwargs(fn: Callable[..., Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``values`` against the keyword parameters of ``fn`` (their defaults give the types)."""
    params = inspect.signature(fn).parameters
    defaults = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    required = [n for n, d in defaults.items() if d is inspect.Parameter.empty]
    missing = [n for n in required if n not in values]
    if missing:
        raise EdgekitError(f"{where}: missing required key {missing[0]!r}")
    return check_options(values, defaults, where)


def check_options(values: dict[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """Return ``values`` with lists made tuples and ints made floats where a float is expected."""
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise EdgekitError(
            f"{where.rstrip(':')}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(defaults))}"
        )
    prefix = f"{where} " if where.endswith(":") else f"{where}."  # "file.toml: seed", "file.toml: train.lr"
    return {key: _check_type(value, defaults[key], f"{prefix}{key}", key) for key, value in values.items()}


@dataclass(frozen=True)
class Bound:
    """An allowed numeric range; ``None`` is unbounded on that side, ``*_open`` excludes the end."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def ok(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return low_ok and (self.high is None or (value < self.high if self.high_open else value <= self.high))

    def describe(self, integer: bool = False) -> str:
        kind = "an integer" if integer else "a finite number"
        if integer and self.low is not None and self.low_open:  # > 0 for an integer reads better as >= 1
            return Bound(math.floor(self.low) + 1, self.high, False, self.high_open).describe(True)
        parts = [f"{'>' if self.low_open else '>='} {self.low:g}"] if self.low is not None else []
        parts += [f"{'<' if self.high_open else '<='} {self.high:g}"] if self.high is not None else []
        return f"{kind} {' and '.join(parts)}".strip()


POSITIVE, NON_NEGATIVE, ANY = Bound(0, low_open=True), Bound(0), Bound()
# Ranges by key name (globs), for keys whose default does not tell (see ``bound_for``).
KEY_BOUNDS: dict[str, Bound] = {
    "dropout": Bound(0, 1, high_open=True),
    "label_smoothing": Bound(0, 1, high_open=True),
    "*_fraction": Bound(0, 1, low_open=True, high_open=True),
    "weight_decay": NON_NEGATIVE,
    "warmup": NON_NEGATIVE,
    "accuracy_budget": ANY,  # < 0 means "none"
    "min_sqnr_db": ANY,  # < 0 means "none"
    "min_coverage": Bound(0, 100),  # percent of ops on the required accelerator
}


def bound_for(key: str, default: Any) -> Bound:
    """The range of a numeric option: ``KEY_BOUNDS`` first, else by its default's sign
    (positive default: must be positive; 0: must be >= 0; negative: any finite number)."""
    for pattern, bound in KEY_BOUNDS.items():
        if fnmatch.fnmatchcase(key, pattern):
            return bound
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return POSITIVE if default > 0 else NON_NEGATIVE if default == 0 else ANY
    return ANY


def check_number(value: float, bound: Bound, where: str) -> None:
    """Raise naming ``where``, the value and the allowed range unless ``value`` is finite and in ``bound``."""
    if not bound.ok(value):
        raise EdgekitError(f"{where} = {value!r} is out of range; expected {bound.describe(isinstance(value, int))}")


def _check_type(value: Any, default: Any, where: str, key: str) -> Any:
    if default is inspect.Parameter.empty or default is None:
        return tuple(value) if isinstance(value, list) else value
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is tuple and isinstance(value, list):
        return _check_sequence(value, default, where, key)
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        if want in (int, float):
            check_number(value, bound_for(key, default), where)
        return value
    raise EdgekitError(f"{where} = {value!r} is {_a(_tname(value))}; expected {_a(_tname(default))}")


def _check_sequence(value: list, default: tuple, where: str, key: str) -> tuple:
    """A list for a tuple option: each item checked like the default's items (nested lists too)."""
    items = []
    for i, item in enumerate(value):
        proto = default[min(i, len(default) - 1)] if default else None
        if isinstance(proto, tuple) and not isinstance(item, list):
            raise EdgekitError(f"{where}[{i}] = {item!r} is {_a(_tname(item))}; expected a list like {list(proto)}")
        checked = _check_type(item, proto, f"{where}[{i}]", key) if proto is not None else item
        items.append(tuple(checked) if isinstance(checked, list) else checked)
    return tuple(items)


def _tname(value: Any) -> str:
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
            "tuple": "list", "list": "list", "dict": "table"}.get(type(value).__name__, type(value).__name__)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return inspect.Parameter.empty
