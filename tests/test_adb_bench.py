"""bench_on_adb against the emulated device and the real adb server.

There is no Android benchmark_model binary here, so the benchmark_model plumbing (push cached by
sha256, command line, taskset, QNN libraries and environment, log parsing, coverage, cleanup) is
tested with a LOG REPLAYER: a small sh script that prints a real, cited benchmark_model log from
tests/fixtures/benchmark_model. The python runner runs real tiny models for real (LiteRT and ONNX
Runtime of this venv, as the emulated device's Python).
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adb_emulator.testing import connected_device, write_tiny_onnx, write_tiny_tflite
from edgekit.devices.adb import AdbError, resolve_serial
from edgekit.devices.adb_bench import bench_on_adb
from edgekit.errors import EdgekitError

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


def log_replayer(folder: Path, fixture: str, record: bool = False) -> Path:
    """NOT benchmark_model: prints a real benchmark_model log (and, with ``record``, writes how it
    was called to replayer-invocation.txt beside itself on the device)."""
    script = folder / "benchmark_model"
    recording = ('here=$(dirname "$0")\necho "argv: $*" > "$here/replayer-invocation.txt"\n'
                 'echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-} ADSP_LIBRARY_PATH=${ADSP_LIBRARY_PATH:-}" '
                 '>> "$here/replayer-invocation.txt"\n') if record else ""
    script.write_text(
        "#!/bin/sh\n# LOG REPLAYER for edgekit tests -- NOT LiteRT's benchmark_model.\n"
        f"# It prints the real log in tests/fixtures/benchmark_model/{fixture}.\n" + recording +
        "cat <<'EDGEKIT_REPLAYED_LOG'\n" + (FIXTURES / fixture).read_text() + "EDGEKIT_REPLAYED_LOG\n")
    script.chmod(0o755)
    return script


@pytest.fixture(scope="module")
def device(adb_server):
    with connected_device(props={"ro.soc.model": "SM8650"}, battery_level=64, thermal_status=1) as dev:
        yield dev


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return write_tiny_tflite(folder / "tiny.tflite"), write_tiny_onnx(folder / "tiny.onnx")


def remote_files(dev) -> list[str]:
    return sorted(str(p.relative_to(dev.sandbox)) for p in dev.sandbox.rglob("*"))


def test_benchmark_model_plumbing_with_a_log_replayer(device, models, tmp_path):
    binary = log_replayer(tmp_path, "xnnpack999_rpi_memory_delta.txt")
    r = bench_on_adb(models[0], device.serial, benchmark_binary=binary, threads=2, warmup=3, runs=7, cpu_mask="3")
    assert (r.artifact, r.format, r.runtime, r.target) == ("tiny.tflite", "tflite", "benchmark_model/cpu",
                                                           f"adb:{device.serial}")
    lat = r.latency
    assert (lat.mean_ms, lat.min_ms, lat.runs, lat.warmup, lat.threads) == (55.0432, 53.077, 50, 9, 2)
    assert lat.median_ms is None and lat.p90_ms is None  # this benchmark_model build printed neither
    x = r.extra
    assert x["device_command"].startswith("taskset 3 /data/local/tmp/edgekit/bin/benchmark_model ")
    assert ("--graph=/data/local/tmp/edgekit/models/tiny.tflite --num_threads=2 --warmup_runs=3 "
            "--warmup_min_secs=0 --num_runs=7 --min_secs=0 --use_xnnpack=true") in x["device_command"]
    assert f"-s {device.serial} shell" in x["command"] and "Inference timings in us" in x["raw_log"]
    assert x["parsed"]["memory"]["delta_overall_mb"] == 18.7227
    assert x["device"]["soc"] == "SM8650" and x["battery_before"]["level"] == x["battery_after"]["level"] == 64
    assert x["thermal_before"]["status_name"] == "light" and x["thermal_after"]["status"] == 1
    assert x["coverage"]["execution"] == "unknown" and x["cleanup"] == "removed"
    assert [p["cached"] for p in x["pushed"]] == [False, False]
    assert remote_files(device) == []  # pushed files and the folders made for them are gone
    json.dumps(r.to_dict(), allow_nan=False)  # plain JSON for the report


def test_keep_leaves_files_and_the_next_push_is_a_sha256_cache_hit(device, models, tmp_path):
    binary = log_replayer(tmp_path, "tf42507_peak_memory.txt")
    first = bench_on_adb(models[0], device.serial, benchmark_binary=binary, keep=True, runs=3)
    assert first.extra["cleanup"] == "kept on device"
    assert "edgekit/models/tiny.tflite" in remote_files(device)
    second = bench_on_adb(models[0], device.serial, benchmark_binary=binary, keep=False, runs=3)
    assert [p["cached"] for p in second.extra["pushed"]] == [True, True]
    assert second.latency.mean_ms == 33.2094 and second.extra["parsed"]["memory"]["peak_overall_mb"] == 12.8672
    assert remote_files(device) == []


def test_changed_model_is_pushed_again(device, models, tmp_path):
    binary = log_replayer(tmp_path, "tf42507_peak_memory.txt")
    bench_on_adb(models[0], device.serial, benchmark_binary=binary, keep=True, runs=3)
    changed = tmp_path / "tiny.tflite"
    changed.write_bytes(models[0].read_bytes() + b"\0")  # same name, different content
    r = bench_on_adb(changed, device.serial, benchmark_binary=binary, runs=3)
    assert [p["cached"] for p in r.extra["pushed"]] == [True, False]
    assert remote_files(device) == []


def test_gpu_full_delegation_reports_100_percent(device, models, tmp_path):
    binary = log_replayer(tmp_path, "tf43541_gpu_full_delegation.txt")
    r = bench_on_adb(models[0], device.serial, benchmark_binary=binary, delegate="gpu", runs=3)
    assert r.extra["coverage"]["percent"] == 100.0 and r.runtime == "benchmark_model/gpu"
    assert "--use_gpu=true" in r.extra["device_command"]


def test_percentiles_give_a_median(device, models, tmp_path):
    binary = log_replayer(tmp_path, "ti_am62x_cpu_percentiles_scientific.txt")
    r = bench_on_adb(models[0], device.serial, benchmark_binary=binary, runs=3)
    assert r.latency.median_ms == pytest.approx(1239.807) and r.latency.mean_ms == pytest.approx(1240.27)


def test_qnn_pushes_qairt_libs_sets_env_and_zero_nodes_is_an_error(device, models, tmp_path):
    qairt = tmp_path / "qairt"  # placeholder files standing in for Qualcomm's SDK (not real libraries)
    android = qairt / "lib" / "aarch64-android"
    android.mkdir(parents=True)
    for name in ("libQnnTFLiteDelegate.so", "libQnnHtp.so", "libQnnSystem.so", "libQnnHtpV75Stub.so",
                 "libQnnHtpV73Stub.so"):
        (android / name).write_text(f"placeholder {name} for tests\n")
    for version in ("v73", "v75"):
        (qairt / "lib" / f"hexagon-{version}" / "unsigned").mkdir(parents=True)
        (qairt / "lib" / f"hexagon-{version}" / "unsigned" / f"libQnnHtp{version.upper()}Skel.so").write_text("x")
    binary = log_replayer(tmp_path, "tf83344_qnn_zero_nodes.txt", record=True)
    with pytest.raises(EdgekitError, match=r"qnn delegate was requested but took no part .*0 of 31 nodes"):
        bench_on_adb(models[0], device.serial, benchmark_binary=binary, delegate="qnn", qairt_dir=qairt, keep=True)
    calls = (device.sandbox / "edgekit" / "bin" / "replayer-invocation.txt").read_text()
    calls = calls.replace(str(device.sandbox), "/data/local/tmp")  # written on the device: host paths
    qnn = "/data/local/tmp/edgekit/qnn"
    assert (f"--external_delegate_path={qnn}/libQnnTFLiteDelegate.so "
            "--external_delegate_options=backend_type:htp") in calls
    assert f"LD_LIBRARY_PATH={qnn} ADSP_LIBRARY_PATH={qnn};/system/lib/rfsa/adsp" in calls
    pushed = sorted(p.name for p in (device.sandbox / "edgekit" / "qnn").iterdir())
    assert pushed == ["libQnnHtp.so", "libQnnHtpV75Skel.so", "libQnnHtpV75Stub.so", "libQnnSystem.so",
                      "libQnnTFLiteDelegate.so"]  # SM8650 -> Hexagon v75 only
    shutil.rmtree(device.sandbox / "edgekit")


def test_qnn_needs_a_qairt_dir(device, models, tmp_path):
    binary = log_replayer(tmp_path, "tf83344_qnn_zero_nodes.txt")
    with pytest.raises(EdgekitError, match="--qairt-dir"):
        bench_on_adb(models[0], device.serial, benchmark_binary=binary, delegate="qnn")
    with pytest.raises(EdgekitError, match="libQnnTFLiteDelegate.so not found"):
        bench_on_adb(models[0], device.serial, benchmark_binary=binary, delegate="qnn", qairt_dir=tmp_path)
    assert remote_files(device) == []


def test_missing_binary_and_no_binary_named(device, models, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEKIT_BENCHMARK_BINARY", raising=False)
    with pytest.raises(EdgekitError, match="nope does not exist"):
        bench_on_adb(models[0], device.serial, benchmark_binary=tmp_path / "nope")
    with pytest.raises(EdgekitError, match="--benchmark-binary PATH or EDGEKIT_BENCHMARK_BINARY"):
        bench_on_adb(models[0], device.serial)


def test_binary_that_cannot_execute_is_reported_and_cleaned_up(device, models, tmp_path):
    broken = tmp_path / "benchmark_model"  # an ELF header for this CPU and nothing else: exec fails
    broken.write_bytes(Path("/bin/true").read_bytes()[:64])
    with pytest.raises(EdgekitError, match=r"cannot run on this device|failed on the device|not executable"):
        bench_on_adb(models[0], device.serial, benchmark_binary=broken)
    assert remote_files(device) == []


def test_wrong_abi_binary_is_refused_before_any_push(adb_server, models, tmp_path):
    binary = tmp_path / "benchmark_model"
    shutil.copy("/bin/true", binary)  # a real x86-64 (host) ELF
    arm = {"ro.product.cpu.abi": "arm64-v8a", "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a"}
    with connected_device(props=arm) as dev:
        with pytest.raises(EdgekitError, match=r"built for x86_64, but device .* runs arm64-v8a, armeabi-v7a"):
            bench_on_adb(models[0], dev.serial, benchmark_binary=binary)
        assert remote_files(dev) == []


def test_noexec_storage_is_reported(adb_server, models, tmp_path):
    binary = log_replayer(tmp_path, "tf42507_peak_memory.txt")
    with connected_device(noexec=True) as dev:
        with pytest.raises(EdgekitError, match=r"not executable on the device \(exit 126"):
            bench_on_adb(models[0], dev.serial, benchmark_binary=binary)
        assert remote_files(dev) == []


def test_full_disk_is_reported_and_nothing_half_written_stays(adb_server, models, tmp_path):
    binary = log_replayer(tmp_path, "tf42507_peak_memory.txt")
    with connected_device(disk_free_bytes=1500) as dev:
        with pytest.raises(AdbError, match="is full") as err:
            bench_on_adb(models[0], dev.serial, benchmark_binary=binary)
        assert err.value.kind == "disk_full"
        assert [f for f in remote_files(dev) if f.endswith((".tflite", "benchmark_model", ".part"))] == []


def test_disconnect_mid_run_is_an_error_not_a_hang(adb_server, models, tmp_path):
    binary = log_replayer(tmp_path, "tf42507_peak_memory.txt")
    slow = binary.read_text().replace("cat <<'EDGEKIT", "sleep 30\ncat <<'EDGEKIT", 1)
    binary.write_text(slow)
    with connected_device(disconnect_on="--graph=", disconnect_after_s=0.3) as dev:
        start = time.monotonic()
        with pytest.raises(AdbError, match="disconnected while running") as err:
            bench_on_adb(models[0], dev.serial, benchmark_binary=binary, timeout_s=60)
        assert err.value.kind == "disconnected" and time.monotonic() - start < 20


def test_python_runner_runs_a_tflite_model_for_real(device, models):
    r = bench_on_adb(models[0], device.serial, runner="python", python=sys.executable, threads=1, warmup=2, runs=20)
    assert (r.format, r.runtime) == ("tflite", "litert-interpreter")
    assert r.latency.runs == 20 and len(r.extra["samples_ms"]) == 20 and r.latency.p90_ms >= r.latency.median_ms > 0
    assert r.extra["runner"]["runtime_version"] == "ai-edge-litert" and remote_files(device) == []


def test_python_runner_runs_an_onnx_model_for_real(device, models):
    r = bench_on_adb(models[1], device.serial, runner="python", python=sys.executable, cpu_mask="1", runs=10)
    assert (r.format, r.runtime, r.latency.runs) == ("onnx", "onnxruntime", 10)
    assert r.extra["device_command"].startswith("taskset 1 ") and r.extra["runner"]["threads"] == 4


def test_python_runner_without_python_on_the_device(device, models):
    with pytest.raises(EdgekitError, match="was not found on the device"):
        bench_on_adb(models[1], device.serial, runner="python", python="python-that-is-not-there")
    assert remote_files(device) == []


def test_bad_choices_name_the_valid_ones(device, models):
    with pytest.raises(EdgekitError, match="unknown delegate 'npu'; choose one of: cpu, gpu, nnapi, qnn, xnnpack"):
        bench_on_adb(models[0], device.serial, delegate="npu")
    with pytest.raises(EdgekitError, match="unknown adb runner 'java'; choose one of: benchmark_model, python"):
        bench_on_adb(models[0], device.serial, runner="java")
    with pytest.raises(EdgekitError, match="python runner runs on the CPU only"):
        bench_on_adb(models[0], device.serial, runner="python", delegate="gpu")
    with pytest.raises(EdgekitError, match="not a hex core mask"):
        bench_on_adb(models[0], device.serial, cpu_mask="0-3")


def test_python_api_benches_a_bundle_on_the_device(device, tmp_path):
    """A Python user reaches the adb backend without the CLI: Bundle.bench(device=..., options=...)."""
    import edgekit
    from edgekit.artifact import ArtifactEntry, Manifest
    from edgekit.devices.adb_bench import AdbBenchOptions
    from edgekit.io import sha256_path

    tflite = write_tiny_tflite(tmp_path / "tiny.tflite")
    entry = ArtifactEntry("tflite", "fp32", "verified", tflite.name, "litert", tflite.stat().st_size, sha256_path(tflite))
    Manifest("tiny", {"kind": "test"}, None, None, {}, [entry]).save(tmp_path)
    bundle = edgekit.Bundle.load(tmp_path)
    options = AdbBenchOptions(runner="python", python=sys.executable, threads=1, warmup=1, runs=5)
    rows = bundle.bench(device=f"adb:{device.serial}", options=options)
    assert [(r["format"], r["target"], r["runs"], r["status"]) for r in rows] == [
        ("tflite", f"adb:{device.serial}", 5, "verified")]
    assert rows[0]["median_ms"] > 0 and remote_files(device) == []
    assert bundle.bench(device="adb", options=options, runs=5)[0]["target"] == f"adb:{device.serial}"  # the only one
    with pytest.raises(EdgekitError, match=r"runs=7 \(options has 5\): give each setting once"):
        bundle.bench(device="adb", options=options, runs=7)
    with pytest.raises(EdgekitError, match="unknown device backend 'usb'; choose one of: adb"):
        bundle.bench(device="usb")
    tflite.write_bytes(tflite.read_bytes() + b"\0")  # no longer the verified file: refused, never pushed
    rows = bundle.bench(device="adb", options=options)
    assert rows[0]["status"] == "failed" and "changed since conversion" in rows[0]["note"]
    assert remote_files(device) == []


def test_adb_backend_registers_without_the_command_line():
    code = ("import sys; from edgekit.benchmarking.targets import DEVICE_BENCHES, DEVICE_LISTERS; "
            "print(DEVICE_BENCHES.names(), DEVICE_LISTERS.names(), "
            "any(m.startswith('edgekit.commands') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[0] == "['adb'] ['adb'] False"


def test_serial_resolution(device, adb_server):
    assert resolve_serial(None) == device.serial  # the only ready device
    with pytest.raises(AdbError, match="device 10.0.0.9:5555 is not connected"):
        resolve_serial("10.0.0.9:5555")
    with connected_device() as other:
        with pytest.raises(AdbError, match="more than one device is connected") as err:
            resolve_serial(None)
        assert err.value.kind == "ambiguous" and other.serial in str(err.value)


def test_edgekit_devices_command(device, capsys):
    import edgekit.commands.devices  # noqa: F401  (registers the command)
    from edgekit.cli import main

    assert main(["devices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["serial"] == device.serial)
    assert (row["soc"], row["android"], row["state"]) == ("SM8650", "15", "device") and row["abi"]
    assert main(["devices"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["SERIAL", "STATE", "MODEL", "SOC", "ANDROID", "ABI"]
    assert any(device.serial in line and "SM8650" in line for line in table[1:])
