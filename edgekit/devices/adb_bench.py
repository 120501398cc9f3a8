"""Benchmark one model on an adb device and return a ``BenchResult`` for the common report.

Two runners (a registry): ``benchmark_model`` runs the LiteRT binary that the user names (never
downloaded) with a delegate from ``DELEGATES``; ``python`` runs the model with the LiteRT
interpreter or ONNX Runtime on boards that have Python (and on the emulated test device).
Model and binary are pushed cached by sha256; pushed files are removed afterwards unless ``keep``.
Each result records the device, thermal status and battery before and after, the exact command
and the raw log.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgekit.bench.result import BenchResult
from edgekit.bench.stats import LatencyStats
from edgekit.devices.adb import AdbError, adb_version, quote_command, render, resolve_serial, run_shell
from edgekit.devices.benchmark_log import delegate_coverage, parse_benchmark_log
from edgekit.devices.device_info import DeviceInfo, battery_status, device_info, thermal_status
from edgekit.devices.remote_files import DEFAULT_REMOTE_DIR, check_binary_abi, push_files, remove_remote
from edgekit.errors import EdgekitError
from edgekit.registry import Registry

BINARY_ENV = "EDGEKIT_BENCHMARK_BINARY"
REMOTE_DIR_ENV = "EDGEKIT_ADB_REMOTE_DIR"


@dataclass(frozen=True)
class Delegate:
    """How ``benchmark_model`` is told to use a delegate, and how its log names it."""

    name: str
    flags: tuple[str, ...]  # may contain {qnn_dir}
    log_names: tuple[str, ...]  # substrings of the delegate's name in the log
    needs_qairt: bool = False


DELEGATES: Registry[Delegate] = Registry("delegate")
for _d in (
    Delegate("cpu", ("--use_xnnpack=true",), ("xnnpack",)),
    Delegate("gpu", ("--use_gpu=true",), ("gpu",)),
    Delegate("nnapi", ("--use_nnapi=true",), ("nnapi",)),
    Delegate("qnn", ("--external_delegate_path={qnn_dir}/libQnnTFLiteDelegate.so",
                     "--external_delegate_options=backend_type:htp"), ("qnn", "external"), needs_qairt=True),
):
    DELEGATES.register(_d.name)(_d)
DELEGATES.register("xnnpack")(DELEGATES.get("cpu"))

# Hexagon DSP generation of Snapdragon SoCs (QAIRT lib/hexagon-vNN); unknown SoCs get every version.
HEXAGON_BY_SOC = {"SM8450": "v69", "SM8475": "v69", "SM8550": "v73", "SM8650": "v75", "SM8750": "v79"}
QNN_ANDROID_LIBS = ("libQnnTFLiteDelegate.so", "libQnnHtp.so", "libQnnHtpPrepare.so", "libQnnSystem.so")


@dataclass(frozen=True)
class AdbBenchOptions:
    """What to run and how; validated on creation."""

    benchmark_binary: Path | None = None
    threads: int = 4
    warmup: int = 5
    runs: int = 50
    delegate: str = "cpu"
    cpu_mask: str | None = None
    qairt_dir: Path | None = None
    keep: bool = False
    python: str = "python3"
    remote_dir: str = DEFAULT_REMOTE_DIR
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        DELEGATES.get(self.delegate)  # unknown names list the valid ones
        for name in ("threads", "runs"):
            if getattr(self, name) < 1:
                raise EdgekitError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.warmup < 0:
            raise EdgekitError(f"warmup must be 0 or more, not {self.warmup}")
        if self.cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", self.cpu_mask):
            raise EdgekitError(f"cpu mask {self.cpu_mask!r} is not a hex core mask like f0 (cores 4-7)")
        if not posixpath.isabs(self.remote_dir):
            raise EdgekitError(f"remote dir {self.remote_dir!r} must be an absolute device path")


@dataclass
class _Session:
    """One run on one device: what was pushed (for cleanup) and the facts recorded with the result."""

    serial: str
    options: AdbBenchOptions
    info: DeviceInfo
    pushed: list = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def remote(self, *parts: str) -> str:
        return posixpath.join(self.options.remote_dir, *parts)

    def push(self, files: list[tuple[Path, str]]) -> None:
        self.pushed += push_files(self.serial, files, timeout=min(self.options.timeout_s, 120.0))

    def cleanup(self) -> None:
        if self.options.keep or not self.pushed:
            return
        base = self.options.remote_dir
        remove_remote(self.serial, [p.remote for p in self.pushed], base=posixpath.dirname(base.rstrip("/")))
        dirs = sorted({posixpath.dirname(p.remote) for p in self.pushed} | {base}, key=len, reverse=True)
        run_shell(self.serial, ["rmdir", *dirs], check=False)  # only empty folders go; kept files stay


def _start(serial: str, options: AdbBenchOptions) -> _Session:
    info = device_info(serial)
    session = _Session(serial, options, info)
    session.extra.update(device=info.to_dict(), adb=adb_version(),
                         thermal_before=thermal_status(serial), battery_before=battery_status(serial))
    return session


def _finish(session: _Session) -> None:
    session.extra.update(thermal_after=thermal_status(session.serial), battery_after=battery_status(session.serial))


def _run_with_cleanup(session: _Session, body: Callable[[_Session], BenchResult]) -> BenchResult:
    """Run ``body``; always remove pushed files (unless keep) without hiding the original error."""
    try:
        result = body(session)
    except BaseException:
        try:
            session.cleanup()
        except AdbError:
            pass  # the device is gone; the original error says so
        raise
    try:
        session.cleanup()
        result.extra["cleanup"] = "kept on device" if session.options.keep else "removed"
    except AdbError as exc:
        result.extra["cleanup"] = f"failed: {exc}"
    return result


def _command_prefix(session: _Session, env: dict[str, str]) -> list[str]:
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    if session.options.cpu_mask:
        prefix += ["taskset", session.options.cpu_mask]
    return prefix


def _run_on_device(session: _Session, argv: list[str]) -> tuple[str, int, str]:
    """Run argv (stderr merged into stdout, as benchmark_model logs to both); returns (log, status, cmd)."""
    script = ["sh", "-c", quote_command(argv) + " 2>&1"]
    result = run_shell(session.serial, script, timeout=session.options.timeout_s, check=False)
    return result.stdout + result.stderr, result.returncode, render(result.command)


# Why a command on the device failed: (exit status or None, pattern or None, explanation). First match wins.
_RUN_FAILURES: list[tuple[int | None, str | None, str]] = [
    (None, r"Exec format error|not executable: (32|64)-bit ELF|syntax error: unexpected", "{what} cannot run on "
     "this device: it is built for another CPU architecture (device ABIs: {abis})"),
    (126, None, "{what} is not executable on the device (exit 126: permission denied; is the storage mounted "
     "noexec? try another --remote-dir)"),
    (127, None, "{what} was not found on the device (exit 127)"),
]


def explain_failure(what: str, status: int, log: str, abis: str) -> str:
    """One clear sentence for a failed device command, with the tail of its output."""
    for code, pattern, message in _RUN_FAILURES:
        if (code is None or code == status) and (pattern is None or re.search(pattern, log)):
            head = message.format(what=what, abis=abis)
            break
    else:
        head = f"{what} failed on the device with exit status {status}"
    tail = "\n".join(log.strip().splitlines()[-8:]) or "(no output)"
    return f"{head}. Last output:\n{tail}"


def _latency_from_log(stat: dict[str, Any], warmup: int, threads: int) -> LatencyStats:
    """benchmark_model prints min/avg (and median on newer builds) but never a p90: that stays NaN."""
    median = stat.get("median")
    return LatencyStats(median_ms=median / 1000 if median is not None else math.nan, p90_ms=math.nan,
                        min_ms=stat["min"] / 1000, mean_ms=stat["avg"] / 1000, runs=int(stat["count"]),
                        warmup=warmup, threads=threads)


def check_coverage(parsed: dict[str, Any], delegate: Delegate) -> dict[str, Any]:
    """Coverage of the requested delegate; a delegate that took 0 nodes is an error."""
    cov = delegate_coverage(parsed, delegate.log_names)
    if cov is None:
        note = ("plain CPU kernels" if delegate.name == "cpu" else
                "this benchmark_model build did not report how much of the graph the delegate took")
        return {"delegate": delegate.name, "percent": None, "execution": "unknown", "note": note}
    if cov["percent"] == 0.0:
        nodes = f" ({cov['delegated_nodes']} of {cov['total_nodes']} nodes)" if cov["total_nodes"] else ""
        raise EdgekitError(f"the {delegate.name} delegate was requested but took no part of the graph{nodes}: "
                           "the model ran on the CPU fallback, so its timing says nothing about "
                           f"{delegate.name}. Check the delegate libraries and that the model's ops and types "
                           "are supported (a quantized model for NPUs)")
    return cov


def qnn_libraries(qairt_dir: Path, soc: str) -> list[Path]:
    """QNN libraries to push from a QAIRT SDK folder: the TFLite delegate, HTP libs, stubs, skels."""
    android = qairt_dir / "lib" / "aarch64-android"
    delegate_lib = android / "libQnnTFLiteDelegate.so"
    if not delegate_lib.is_file():
        raise EdgekitError(f"{delegate_lib} not found: --qairt-dir must be an unpacked Qualcomm AI Runtime "
                           "(QAIRT/QNN) SDK folder containing lib/aarch64-android/libQnnTFLiteDelegate.so "
                           "(get it from Qualcomm's software center; edgekit never downloads it)")
    version = HEXAGON_BY_SOC.get(soc.upper())
    stub = f"libQnnHtp{version.upper()}Stub.so" if version else "libQnnHtpV*Stub.so"
    skel_dirs = [qairt_dir / "lib" / f"hexagon-{version}"] if version else sorted((qairt_dir / "lib").glob("hexagon-v*"))
    libs = [android / name for name in QNN_ANDROID_LIBS if (android / name).is_file()]
    libs += sorted(android.glob(stub)) + [p for d in skel_dirs for p in sorted((d / "unsigned").glob("*.so"))]
    return libs
