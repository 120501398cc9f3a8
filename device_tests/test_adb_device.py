"""Device tests over adb: the emulated device in CI, a real phone when EDGEKIT_ADB_SERIAL is set.

What each test needs on a real phone is in device_tests/README.md; a test that cannot run there
skips and says what to set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from adb_emulator.testing import write_tiny_onnx, write_tiny_tflite
from edgekit.devices.adb import run_shell
from edgekit.devices.adb_bench import BINARY_ENV, bench_on_adb
from edgekit.devices.device_info import battery_status, device_info, thermal_status
from edgekit.devices.remote_files import DEFAULT_REMOTE_DIR, push_files, remote_sha256, remove_remote

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "benchmark_model"
PYTHON_ENV = "EDGEKIT_DEVICE_PYTHON"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("device-models")
    return {"tflite": write_tiny_tflite(folder / "tiny.tflite"), "onnx": write_tiny_onnx(folder / "tiny.onnx")}


def test_device_info(adb_target):
    info = device_info(adb_target.serial)
    assert info.model and info.android and info.abi and info.abi in info.abilist
    assert info.android.split(".")[0].isdigit()


def test_thermal_and_battery_readings(adb_target):
    thermal, battery = thermal_status(adb_target.serial), battery_status(adb_target.serial)
    assert thermal["source"] or "unavailable" in thermal  # a board may have neither; then it says why
    assert battery["source"] or "unavailable" in battery
    if battery["source"]:
        assert 0 <= battery["level"] <= 100


def test_shell_exit_status_and_quoting(adb_target):
    result = run_shell(adb_target.serial, ["sh", "-c", 'printf "%s|" "$1"; exit 5', "sh", "a b'c"], check=False)
    assert (result.returncode, result.stdout) == (5, "a b'c|")


def test_push_is_cached_by_sha256_and_cleaned_up(adb_target, tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(150_000))
    remote = f"{DEFAULT_REMOTE_DIR}/device-test/payload.bin"
    try:
        first = push_files(adb_target.serial, [(src, remote)])
        second = push_files(adb_target.serial, [(src, remote)])
        assert (first[0].cached, second[0].cached) == (False, True)
        assert remote_sha256(adb_target.serial, [remote])[remote] == first[0].sha256
    finally:
        remove_remote(adb_target.serial, [f"{DEFAULT_REMOTE_DIR}/device-test"], base=DEFAULT_REMOTE_DIR)
    assert remote_sha256(adb_target.serial, [remote]) == {}


def test_benchmark_model(adb_target, tiny, tmp_path):
    binary = os.environ.get(BINARY_ENV)
    if adb_target.is_real and not binary:
        pytest.skip(f"set {BINARY_ENV} to a LiteRT benchmark_model built for this phone to run it here")
    if not binary:  # emulated device: a LOG REPLAYER (not benchmark_model) printing a real, cited log
        replayer = tmp_path / "benchmark_model"
        log = (FIXTURES / "ti_am62x_cpu_percentiles_scientific.txt").read_text()
        replayer.write_text("#!/bin/sh\n# LOG REPLAYER for tests, NOT benchmark_model\ncat <<'LOG'\n" + log + "LOG\n")
        binary = str(replayer)
    result = bench_on_adb(tiny["tflite"], adb_target.serial, benchmark_binary=binary, threads=1, warmup=2, runs=10)
    assert result.latency.mean_ms > 0 and result.latency.runs >= 10
    assert result.extra["raw_log"] and result.extra["cleanup"] == "removed"
    assert result.extra["battery_before"] and result.extra["thermal_after"]


def test_python_runner(adb_target, tiny):
    python = sys.executable if not adb_target.is_real else os.environ.get(PYTHON_ENV)
    if not python:
        pytest.skip(f"set {PYTHON_ENV} to the device's Python (a Linux board with numpy and ai-edge-litert "
                    "or onnxruntime) to run the python runner there")
    pytest.importorskip("onnxruntime") if not adb_target.is_real else None
    result = bench_on_adb(tiny["onnx"], adb_target.serial, runner="python", python=python, threads=1, runs=10)
    assert result.runtime == "onnxruntime" and result.latency.runs == 10 and result.latency.median_ms > 0
