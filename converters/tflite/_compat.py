"""Every use of LiteRT's and litert-torch's private or internal API, in one place.

Written against ai-edge-litert 2.3.0 and litert-torch 0.10.0 (``WRITTEN_AGAINST``). ``tests/test_compat.py``
runs one canary per function, so an upgrade that moves one fails there, by name.
"""

from __future__ import annotations

from typing import Any

WRITTEN_AGAINST = {"ai-edge-litert": "2.3.0", "litert-torch": "0.10.0"}


def ops_details(interpreter: Any) -> list[dict[str, Any]]:
    """Every operator of the loaded model (``op_name``, inputs, outputs): ``Interpreter._get_ops_details``."""
    return interpreter._get_ops_details()


def has_lowering(target: Any) -> bool:
    """Whether litert-torch can lower this core-ATen operator: ``litert_torch.backend.lowerings.lookup``."""
    from litert_torch.backend import lowerings

    return lowerings.lookup(target) is not None
