"""Benchmark one model on an adb device and return a ``BenchResult`` for the common report.

Two runners (a registry): ``benchmark_model`` runs the LiteRT binary that the user names (never
downloaded) with a delegate from ``DELEGATES``; ``python`` runs the model with the LiteRT
interpreter or ONNX Runtime on boards that have Python (and on the emulated test device).
Model and binary are pushed cached by sha256; pushed files are removed afterwards unless ``keep``.
Each result records the device, thermal status and battery before and after, the exact command
and the raw log. ``AdbBenchOptions`` is the typed form of every setting (``bench_adb``); ``bench_on_adb``
takes the same settings as keywords.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from edgekit.benchmarking.result import BenchResult
from edgekit.benchmarking.stats import LatencyStats
from edgekit.devices.adb import AdbError, adb_timeout, adb_version, quote_command, render, resolve_serial, run_shell
from edgekit.devices.benchmark_log import delegate_coverage, delegate_placement, parse_benchmark_log
from edgekit.devices.device_info import DeviceInfo, battery_status, device_info, thermal_status
from edgekit.devices.remote_files import DEFAULT_REMOTE_DIR, check_binary_abi, push_files, remove_remote
from edgekit.errors import EdgekitError
from edgekit.placement import Placement
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
    accelerator: str = ""  # the edgekit.placement accelerator its coverage answers for (result extra "placement")
    fix: str = ""  # what moves a node the delegate left to the CPU onto it
    label: str = ""  # how a placement report names it ("QNN"); default: the name in capitals


_NPU_FIX = ("quantize to int8 (--precision int8-static) and keep to ops the NPU supports (QNN: Qualcomm AI Engine "
            "Direct HTP op definitions; NNAPI: the Android NNAPI operation list)")
DELEGATES: Registry[Delegate] = Registry("delegate")
for _d in (
    Delegate("cpu", ("--use_xnnpack=true",), ("xnnpack",), accelerator="xnnpack", label="XNNPACK",
             fix="see the XNNPACK delegate's supported operators (LiteRT tflite/delegates/xnnpack/README.md)"),
    Delegate("gpu", ("--use_gpu=true",), ("gpu",), accelerator="gpu",
             fix="keep to ops the LiteRT GPU delegate supports (https://ai.google.dev/edge/litert/performance/gpu)"),
    Delegate("nnapi", ("--use_nnapi=true",), ("nnapi",), accelerator="npu", fix=_NPU_FIX),
    Delegate("qnn", ("--external_delegate_path={qnn_dir}/libQnnTFLiteDelegate.so",
                     "--external_delegate_options=backend_type:htp"), ("qnn", "external"), needs_qairt=True,
             accelerator="npu", fix=_NPU_FIX),
):
    DELEGATES.register(_d.name)(_d)
DELEGATES.register("xnnpack")(DELEGATES.get("cpu"))

RUNNERS: Registry[AdbRunner] = Registry("adb runner")  # filled below, once its bench functions are defined

# Hexagon DSP generation of Snapdragon SoCs (QAIRT lib/hexagon-vNN); unknown SoCs get every version.
HEXAGON_BY_SOC = {"SM8450": "v69", "SM8475": "v69", "SM8550": "v73", "SM8650": "v75", "SM8750": "v79"}
QNN_ANDROID_LIBS = ("libQnnTFLiteDelegate.so", "libQnnHtp.so", "libQnnHtpPrepare.so", "libQnnSystem.so")


@dataclass(frozen=True)
class AdbBenchOptions:
    """What to run on an adb device and how (the flags of ``edgekit bench --device adb``); validated on creation."""

    benchmark_binary: Path | None = None  # LiteRT benchmark_model built for the device (else $EDGEKIT_BENCHMARK_BINARY)
    threads: int = 4
    warmup: int = 5  # untimed runs first
    runs: int = 50  # timed runs
    delegate: str = "cpu"  # a name in DELEGATES
    cpu_mask: str | None = None  # pin to cores with taskset, hex mask such as f0
    qairt_dir: Path | None = None  # unpacked Qualcomm QAIRT SDK, for the qnn delegate
    keep: bool = False  # leave pushed files on the device
    runner: str = "benchmark_model"  # a name in RUNNERS
    python: str = "python3"  # the device's Python, for runner="python"
    remote_dir: str | None = None  # device folder (None: $EDGEKIT_ADB_REMOTE_DIR or /data/local/tmp/edgekit)
    timeout_s: float | None = None  # bounds every adb call, the run included (None: 600 s run, 10-120 s others)
    delegates: ClassVar[Registry[Delegate]] = DELEGATES  # the names ``delegate`` takes
    runners: ClassVar[Registry[AdbRunner]] = RUNNERS  # the names ``runner`` takes

    def __post_init__(self) -> None:
        for name in ("benchmark_binary", "qairt_dir"):  # a str path is taken as a Path
            if isinstance(getattr(self, name), (str, os.PathLike)):
                object.__setattr__(self, name, Path(getattr(self, name)))
        DELEGATES.get(self.delegate)  # unknown names list the valid ones
        RUNNERS.get(self.runner)
        for name in ("threads", "runs"):
            if getattr(self, name) < 1:
                raise EdgekitError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.warmup < 0:
            raise EdgekitError(f"warmup must be 0 or more, not {self.warmup}")
        if self.cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", self.cpu_mask):
            raise EdgekitError(f"cpu mask {self.cpu_mask!r} is not a hex core mask like f0 (cores 4-7)")
        if self.remote_dir is not None and not posixpath.isabs(self.remote_dir):
            raise EdgekitError(f"remote dir {self.remote_dir!r} must be an absolute device path")
        if self.timeout_s is not None and not (isinstance(self.timeout_s, (int, float))
                                               and 0 < self.timeout_s < float("inf")):
            raise EdgekitError(f"--timeout {self.timeout_s!r} must be a finite number of seconds > 0")

    @property
    def run_timeout_s(self) -> float:
        """The longest the run on the device may take."""
        return 600.0 if self.timeout_s is None else float(self.timeout_s)

    @property
    def formats(self) -> tuple[str, ...]:
        """The artifact formats this runner runs, e.g. ("tflite",)."""
        return RUNNERS.get(self.runner).formats


@dataclass
class _Session:
    """One run on one device: what was pushed (for cleanup) and the facts recorded with the result."""

    serial: str
    options: AdbBenchOptions
    info: DeviceInfo
    pushed: list = field(default_factory=list)
    targets: list[str] = field(default_factory=list)  # every device path a push was started for
    extra: dict[str, Any] = field(default_factory=dict)

    def remote(self, *parts: str) -> str:
        return posixpath.join(self.options.remote_dir, *parts)

    def push(self, files: list[tuple[Path, str]]) -> None:
        self.targets += [remote for _, remote in files]  # recorded first: a failed push is cleaned up too
        self.pushed += push_files(self.serial, files, timeout=min(self.options.run_timeout_s, 120.0))

    def cleanup(self) -> None:
        if self.options.keep or not self.targets:
            return
        base = self.options.remote_dir
        remove_remote(self.serial, self.targets, base=base)
        dirs = sorted({posixpath.dirname(p) for p in self.targets} | {base}, key=len, reverse=True)
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
    result = run_shell(session.serial, script, timeout=session.options.run_timeout_s, check=False)
    return result.stdout + result.stderr, result.returncode, render(result.command)


# Why a command on the device failed: (exit status or None, pattern or None, explanation). First match wins.
_RUN_FAILURES: list[tuple[int | None, str | None, str]] = [
    (None, r"Exec format error|not executable: (32|64)-bit ELF|syntax error: unexpected", "{what} cannot run on "
     "this device: it is not a valid executable here (built for another CPU architecture, or damaged; device ABIs: "
     "{abis})"),
    (126, None, "{what} is not executable on the device (exit 126: permission denied; is the storage mounted "
     f"noexec? set {REMOTE_DIR_ENV} to a folder on executable storage)"),
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
    """benchmark_model prints min/avg (and a median on newer builds) but never a p90: those stay None
    (shown as "—" in the table, null in JSON) rather than a made-up number."""
    median = stat.get("median")
    return LatencyStats(median_ms=median / 1000 if median is not None else None, p90_ms=None,  # type: ignore[arg-type]
                        min_ms=stat["min"] / 1000, mean_ms=stat["avg"] / 1000, runs=int(stat["count"]),
                        warmup=warmup, threads=threads)


def check_coverage(parsed: dict[str, Any], delegate: Delegate) -> dict[str, Any]:
    """Coverage of the requested delegate; a delegate that took 0 nodes is an error."""
    cov = delegate_coverage(parsed, delegate.log_names)
    if cov is None:
        note = "this benchmark_model build did not report how much of the graph the delegate took"
        return {"delegate": delegate.name, "percent": None, "execution": "unknown", "note": note}
    if cov["percent"] == 0.0:
        nodes = f" ({cov['delegated_nodes']} of {cov['total_nodes']} nodes)" if cov["total_nodes"] else ""
        raise EdgekitError(f"the {delegate.name} delegate was requested but took no part of the graph{nodes}: "
                           "the model ran on the CPU fallback, so its timing says nothing about "
                           f"{delegate.name}. Check the delegate libraries and that the model's ops and types "
                           "are supported (a quantized model for NPUs)")
    return cov


def log_placement(parsed: dict[str, Any], delegate: Delegate) -> Placement:
    """The delegate's coverage in the log as the ``placement`` of its accelerator (``delegate_placement``)."""
    return delegate_placement(parsed, delegate.log_names, delegate.accelerator,
                              f"{delegate.label or delegate.name.upper()} delegate log", delegate.fix)


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
    lib = qairt_dir / "lib"
    skel_dirs = [lib / f"hexagon-{version}"] if version else sorted(lib.glob("hexagon-v*"))
    libs = [android / name for name in QNN_ANDROID_LIBS if (android / name).is_file()]
    libs += sorted(android.glob(stub)) + [p for d in skel_dirs for p in sorted((d / "unsigned").glob("*.so"))]
    return libs


def _benchmark_binary(options: AdbBenchOptions) -> Path:
    named = options.benchmark_binary or os.environ.get(BINARY_ENV)
    if not named:
        raise EdgekitError(f"name the LiteRT benchmark_model binary built for the device with --benchmark-binary "
                           f"PATH or {BINARY_ENV}=PATH (edgekit never downloads it; LiteRT publishes prebuilt "
                           "android_aarch64_benchmark_model binaries, or build it from the LiteRT sources)")
    path = Path(named).expanduser()
    if not path.is_file():
        raise EdgekitError(f"benchmark binary {path} does not exist or is not a file; pass the path of the "
                           "LiteRT benchmark_model executable")
    return path.resolve()


def _pushed_summary(session: _Session) -> list[dict[str, Any]]:
    return [{"local": str(p.local), "remote": p.remote, "sha256": p.sha256, "bytes": p.size, "cached": p.cached}
            for p in session.pushed]


def _benchmark_model_run(s: _Session, model: Path, binary: Path, delegate: Delegate) -> BenchResult:
    o = s.options
    files = [(binary, s.remote("bin", binary.name)), (model, s.remote("models", model.name))]
    env: dict[str, str] = {}
    if delegate.needs_qairt:
        qnn_dir = s.remote("qnn")
        files += [(lib, posixpath.join(qnn_dir, lib.name)) for lib in qnn_libraries(Path(o.qairt_dir), s.info.soc)]
        env = {"LD_LIBRARY_PATH": qnn_dir,
               "ADSP_LIBRARY_PATH": f"{qnn_dir};/system/lib/rfsa/adsp;/system/vendor/lib/rfsa/adsp;/dsp"}
    s.push(files)
    run_shell(s.serial, ["chmod", "755", files[0][1]])
    flags = [f.format(qnn_dir=s.remote("qnn")) for f in delegate.flags]
    argv = _command_prefix(s, env) + [
        files[0][1], f"--graph={files[1][1]}", f"--num_threads={o.threads}", f"--warmup_runs={o.warmup}",
        "--warmup_min_secs=0", f"--num_runs={o.runs}", "--min_secs=0", *flags]
    log, status, command = _run_on_device(s, argv)
    _finish(s)
    s.extra.update(command=command, device_command=quote_command(argv), raw_log=log, exit_status=status,
                   pushed=_pushed_summary(s), delegate=delegate.name)
    if status != 0:
        raise EdgekitError(explain_failure(f"benchmark_model ({binary.name})", status, log, ", ".join(s.info.abilist)))
    parsed = parse_benchmark_log(log)
    s.extra["placement"] = {delegate.accelerator: log_placement(parsed, delegate).to_dict()}
    s.extra.update(parsed=parsed, coverage=check_coverage(parsed, delegate))
    if parsed["inference"] is None:
        raise EdgekitError("benchmark_model exited 0 but printed no inference timings; is it really LiteRT's "
                           "benchmark_model? Last output:\n" + "\n".join(log.strip().splitlines()[-8:]))
    warmup = parsed["warmup"]["count"] if parsed["warmup"] else o.warmup
    latency = _latency_from_log(parsed["inference"], warmup, o.threads)
    return BenchResult(artifact=model.name, format="tflite", runtime=f"benchmark_model/{delegate.name}",
                       target=f"adb:{s.serial}", latency=latency, extra=s.extra)


def bench_benchmark_model(model: Path, serial: str, options: AdbBenchOptions) -> BenchResult:
    """Run LiteRT's benchmark_model (named by the user) on the device and parse its log."""
    binary = _benchmark_binary(options)
    if model.suffix.lower() != ".tflite":
        raise EdgekitError(f"benchmark_model runs .tflite models, not {model.name}; use --runner python for ONNX")
    delegate = DELEGATES.get(options.delegate)
    if delegate.needs_qairt and options.qairt_dir is None:
        raise EdgekitError("the qnn delegate needs the Qualcomm AI Runtime SDK: pass --qairt-dir PATH (the "
                           "unpacked QAIRT folder with lib/aarch64-android/libQnnTFLiteDelegate.so)")
    session = _start(serial, options)
    check_binary_abi(binary, session.info.abilist, serial)  # before anything is pushed
    return _run_with_cleanup(session, lambda s: _benchmark_model_run(s, model, binary, delegate))


def _last_json(log: str) -> dict[str, Any] | None:
    for line in reversed(log.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _python_run(s: _Session, model: Path) -> BenchResult:
    o = s.options
    runner = Path(__file__).with_name("device_runner.py")
    files = [(runner, s.remote("runner", "edgekit_device_runner.py")), (model, s.remote("models", model.name))]
    s.push(files)
    argv = _command_prefix(s, {}) + [o.python, files[0][1], "--model", files[1][1], "--threads", str(o.threads),
                                     "--warmup", str(o.warmup), "--runs", str(o.runs)]
    log, status, command = _run_on_device(s, argv)
    _finish(s)
    report = _last_json(log)
    s.extra.update(command=command, device_command=quote_command(argv), raw_log=log, exit_status=status,
                   pushed=_pushed_summary(s), delegate="cpu")
    if report and "error" in report:
        raise EdgekitError(f"the python runner on device {s.serial} could not run {model.name}: {report['error']}")
    if status != 0 or not report:
        raise EdgekitError(explain_failure(f"{o.python} (the python runner)", status, log, ", ".join(s.info.abilist)))
    s.extra.update(runner={k: v for k, v in report.items() if k != "samples_ms"}, samples_ms=report["samples_ms"])
    latency = LatencyStats.from_samples(report["samples_ms"], warmup=o.warmup, threads=o.threads)
    fmt = model.suffix.lower().lstrip(".")
    return BenchResult(artifact=model.name, format=fmt, runtime=report["runtime"], target=f"adb:{s.serial}",
                       latency=latency, extra=s.extra)


def bench_python(model: Path, serial: str, options: AdbBenchOptions) -> BenchResult:
    """Run the model with the device's Python (LiteRT interpreter or ONNX Runtime): Linux boards, tests."""
    if model.suffix.lower() not in (".tflite", ".onnx"):
        raise EdgekitError(f"the python runner runs .tflite and .onnx models, not {model.name}")
    if DELEGATES.get(options.delegate).name != "cpu":
        raise EdgekitError(f"the python runner runs on the CPU only; use --runner benchmark_model for the "
                           f"{options.delegate} delegate")
    session = _start(serial, options)
    return _run_with_cleanup(session, lambda s: _python_run(s, model))


@dataclass(frozen=True)
class AdbRunner:
    """How a model is run on the device, and which artifact formats that runs."""

    run: Callable[[Path, str, AdbBenchOptions], BenchResult]
    formats: tuple[str, ...]


RUNNERS.register("benchmark_model")(AdbRunner(bench_benchmark_model, ("tflite",)))
RUNNERS.register("python")(AdbRunner(bench_python, ("tflite", "onnx")))


def parse_adb_target(target: str) -> str | None:
    """``adb`` -> None (the only device), ``adb:SERIAL`` -> SERIAL; anything else is an error."""
    kind, _, serial = target.partition(":")
    if kind != "adb":
        raise EdgekitError(f"device target {target!r} is not adb or adb:SERIAL")
    return serial or None


def bench_on_adb(artifact_path: str | os.PathLike[str], serial: str | None = None, *,
                 benchmark_binary: str | os.PathLike[str] | None = None, threads: int = 4, warmup: int = 5,
                 runs: int = 50, delegate: str = "cpu", cpu_mask: str | None = None,
                 qairt_dir: str | os.PathLike[str] | None = None, keep: bool = False,
                 runner: str = "benchmark_model", python: str = "python3", remote_dir: str | None = None,
                 timeout_s: float | None = None) -> BenchResult:
    """Benchmark one .tflite (or, with runner="python", .onnx) model on an adb device.

    ``timeout_s`` (``--timeout``) bounds every adb call, the run on the device included; None: 600 s
    for the run and each other call's own default.

    Raises EdgekitError with a clear message for: no/unauthorized/disconnected device, full
    storage, a missing, non-executable or wrong-ABI binary, and a delegate that took 0 nodes.
    """
    options = AdbBenchOptions(
        benchmark_binary=benchmark_binary or None, threads=threads, warmup=warmup, runs=runs, delegate=delegate,
        cpu_mask=cpu_mask, qairt_dir=qairt_dir or None, keep=keep, runner=runner, python=python,
        remote_dir=remote_dir, timeout_s=timeout_s)
    return bench_adb(artifact_path, serial, options)


def bench_adb(artifact_path: str | os.PathLike[str], serial: str | None, options: AdbBenchOptions) -> BenchResult:
    """Benchmark one model on the adb device ``serial`` (None: the only one) with ``options``; errors as
    ``bench_on_adb``. The device backend ``adb`` of ``edgekit.benchmarking.targets`` runs this."""
    model = _check_model(artifact_path)
    remote_dir = options.remote_dir or os.environ.get(REMOTE_DIR_ENV) or DEFAULT_REMOTE_DIR
    options = replace(options, remote_dir=remote_dir)
    with adb_timeout(options.timeout_s):
        return RUNNERS.get(options.runner).run(model.resolve(), resolve_serial(serial), options)


def _check_model(artifact_path: str | os.PathLike[str]) -> Path:
    model = Path(artifact_path).expanduser()
    if not model.is_file():
        raise EdgekitError(f"model {model} does not exist; pass the path of a .tflite (or .onnx) artifact")
    return model
