"""Typed validation of user-given options: unknown keys and wrong types name the key, value and options."""

from __future__ import annotations

import dataclasses
import inspect
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
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(defaults))}"
        )
    return {key: _check_type(value, defaults[key], f"{where}.{key}") for key, value in values.items()}


def _check_type(value: Any, default: Any, where: str) -> Any:
    if default is inspect.Parameter.empty or default is None:
        return tuple(value) if isinstance(value, list) else value
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is tuple and isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    raise EdgekitError(f"{where} = {value!r} is a {_tname(value)}; expected a {_tname(default)}")


def _tname(value: Any) -> str:
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
            "tuple": "list", "list": "list", "dict": "table"}.get(type(value).__name__, type(value).__name__)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return inspect.Parameter.empty
