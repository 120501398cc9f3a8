"""`edgekit devices`: the Android devices adb can reach (serial, model, SoC, Android, ABI).

It also holds the bench command's adb flags (``add_adb_bench_arguments``) and their translation into
the library's ``AdbBenchOptions`` (``flag_options``); the ``adb`` backend itself registers in the library
(``edgekit.devices.adb_backend``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json
from edgekit.commands.validate import positive_float
from edgekit.registry import Registry

COLUMNS = ("serial", "state", "model", "soc", "android", "abi")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=positive_float, default=20.0, help="seconds to wait for each adb call (default 20)")
    add_json_flag(p)


@command("devices", "list Android devices reachable by adb: serial, model, SoC, Android version, ABI", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit import adb_devices

    devices = adb_devices(timeout=args.timeout)
    if args.json:
        print_json(devices)
        return 0
    if not devices:
        print("no devices: connect a phone with USB debugging enabled (or `adb connect HOST:PORT`)")
        return 0
    print(format_table(devices))
    return 0


def format_table(devices: list[dict[str, Any]]) -> str:
    """A plain aligned table (pipes and logs keep it readable)."""
    cells = [[str(d.get(c) or "—") for c in COLUMNS] for d in devices]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def add_adb_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The adb flags of `edgekit bench --device adb[:SERIAL]` (call from the bench command's configure)."""
    from edgekit import AdbBenchOptions

    g = p.add_argument_group("adb device (--device adb[:SERIAL])")
    g.add_argument("--benchmark-binary", type=Path, help="LiteRT benchmark_model built for the device "
                   "(or EDGEKIT_BENCHMARK_BINARY); never downloaded")
    g.add_argument("--delegate", default="cpu", choices=AdbBenchOptions.delegates.names(), help="delegate (default cpu = XNNPACK)")
    g.add_argument("--cpu-mask", help="pin to cores with taskset, hex mask such as f0")
    g.add_argument("--qairt-dir", type=Path, help="unpacked Qualcomm QAIRT SDK, for --delegate qnn")
    g.add_argument("--keep", action="store_true", help="leave pushed files on the device")
    g.add_argument("--runner", default="benchmark_model", choices=AdbBenchOptions.runners.names(),
                   help="benchmark_model (default) or python (boards with Python: LiteRT/ONNX Runtime)")
    g.add_argument("--device-python", default="python3", help="Python on the device for --runner python")
    g.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="the longest any one adb call may take, the run on the device included "
                        "(default: 600 s for the run, 10-120 s for the other calls)")


# device backend → its flags turned into the backend's options object (a backend without flags: its defaults)
FLAG_OPTIONS: Registry[Callable[[argparse.Namespace], Any]] = Registry("device backend with flags")


@FLAG_OPTIONS.register("adb")
def adb_options(args: argparse.Namespace) -> Any:
    """The adb flags as ``AdbBenchOptions``."""
    from edgekit import AdbBenchOptions

    return AdbBenchOptions(
        benchmark_binary=args.benchmark_binary, threads=args.threads, warmup=args.warmup, runs=args.runs,
        delegate=args.delegate, cpu_mask=args.cpu_mask, qairt_dir=args.qairt_dir, keep=args.keep,
        runner=args.runner, python=args.device_python, timeout_s=args.timeout)


def flag_options(args: argparse.Namespace) -> Any:
    """The options object of the bench command's ``--device`` backend from its flags; None for the host or a
    backend without flags (``edgekit.bench`` gives it its defaults with --threads, --warmup and --runs)."""
    backend = args.device.partition(":")[0]
    return FLAG_OPTIONS.get(backend)(args) if backend in FLAG_OPTIONS else None
