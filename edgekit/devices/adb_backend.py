"""The ``adb`` device backend: Android phones and boards over adb, registered with ``edgekit.benchmarking.targets``.

Once registered (``edgekit.benchmarking.targets`` imports this module the first time its registries are read),
``edgekit bench --device adb[:SERIAL]``, ``edgekit list devices`` and ``Bundle.bench(device="adb")`` reach it.
"""

from __future__ import annotations

from edgekit.benchmarking.targets import DEVICE_BENCHES, DEVICE_LISTERS, DeviceBackend
from edgekit.devices.adb import AdbError
from edgekit.devices.adb_bench import AdbBenchOptions, bench_adb
from edgekit.devices.device_info import list_devices


def list_adb_rows() -> list[dict[str, str]]:
    """One row per adb device for `edgekit list devices` (one "unavailable" row when adb cannot be asked)."""
    try:
        devices = list_devices()
    except AdbError as exc:
        return [{"name": "adb", "description": f"unavailable: {exc}"}]
    rows = []
    for d in devices:
        facts = ", ".join(filter(None, [d.model, d.soc, f"Android {d.android}" if d.android else "", d.abi]))
        rows.append({"name": f"adb:{d.serial}", "description": facts if d.state == "device" else d.state})
    return rows


def _formats(options: AdbBenchOptions) -> tuple[str, ...]:
    return options.formats


DEVICE_BENCHES.register("adb")(DeviceBackend(options=AdbBenchOptions, bench=bench_adb, formats=_formats))
DEVICE_LISTERS.register("adb")(list_adb_rows)
