"""Which device the device tests talk to.

- ``EDGEKIT_ADB_SERIAL`` set: that real phone (or board), through your usual adb server.
- otherwise: an emulated adb device on loopback, behind a private adb server (own port, HOME and
  TMPDIR; killed afterwards) — what CI runs.
- neither possible (no adb binary, or the named device not ready): the tests skip and say why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import pytest

from adb_emulator.emulator import EmulatedDevice
from adb_emulator.testing import connected_device, private_adb_server
from edgekit.devices.adb import SERIAL_ENV, AdbError, device_state, find_adb


@dataclass(frozen=True)
class AdbTarget:
    serial: str
    emulated: EmulatedDevice | None  # None on a real device

    @property
    def is_real(self) -> bool:
        return self.emulated is None


@pytest.fixture(scope="session")
def adb_target() -> Iterator[AdbTarget]:
    try:
        find_adb()
    except AdbError as exc:
        pytest.skip(f"device tests need adb: {exc}")
    serial = os.environ.get(SERIAL_ENV)
    if serial:
        state = device_state(serial)
        if state != "device":
            pytest.skip(f"{SERIAL_ENV}={serial} but adb reports it as {state or 'not connected'}; "
                        "connect and authorize it, or unset the variable to use the emulated device")
        yield AdbTarget(serial, None)
        return
    with private_adb_server(), connected_device(props={"ro.soc.model": "SM8650"}) as device:
        yield AdbTarget(device.serial, device)
