"""An emulated Android device for the tests: a loopback adbd that the real adb server can `adb connect` to.

Test infrastructure, never part of the edgekit wheel: it runs every shell command it receives on this
machine. ``emulator`` is the device, ``wire`` the adb packet protocol, ``services`` its shell and sync
services, ``tools`` its getprop/dumpsys; ``testing`` gives a private adb server and a connected device.
tests/ and device_tests/ import it as ``adb_emulator`` (pytest's ``pythonpath`` in pyproject.toml).
"""
