"""argparse ``type=`` functions shared by every command: a bad value fails while the command line
is parsed, before anything is loaded, trained or converted.

argparse prefixes each message with the flag (``argument --threads: ...``) and the CLI prints it as
one ``edgekit: error:`` line with exit code 1. Each message names the value and the allowed range.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable


def int_in(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (``None``: unbounded)."""
    return _ranged(int, "integer", low, high)


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``); nan and inf are refused."""
    return _ranged(float, "number", low, high, low_open)


def _ranged(convert: Callable[[str], Any], noun: str, low: float | None, high: float | None,
            low_open: bool = False) -> Callable[[str], Any]:
    integer = convert is int
    limits = [f"{'>' if low_open else '>='} {low:g}"] if low is not None else []
    limits += [f"<= {high:g}"] if high is not None else []
    expected = f"{'an integer' if integer else 'a finite number'} {' and '.join(limits)}".strip()

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an' if integer else 'a'} {noun}; "
                                             f"expected {expected}") from None
        above = low is None or (value > low if low_open else value >= low)
        if not (math.isfinite(value) and above and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected {expected}")
        return value

    parse.__name__ = noun  # argparse names the type in its own messages
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
finite_float = float_in()
positive_float = float_in(0, low_open=True)
non_negative_float = float_in(0)


def format_list(text: str) -> list[str]:
    """``--to onnx,tflite``: a non-empty list of registered converter names."""
    from edgekit import CONVERTERS

    names = [f.strip() for f in text.split(",") if f.strip()]
    known = ", ".join(CONVERTERS.names())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no format; give one or more of: {known}")
    unknown = [n for n in names if n not in CONVERTERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format {unknown[0]!r}; choose from: {known}")
    return names


def npu_target(text: str) -> str:
    """``--npu VENDOR:SOC`` with a registered vendor (checked before any conversion)."""
    from edgekit import EdgekitError, check_npu_target

    try:
        check_npu_target(text)
    except EdgekitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_require_flags(p: argparse.ArgumentParser) -> None:
    """``--require ACCELERATOR`` and ``--min-coverage PCT``: the placement gate (edgekit.placement)."""
    from edgekit import ACCELERATORS

    p.add_argument("--require", choices=ACCELERATORS, metavar="ACCELERATOR",
                   help=f"fail (exit 1) when an artifact that can target it would fall back from this accelerator "
                        f"({', '.join(ACCELERATORS)}); names the first offending ops")
    p.add_argument("--min-coverage", type=float_in(0, 100), default=100.0, metavar="PCT",
                   help="with --require: the share of ops that must run on the accelerator (default 100)")
