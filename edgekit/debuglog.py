"""The debug log: without ``--debug``, third-party warnings and the tracebacks of unexpected errors go
to one file (the last command's; ``EDGEKIT_DEBUG_LOG`` picks it) instead of the user's terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Iterator

LOG_ENV = "EDGEKIT_DEBUG_LOG"


def debug_log_path() -> Path:
    """``$EDGEKIT_DEBUG_LOG``, else ``edgekit-debug-<uid>.log`` in the system's temp folder."""
    return Path(os.environ.get(LOG_ENV) or Path(tempfile.gettempdir()) / f"edgekit-debug-{os.getuid()}.log")


class _Log:
    """Appends to the debug log, which each command starts afresh (on its first line written)."""

    def __init__(self) -> None:
        self.started = False

    def write(self, text: str) -> Path | None:
        path = debug_log_path()
        try:
            with open(path, "a" if self.started else "w", encoding="utf-8") as f:
                f.write(text if text.endswith("\n") else text + "\n")
        except OSError:
            return None  # an unwritable log never hides the error itself
        self.started = True
        return path


@contextlib.contextmanager
def library_output_to_log(enabled: bool = True) -> Iterator[_Log]:
    """Route Python warnings, and log records that would go to stderr (torch's, torchao's, any library's
    handler or logging's last resort), to the debug log for the block; restored afterwards."""
    log = _Log()
    if not enabled:
        yield log
        return
    shown, emit = warnings.showwarning, logging.StreamHandler.emit

    def warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
        log.write(warnings.formatwarning(message, category, filename, lineno, line))

    def record_to_log(handler: logging.StreamHandler, record: logging.LogRecord) -> None:
        if handler.stream in (sys.stderr, sys.__stderr__):
            log.write(f"{record.levelname} {record.name}: {record.getMessage()}")
        else:
            emit(handler, record)

    global _ACTIVE
    warnings.showwarning, logging.StreamHandler.emit = warning_to_log, record_to_log
    outer, _ACTIVE = _ACTIVE, log
    try:
        yield log
    finally:
        warnings.showwarning, logging.StreamHandler.emit = shown, emit
        _ACTIVE = outer


_ACTIVE: _Log | None = None  # the log of the running command (None when edgekit is used as a library)


def log_traceback(exc: BaseException, heading: str = "") -> Path | None:
    """Append ``exc``'s traceback to the running command's debug log (a failure that was handled, e.g. one
    format of several); returns where it went, or None outside the CLI."""
    if _ACTIVE is None:
        return None
    return _ACTIVE.write((f"--- {heading} ---\n" if heading else "") + "".join(traceback.format_exception(exc)))


def log_exception(log: _Log, exc: BaseException) -> Path | None:
    """Write ``exc``'s traceback (and what a converter printed before it, if captured) to the log."""
    text = "".join(traceback.format_exception(exc))
    captured = getattr(exc, "captured_output", None)
    if captured:
        text += f"--- output of the failed step ---\n{captured}\n"
    return log.write(text)
