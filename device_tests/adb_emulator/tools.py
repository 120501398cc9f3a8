"""Android commands of the emulated device that this machine lacks: ``getprop`` and ``dumpsys``.

They are small Python scripts in the emulator's bin folder (first on the shell's PATH) that answer
from the device's property table. With the ``noexec`` fault a no-op ``chmod`` is added too, so a
pushed binary stays non-executable like on storage mounted noexec.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adb_emulator.emulator import EmulatedDevice

_GETPROP = '''
import json, sys
props = json.load(open({props!r}))
if len(sys.argv) > 1:
    print(props.get(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""))
else:
    for key in sorted(props):
        print(f"[{{key}}]: [{{props[key]}}]")
'''

_DUMPSYS = '''
import sys
service = sys.argv[1] if len(sys.argv) > 1 else ""
if service == "battery":
    print("Current Battery Service state:")
    print("  AC powered: false\\n  USB powered: true\\n  status: 2\\n  health: 2\\n  present: true")
    print("  level: {level}\\n  scale: 100\\n  voltage: 4012\\n  temperature: 301")
elif service == "thermalservice":
    print("IsStatusOverride: false")
    print("Thermal Status: {thermal}")
    print("Cached temperatures:")
    print("Current temperatures from HAL:")
    print("\\tTemperature{{mValue=41.5, mType=0, mName=cpu0, mStatus={thermal}}}")
    print("\\tTemperature{{mValue=30.1, mType=2, mName=battery, mStatus=0}}")
else:
    print(f"Can't find service: {{service}}", file=sys.stderr)
    sys.exit(1)
'''


def _write_script(path: Path, python: str, body: str) -> None:
    path.write_text(f"#!{python}\n# emulated Android command (edgekit test device)\n{body}")
    os.chmod(path, 0o755)


def install(device: "EmulatedDevice") -> None:
    """Write the device's property table and its Android commands into ``device.root``."""
    bin_dir = device.root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    props = device.root / "props.json"
    props.write_text(device.props_json())
    _write_script(bin_dir / "getprop", device.python(), _GETPROP.format(props=str(props)))
    body = _DUMPSYS.format(level=device.battery_level, thermal=device.thermal_status)
    _write_script(bin_dir / "dumpsys", device.python(), body)
    if device.noexec:
        chmod = bin_dir / "chmod"
        chmod.write_text("#!/bin/sh\n# emulated noexec storage: chmod succeeds, nothing becomes executable\nexit 0\n")
        os.chmod(chmod, 0o755)
