"""What a device is (getprop: model, SoC, Android version, ABI) and how it is doing (thermal
status, battery level), read through ``run_shell``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from edgekit.devices.adb import DEVICE_GONE, AdbError, adb_timeout, list_serials, run_shell

_PROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")
# Where each fact lives; the first non-empty property wins (ro.soc.* exists from Android 12 on).
_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("ro.product.model",),
    "manufacturer": ("ro.product.manufacturer",),
    "soc": ("ro.soc.model", "ro.board.platform", "ro.hardware"),
    "soc_manufacturer": ("ro.soc.manufacturer",),
    "android": ("ro.build.version.release",),
    "sdk": ("ro.build.version.sdk",),
    "abi": ("ro.product.cpu.abi",),
}
THERMAL_STATUS_NAMES = ["none", "light", "moderate", "severe", "critical", "emergency", "shutdown"]


@dataclass(frozen=True)
class DeviceInfo:
    """One device as adb sees it; the getprop fields are empty when it is not ready."""

    serial: str
    state: str = "device"
    model: str = ""
    manufacturer: str = ""
    soc: str = ""
    soc_manufacturer: str = ""
    android: str = ""
    sdk: str = ""
    abi: str = ""
    abilist: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["abilist"] = list(self.abilist)
        return d


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` output (``[key]: [value]`` lines) as a dict; multi-line values are skipped."""
    props = {}
    for line in text.splitlines():
        match = _PROP_LINE.match(line.strip())
        if match:
            props[match.group(1)] = match.group(2)
    return props


def getprops(serial: str, timeout: float = 20.0) -> dict[str, str]:
    """Every system property of the device, read with one ``getprop`` call."""
    return parse_getprop(run_shell(serial, ["getprop"], timeout=timeout).stdout)


def info_from_props(serial: str, props: dict[str, str], state: str = "device") -> DeviceInfo:
    values = {name: next((props[k] for k in keys if props.get(k)), "") for name, keys in _FIELDS.items()}
    abilist = tuple(a for a in props.get("ro.product.cpu.abilist", "").split(",") if a)
    if not abilist and values["abi"]:
        abilist = (values["abi"],)
    return DeviceInfo(serial=serial, state=state, abilist=abilist, **values)


def device_info(serial: str, timeout: float = 20.0) -> DeviceInfo:
    """Model, SoC, Android version and ABIs of one ready device."""
    return info_from_props(serial, getprops(serial, timeout))


def list_devices(timeout: float = 20.0) -> list[DeviceInfo]:
    """Every device adb lists; getprop facts for those that are ready."""
    devices = []
    for serial, state in list_serials(timeout):
        if state == "device":
            try:
                devices.append(device_info(serial, timeout))
                continue
            except AdbError as exc:  # it went away between the listing and getprop
                state = exc.kind
        devices.append(DeviceInfo(serial=serial, state=state))
    return devices


def _dumpsys_thermal(serial: str, timeout: float) -> dict[str, Any]:
    out = run_shell(serial, ["dumpsys", "thermalservice"], timeout=timeout).stdout
    match = re.search(r"Thermal Status:\s*(\d+)", out)
    if not match:
        raise ValueError("no 'Thermal Status' line in dumpsys thermalservice")
    status = int(match.group(1))
    temps = [float(v) for v, kind in re.findall(r"Temperature\{mValue=([-\d.]+), mType=(\d+)", out) if kind == "0"]
    name = THERMAL_STATUS_NAMES[status] if status < len(THERMAL_STATUS_NAMES) else str(status)
    return {"source": "dumpsys thermalservice", "status": status, "status_name": name,
            "cpu_max_c": max(temps) if temps else None}


def _sysfs_thermal(serial: str, timeout: float) -> dict[str, Any]:
    script = ["sh", "-c", "cat /sys/class/thermal/thermal_zone*/temp"]
    values = [int(v) for v in run_shell(serial, script, timeout=timeout).stdout.split() if v.lstrip("-").isdigit()]
    if not values:
        raise ValueError("no readable /sys/class/thermal zones")
    return {"source": "/sys/class/thermal", "status": None, "status_name": None, "max_zone_c": max(values) / 1000}


def _dumpsys_battery(serial: str, timeout: float) -> dict[str, Any]:
    out = run_shell(serial, ["dumpsys", "battery"], timeout=timeout).stdout
    level = re.search(r"^\s*level:\s*(\d+)", out, re.MULTILINE)
    if not level:
        raise ValueError("no 'level' line in dumpsys battery")
    temp = re.search(r"^\s*temperature:\s*(-?\d+)", out, re.MULTILINE)
    return {"source": "dumpsys battery", "level": int(level.group(1)),
            "temperature_c": int(temp.group(1)) / 10 if temp else None}


def _sysfs_battery(serial: str, timeout: float) -> dict[str, Any]:
    out = run_shell(serial, ["sh", "-c", "cat /sys/class/power_supply/*/capacity"], timeout=timeout).stdout.split()
    if not out or not out[0].isdigit():
        raise ValueError("no /sys/class/power_supply/*/capacity")
    return {"source": "/sys/class/power_supply", "level": int(out[0]), "temperature_c": None}


Reader = Callable[[str, float], dict[str, Any]]
THERMAL_READERS: list[Reader] = [_dumpsys_thermal, _sysfs_thermal]
BATTERY_READERS: list[Reader] = [_dumpsys_battery, _sysfs_battery]


def _first_that_works(readers: list[Reader], serial: str, timeout: float, what: str) -> dict[str, Any]:
    reasons = []
    for reader in readers:
        try:
            return reader(serial, timeout)
        except AdbError as exc:
            if exc.kind in DEVICE_GONE:
                raise  # the device itself is gone: that is not "no thermal data"
            reasons.append(f"{reader.__name__.strip('_')}: {exc.output.strip()[:120] or 'failed'}")
        except ValueError as exc:
            reasons.append(f"{reader.__name__.strip('_')}: {exc}")
    return {"source": None, "unavailable": f"no {what} reading: " + "; ".join(reasons)}


def thermal_status(serial: str, timeout: float = 15.0) -> dict[str, Any]:
    """Android thermal status (0 none … 6 shutdown) and CPU temperature, or why they are unknown."""
    return _first_that_works(THERMAL_READERS, serial, timeout, "thermal")


def battery_status(serial: str, timeout: float = 15.0) -> dict[str, Any]:
    """Battery level (percent) and temperature, or why they are unknown (boards without battery)."""
    return _first_that_works(BATTERY_READERS, serial, timeout, "battery")


def adb_devices(timeout: float = 20.0) -> list[dict[str, Any]]:
    """The Android devices adb can reach, as ``edgekit devices`` lists them: serial, state, model, soc, android,
    abi (and what else adb reports); ``timeout`` bounds each adb call in seconds."""
    with adb_timeout(timeout):
        return [d.to_dict() for d in list_devices(timeout=timeout)]
