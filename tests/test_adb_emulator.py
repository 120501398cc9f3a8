"""The emulated adb device against the REAL adb server (the official adb that adbutils ships):
device listing, shell v2 exit codes and streams, sync push/pull, and each fault as a clear error."""

import hashlib
import os
import time

import pytest

from adb_emulator.testing import connect, connected_device
from edgekit.devices.adb import AdbError, device_state, list_serials, run_adb, run_shell
from edgekit.devices.device_info import device_info, list_devices
from edgekit.devices.remote_files import free_bytes


@pytest.fixture(scope="module")
def device(adb_server):
    with connected_device(props={"ro.soc.model": "SM8650", "ro.product.model": "Pixel Test"}) as dev:
        yield dev


def test_server_is_private(adb_server):
    port = int(adb_server["ANDROID_ADB_SERVER_PORT"])
    assert port != 5037 and not 5554 <= port <= 5585
    assert os.environ["HOME"] == adb_server["HOME"]


def test_devices_listing_shows_the_emulated_device(device):
    out = run_adb(["devices", "-l"]).stdout
    assert f"{device.serial}" in out and "model:Pixel_Test" in out
    assert (device.serial, "device") in list_serials()
    info = next(d for d in list_devices() if d.serial == device.serial)
    assert (info.model, info.soc, info.android, info.sdk) == ("Pixel Test", "SM8650", "15", "35")
    assert info.abi and info.abilist == (info.abi,)


def test_shell_v2_exit_codes_and_separate_streams(device):
    result = run_shell(device.serial, ["sh", "-c", "echo out; echo err >&2; exit 7"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    with pytest.raises(AdbError, match=r"failed on device .* exit status 3") as err:
        run_shell(device.serial, ["sh", "-c", "echo boom >&2; exit 3"])
    assert err.value.kind == "command_failed" and "boom" in str(err.value)


def test_shell_words_arrive_exactly_as_given(device):
    nasty = ["a b", "$(touch /tmp/edgekit-pwned)", "'single'", '"double"', "semi;colon", "back\\slash", "*"]
    out = run_shell(device.serial, ["printf", "%s\\n", *nasty]).stdout
    assert out.splitlines() == nasty
    assert not os.path.exists("/tmp/edgekit-pwned")


def test_sync_push_and_pull_roundtrip_over_several_chunks(device, tmp_path):
    data = os.urandom(200_000 + 123)  # > 3 sync DATA chunks of 64 KiB, not aligned to WRTE payloads
    src, back = tmp_path / "blob.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    run_adb(["push", str(src), "/data/local/tmp/sub/dir/blob.bin"], serial=device.serial)
    on_device = device.sandbox / "sub" / "dir" / "blob.bin"
    assert on_device.read_bytes() == data
    sha = run_shell(device.serial, ["sha256sum", "/data/local/tmp/sub/dir/blob.bin"]).stdout.split()[0]
    assert sha == hashlib.sha256(data).hexdigest()
    run_adb(["pull", "/data/local/tmp/sub/dir/blob.bin", str(back)], serial=device.serial)
    assert back.read_bytes() == data
    listing = run_shell(device.serial, ["ls", "/data/local/tmp/sub/dir"]).stdout.split()
    assert listing == ["blob.bin"]
    run_shell(device.serial, ["rm", "-rf", "/data/local/tmp/sub"])
    assert not (device.sandbox / "sub").exists()


def test_pull_of_missing_file_fails_clearly(device, tmp_path):
    with pytest.raises(AdbError, match="does not exist on device .*nope.bin") as err:
        run_adb(["pull", "/data/local/tmp/nope.bin", str(tmp_path / "x")], serial=device.serial)
    assert err.value.kind == "missing_file"


def test_getprop_table_and_dumpsys(device):
    assert run_shell(device.serial, ["getprop", "ro.soc.model"]).stdout.strip() == "SM8650"
    assert "level: 87" in run_shell(device.serial, ["dumpsys", "battery"]).stdout


def test_free_space_of_a_folder_that_does_not_exist_yet(device):
    free = free_bytes(device.serial, "/data/local/tmp/edgekit/not/yet/there")
    assert free is not None and free > 1_000_000
    assert not (device.sandbox / "edgekit").exists()


def test_timeout_stops_the_command_without_hanging(device):
    start = time.monotonic()
    with pytest.raises(AdbError, match="did not finish within 0.5 s") as err:
        run_shell(device.serial, ["sleep", "20"], timeout=0.5)
    assert err.value.kind == "timeout" and time.monotonic() - start < 5


def test_no_device_and_unknown_serial(adb_server):
    with pytest.raises(AdbError) as err:
        run_shell("127.0.0.1:1", ["true"])
    assert err.value.kind in ("not_found", "offline")


def test_unauthorized_device_is_reported(adb_server):
    with connected_device(auth="reject") as dev:
        assert device_state(dev.serial) == "unauthorized"
        with pytest.raises(AdbError, match="unauthorized.*Allow USB debugging") as err:
            device_info(dev.serial)
        assert err.value.kind == "unauthorized"


def test_authorized_after_auth_handshake(adb_server):
    with connected_device(auth="accept") as dev:
        assert run_shell(dev.serial, ["echo", "ok"]).stdout == "ok\n"


def test_disconnect_mid_command_is_reported_and_does_not_hang(adb_server):
    with connected_device(disconnect_on="sleep 30", disconnect_after_s=0.3) as dev:
        start = time.monotonic()
        with pytest.raises(AdbError, match="disconnected while running") as err:
            run_shell(dev.serial, ["sh", "-c", "echo started; sleep 30"], timeout=20)
        assert err.value.kind == "disconnected" and "started" in str(err.value)
        assert time.monotonic() - start < 10
        with pytest.raises(AdbError) as again:
            run_shell(dev.serial, ["true"])
        assert again.value.kind in ("offline", "not_found", "disconnected")


def test_full_disk_push_is_reported(adb_server, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(150_000))
    with connected_device(disk_free_bytes=100_000) as dev:
        with pytest.raises(AdbError, match="storage of device .* is full") as err:
            run_adb(["push", str(src), "/data/local/tmp/big.bin"], serial=dev.serial)
        assert err.value.kind == "disk_full" and "No space left" in str(err.value)
        assert not (dev.sandbox / "big.bin").exists()


def test_reconnect_after_emulator_restart_gives_a_new_device(adb_server):
    with connected_device() as first:
        serial = first.serial
    assert device_state(serial) in ("", "offline")
    with connected_device() as second:
        assert connect(second) == "device" and second.serial != serial
