"""Where benchmarks can run besides the host, registered by device backends (e.g. adb)."""

from __future__ import annotations

from typing import Callable

from edgekit.registry import Registry

# backend name → function listing its attached devices as {"name", "description"} rows
DEVICE_LISTERS: Registry[Callable[[], list[dict[str, str]]]] = Registry("device backend")

# backend name → function(artifact path, device serial or None, options) → one result row
DEVICE_BENCHES: Registry[Callable[..., object]] = Registry("device backend")


def parse_device(text: str) -> tuple[str, str | None]:
    """``host`` → ("host", None); ``adb`` → ("adb", None); ``adb:SERIAL`` → ("adb", "SERIAL")."""
    backend, _, serial = text.partition(":")
    return backend, serial or None
