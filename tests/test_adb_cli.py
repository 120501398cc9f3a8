"""`edgekit bench BUNDLE --device adb:SERIAL` joins device rows into the same report table."""

from __future__ import annotations

import json
import sys

from adb_emulator.testing import connected_device
from edgekit.cli import main


def test_bench_bundle_on_emulated_device_with_python_runner(capsys, bundle, tmp_path, adb_server):
    with connected_device() as device:
        code = main(["bench", str(bundle), "--device", f"adb:{device.serial}", "--runner", "python",
                     "--device-python", sys.executable, "--runs", "5", "--warmup", "1", "--json",
                     "--out", str(tmp_path / "device_report.json")])
        out = capsys.readouterr().out
        code_list = main(["list", "devices", "--json"])
        devices = json.loads(capsys.readouterr().out)
    assert code == 0
    rows = {r["format"]: r for r in json.loads(out)}
    assert set(rows) == {"tflite", "onnx"}
    for row in rows.values():
        assert row["target"] == f"adb:{device.serial}" and row["runs"] == 5 and row["median_ms"] > 0
        assert row["size_bytes"] > 0 and row["status"] == "verified"
    report = json.loads((tmp_path / "device_report.json").read_text())
    assert len(report["rows"]) == 2
    assert code_list == 0 and any(d["name"] == f"adb:{device.serial}" for d in devices)
