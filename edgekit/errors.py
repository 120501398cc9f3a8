"""User-facing errors: one line that names what was wrong and what would be right."""

from __future__ import annotations


class EdgekitError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line."""


class MissingExtraError(EdgekitError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install -c constraints.txt -e '.[{extra}]'"
        )


class CannotVerify(EdgekitError):
    """An artifact converted, but this machine has no way to run it (a reference evaluator lacks a
    kernel, a runtime is missing): it is kept as "exported, not verified here: <reason>"."""


class UnsupportedOpError(EdgekitError):
    """A converter cannot lower an operator of the model."""

    def __init__(self, op: str, fmt: str, detail: str = "") -> None:
        self.op, self.fmt = op, fmt
        tail = f" ({detail})" if detail else ""
        super().__init__(f"the {fmt} converter cannot handle operator {op}{tail}")


def first_line(exc: BaseException, limit: int = 200, empty: str | None = None) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters; ``empty`` (default: the exception's
    type name) when it has no message."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else (empty if empty is not None else type(exc).__name__)[:limit]


def require(module: str, extra: str):
    """Import an optional dependency or raise an error naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.split(".")[0], extra) from exc
