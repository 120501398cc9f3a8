"""Silence the chatty native and Python logging of converter libraries (and of torch while it reads a .pt2);
keep it for errors. A watcher process (``_reaper.py``) removes a conversion's staging files if native code
ends the process while quiet."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

from edgekit.io import live_paths, live_writes

_QUIET_LOGGERS = ("coremltools", "absl", "torch.onnx", "onnxscript", "litert_torch", "jax", "root", "torchao",
                  "torch.utils._pytree")
# Python loggers that warn at import, wherever the import happens: coremltools (untested torch versions,
# macOS-only libraries), torchao ("Failed to load … .so": CUDA kernels of no use on this machine), torch's
# pytree (torchao registering an Enum as a constant). Native logging at import (absl's "log messages before
# absl::InitializeLog()", oneDNN's notice from LiteRT's converter library) ignores TF_CPP_MIN_LOG_LEVEL: those
# imports happen inside ``quiet()``.
_IMPORT_TIME_LOGGERS = ("coremltools", "torchao", "torch.utils._pytree")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GLOG_minloglevel", "3")
if not os.environ.get("EDGEKIT_VERBOSE"):
    for _name in _IMPORT_TIME_LOGGERS:
        logging.getLogger(_name).setLevel(logging.ERROR)


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
        _WATCHER.arm(saved[1])
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
            _WATCHER.disarm()
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


class _Watcher:
    """Speaks up when the process dies inside :func:`quiet`: a native library that calls ``_exit`` or
    ``abort`` (LiteRT's own flatbuffer file writer did, with LLVM's fatal-error ``_exit(1)``, on a full
    disk; edgekit now serializes flatbuffers in memory and writes them from Python, see
    ``converters/tflite/export.py::Flatbuffer``) would end it with fds 1/2 still redirected. A small watcher
    process (``_reaper.py``, started once, at the first ``quiet()``) holds the original stderr and a
    pipe from us; when the pipe closes while a write is in progress, it prints one ``edgekit: error:``
    line naming the file (and a full disk) and removes this process's staging folders and lock files.

    Why a watcher: ``_exit`` skips every in-process exit handler (C ``atexit`` included), and
    converting in a child process would mean forking a process with live torch/MLIR thread pools
    (deadlock-prone) or pickling the model into a spawned one (edgekit never pickles). The watcher
    also covers ``abort()``, crashes and SIGKILL; the bundle's next writer still removes any debris."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._failed = False
        self._depth = 0

    def arm(self, stderr_fd: int) -> None:
        self._depth += 1
        targets = live_writes()
        target = targets[-1] if targets else None
        self._send({"armed": True, "target": str(target) if target else None,
                    "format": _format_of(target) if target else None,
                    "remove": [[str(p), is_lock] for p, is_lock in live_paths()]}, stderr_fd)

    def disarm(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            self._send({"armed": False}, None)

    def _send(self, message: dict, stderr_fd: int | None) -> None:
        if self._proc is None and stderr_fd is not None and not self._failed:
            self._start(stderr_fd)
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the watcher is gone: carry on without it
            self._proc = None

    def _start(self, stderr_fd: int) -> None:
        try:
            self._proc = subprocess.Popen([sys.executable, "-I", str(Path(__file__).with_name("_reaper.py"))],
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr_fd,
                                          start_new_session=True)
        except OSError:
            self._failed = True


FORMAT_SUFFIXES: dict[str, str] = {}  # artifact suffix → format name, filled by ``register_converter``


def _format_of(target: Path) -> str:
    return next((fmt for suffix, fmt in FORMAT_SUFFIXES.items() if target.name.endswith(suffix)),
                target.suffix.lstrip("."))


_WATCHER = _Watcher()
