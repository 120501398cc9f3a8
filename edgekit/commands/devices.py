"""`edgekit devices`: the Android devices adb can reach (serial, model, SoC, Android, ABI).

Importing this module also registers the ``adb`` backend with ``edgekit.bench.targets`` (device
listing, and ``edgekit bench ARTIFACT --device adb[:SERIAL]``), and offers
``add_adb_bench_arguments`` for the bench command's adb flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgekit.bench.result import BenchResult
from edgekit.bench.targets import DEVICE_BENCHES, DEVICE_LISTERS
from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json
from edgekit.commands.validate import positive_float

COLUMNS = ("serial", "state", "model", "soc", "android", "abi")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=positive_float, default=20.0, help="seconds to wait for each adb call (default 20)")
    add_json_flag(p)


@command("devices", "list Android devices reachable by adb: serial, model, SoC, Android version, ABI", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.devices.device_info import list_devices

    from edgekit.devices.adb import adb_timeout

    with adb_timeout(args.timeout):
        devices = [d.to_dict() for d in list_devices(timeout=args.timeout)]
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
    from edgekit.devices.adb_bench import DELEGATES, RUNNERS

    g = p.add_argument_group("adb device (--device adb[:SERIAL])")
    g.add_argument("--benchmark-binary", type=Path, help="LiteRT benchmark_model built for the device "
                   "(or EDGEKIT_BENCHMARK_BINARY); never downloaded")
    g.add_argument("--delegate", default="cpu", choices=DELEGATES.names(), help="delegate (default cpu = XNNPACK)")
    g.add_argument("--cpu-mask", help="pin to cores with taskset, hex mask such as f0")
    g.add_argument("--qairt-dir", type=Path, help="unpacked Qualcomm QAIRT SDK, for --delegate qnn")
    g.add_argument("--keep", action="store_true", help="leave pushed files on the device")
    g.add_argument("--runner", default="benchmark_model", choices=RUNNERS.names(),
                   help="benchmark_model (default) or python (boards with Python: LiteRT/ONNX Runtime)")
    g.add_argument("--device-python", default="python3", help="Python on the device for --runner python")
    g.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="the longest any one adb call may take, the run on the device included "
                        "(default: 600 s for the run, 10-120 s for the other calls)")


def bench_adb_from_args(artifact: Path, serial: str | None, args: argparse.Namespace) -> BenchResult:
    """DEVICE_BENCHES entry: flags that the bench command does not define fall back to defaults."""
    from edgekit.devices.adb_bench import bench_on_adb

    return bench_on_adb(
        artifact, serial, benchmark_binary=getattr(args, "benchmark_binary", None),
        threads=args.threads, warmup=args.warmup, runs=args.runs, delegate=getattr(args, "delegate", "cpu"),
        cpu_mask=getattr(args, "cpu_mask", None), qairt_dir=getattr(args, "qairt_dir", None),
        keep=getattr(args, "keep", False), runner=getattr(args, "runner", "benchmark_model"),
        python=getattr(args, "device_python", "python3"), timeout_s=getattr(args, "timeout", None))


def list_adb_rows() -> list[dict[str, str]]:
    """DEVICE_LISTERS entry: one row per adb device for `edgekit list devices`."""
    from edgekit.devices.adb import AdbError
    from edgekit.devices.device_info import list_devices

    try:
        devices = list_devices()
    except AdbError as exc:
        return [{"name": "adb", "description": f"unavailable: {exc}"}]
    rows = []
    for d in devices:
        facts = ", ".join(filter(None, [d.model, d.soc, f"Android {d.android}" if d.android else "", d.abi]))
        rows.append({"name": f"adb:{d.serial}", "description": facts if d.state == "device" else d.state})
    return rows


DEVICE_BENCHES.register("adb")(bench_adb_from_args)
DEVICE_LISTERS.register("adb")(list_adb_rows)
