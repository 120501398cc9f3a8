"""run_adb and its helpers without a device: finding adb, argument lists, quoting, error messages."""

import os
import shlex
import stat
from pathlib import Path

import pytest

from edgekit.devices.adb import (ADB_ENV, PORT_ENV, AdbError, AdbResult, adb_command, classify_failure, find_adb,
                                 quote_command, run_adb, shell_script)
from edgekit.devices.remote_files import binary_abi, check_binary_abi, check_remote_path
from edgekit.errors import EdgekitError


def result(text: str, code: int = 1) -> AdbResult:
    return AdbResult(("adb", "-s", "S1", "shell", "x"), code, "", text, 0.1)


def test_finds_the_bundled_official_adb(monkeypatch):
    monkeypatch.delenv(ADB_ENV, raising=False)
    path = find_adb()
    assert os.access(path, os.X_OK)
    assert "Android Debug Bridge" in run_adb(["version"], timeout=10).stdout


def test_edgekit_adb_env_must_be_executable(monkeypatch, tmp_path):
    fake = tmp_path / "adb"
    fake.write_text("not a binary")
    monkeypatch.setenv(ADB_ENV, str(fake))
    with pytest.raises(AdbError, match="is not an executable file") as err:
        find_adb()
    assert err.value.kind == "no_adb"
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert find_adb() == str(fake)


def test_command_is_an_argument_list_with_port_and_serial(monkeypatch):
    monkeypatch.setenv(PORT_ENV, "15123")
    cmd = adb_command(["shell", "echo hi"], serial="emulator-1")
    assert cmd[1:] == ["-P", "15123", "-s", "emulator-1", "shell", "echo hi"]
    with pytest.raises(TypeError, match="not a shell string"):
        run_adb("devices")  # type: ignore[arg-type]


def test_quoting_round_trips_through_a_posix_shell_parser():
    words = ["a b", "$(rm -rf /)", "it's", "`id`", "x;y", "", "--flag=1 2"]
    assert shlex.split(quote_command(words)) == words
    with pytest.raises(TypeError):
        quote_command("echo hi")  # type: ignore[arg-type]


def test_shell_script_joins_quoted_commands():
    argv = shell_script(["cd", "/data/local/tmp/a b"], ["./bin", "--x=$HOME"], suffix=" 2>&1")
    assert argv[:2] == ["sh", "-c"]
    assert argv[2] == "cd '/data/local/tmp/a b' && ./bin '--x=$HOME' 2>&1"
    with pytest.raises(ValueError):
        shell_script(["a"], sep=" | ")


@pytest.mark.parametrize("text,kind,advice", [
    ("adb: no devices/emulators found", "no_device", "no Android device is connected"),
    ("adb: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set", "unauthorized",
     "Allow USB debugging"),
    ("adb: device offline", "offline", "is offline"),
    ("adb: device 'XYZ' not found", "not_found", "is not connected"),
    ("adb: more than one device/emulator", "ambiguous", "--device adb:SERIAL"),
    ("adb: error: failed to copy 'a' to 'b': remote write failed: No space left on device", "disk_full",
     "storage of device S1 is full"),
    ("error: closed", "disconnected", "disconnected during the command"),
    ("something unexpected", "failed", "adb exited with status 1"),
])
def test_failures_are_named_with_command_and_output(text, kind, advice):
    err = classify_failure(result(text), "S1")
    assert err.kind == kind
    assert advice in str(err)
    assert "adb -s S1 shell x" in str(err) and text.splitlines()[-1] in str(err)


def test_device_command_output_is_not_taken_for_an_adb_failure():
    err = classify_failure(result("cat: /data/unauthorized.txt: Permission denied\nNo space left on device"), "S1")
    assert err.kind == "failed"


def test_remote_paths_outside_the_scratch_dir_are_refused():
    base = "/data/local/tmp/edgekit"
    assert check_remote_path("/data/local/tmp/edgekit/bin/x", base) == "/data/local/tmp/edgekit/bin/x"
    for bad in ("/data/local/tmp/edgekit", "/data/local/tmp/edgekit/../../x", "/", "relative/x", "/sdcard/x"):
        with pytest.raises(EdgekitError, match="refusing to use device path"):
            check_remote_path(bad, base)


def test_binary_abi_reads_the_elf_header(tmp_path):
    assert binary_abi(Path("/bin/true")) in ("x86_64", "arm64-v8a")
    arm = tmp_path / "bm"
    arm.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (183).to_bytes(2, "little") + b"\0" * 40)
    assert binary_abi(arm) == "arm64-v8a"
    with pytest.raises(EdgekitError, match="built for arm64-v8a, but device S1 runs x86_64"):
        check_binary_abi(arm, ["x86_64"], "S1")
    assert check_binary_abi(arm, ["arm64-v8a", "armeabi-v7a"], "S1") == "arm64-v8a"
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert binary_abi(script) is None
    junk = tmp_path / "junk"
    junk.write_text("hello")
    with pytest.raises(EdgekitError, match="neither an ELF executable nor a #! script"):
        binary_abi(junk)
