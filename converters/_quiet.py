"""Silence the chatty native and Python logging of converter libraries; keep it for errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator

_QUIET_LOGGERS = ("coremltools", "absl", "torch.onnx", "onnxscript", "litert_torch", "jax", "root")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GLOG_minloglevel", "3")
if not os.environ.get("EDGEKIT_VERBOSE"):
    # coremltools warns at import about untested torch versions and missing macOS-only libraries
    logging.getLogger("coremltools").setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Send stdout/stderr (also of native code) to a temp file while converting.

    On an exception, the captured text is attached to it as ``exc.captured_output``.
    """
    if not enabled or os.environ.get("EDGEKIT_VERBOSE"):
        yield
        return
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        text = os.fdopen(os.dup(sink.fileno()), "w", buffering=1)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        except BaseException as exc:
            text.flush()
            _restore(saved)
            sink.seek(0)
            exc.captured_output = sink.read()[-20000:].decode(errors="replace")  # type: ignore[attr-defined]
            raise
        finally:
            text.close()
            _restore(saved)
            os.close(saved[0])
            os.close(saved[1])
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _restore(saved: tuple[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
