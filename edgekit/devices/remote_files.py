"""Files on the device: pushes cached by sha256, free-space checks, cleanup, and the ABI of a
binary before it is pushed (so a wrong-architecture binary fails here, with a clear message)."""

from __future__ import annotations

import hashlib
import posixpath
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgekit.devices.adb import AdbError, run_adb, run_shell
from edgekit.errors import EdgekitError

DEFAULT_REMOTE_DIR = "/data/local/tmp/edgekit"
_SHA_LINE = re.compile(r"^([0-9a-f]{64})\s+\*?(.+)$")
# ELF e_machine -> Android ABI name.
ELF_MACHINES = {3: "x86", 40: "armeabi-v7a", 62: "x86_64", 183: "arm64-v8a", 243: "riscv64"}


@dataclass(frozen=True)
class PushedFile:
    """One local file and where it lives on the device; ``cached`` when the push was skipped."""

    local: Path
    remote: str
    sha256: str
    size: int
    cached: bool


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_remote_path(path: str, base: str) -> str:
    """Refuse to touch device paths outside ``base`` (cleanup runs ``rm -rf`` on them)."""
    norm = posixpath.normpath(path)
    base = posixpath.normpath(base)
    if not posixpath.isabs(norm) or ".." in path.split("/") or not norm.startswith(base.rstrip("/") + "/"):
        raise EdgekitError(f"refusing to use device path {path!r}: it must lie inside {base}/")
    return norm


def remote_sha256(serial: str, paths: Sequence[str], timeout: float = 60.0) -> dict[str, str]:
    """sha256 of each device file that exists (missing files are simply absent from the result)."""
    if not paths:
        return {}
    out = run_shell(serial, ["sha256sum", *paths], timeout=timeout, check=False).stdout
    found = {}
    for line in out.splitlines():
        match = _SHA_LINE.match(line.strip())
        if match:
            found[match.group(2)] = match.group(1)
    return found


def free_bytes(serial: str, path: str, timeout: float = 15.0) -> int | None:
    """Free space where ``path`` would live (``df -k`` on it or its nearest existing parent), or None."""
    candidates = [path]
    while candidates[-1] not in ("/", ""):
        candidates.append(posixpath.dirname(candidates[-1]))
    out = run_shell(serial, ["df", "-k", *candidates], timeout=timeout, check=False).stdout
    for line in out.splitlines()[1:]:  # rows follow the argument order; missing paths have none
        fields = line.split()
        if len(fields) >= 4 and fields[3].isdigit():
            return int(fields[3]) * 1024
    return None


def make_dirs(serial: str, dirs: Sequence[str], timeout: float = 15.0) -> None:
    if dirs:
        run_shell(serial, ["mkdir", "-p", *sorted(set(dirs))], timeout=timeout)


def _push_timeout(size: int, timeout: float) -> float:
    return timeout + size / (2 * 1024 * 1024)  # allow 2 MB/s on top of the base timeout


def push_files(serial: str, files: Sequence[tuple[Path, str]], *, timeout: float = 60.0) -> list[PushedFile]:
    """Push (local, remote) pairs, skipping files whose sha256 already matches on the device.

    Each pushed file is checked with sha256sum afterwards; a mismatch is an error.
    """
    local = [(Path(src), dst, sha256_file(Path(src)), Path(src).stat().st_size) for src, dst in files]
    before = remote_sha256(serial, [dst for _, dst, _, _ in local], timeout)
    todo = [item for item in local if before.get(item[1]) != item[2]]
    _check_space(serial, todo, timeout)
    make_dirs(serial, [posixpath.dirname(dst) for _, dst, _, _ in todo], timeout)
    for src, dst, _, size in todo:
        run_adb(["push", str(src), dst], serial=serial, timeout=_push_timeout(size, timeout))
    after = remote_sha256(serial, [item[1] for item in todo], timeout)
    for src, dst, digest, _ in todo:
        if after.get(dst) != digest:
            raise AdbError(f"pushed {src} to {serial}:{dst} but the device's sha256 is "
                           f"{after.get(dst, 'missing')}, not {digest}; the storage may be full or failing",
                           kind="push_mismatch")
    return [PushedFile(src, dst, digest, size, before.get(dst) == digest) for src, dst, digest, size in local]


def _check_space(serial: str, todo: list, timeout: float) -> None:
    need = sum(item[3] for item in todo)
    if not need:
        return
    free = free_bytes(serial, posixpath.dirname(todo[0][1]), timeout)
    if free is not None and free < need:
        raise AdbError(f"the storage of device {serial} is full: {need / 1e6:.1f} MB must be pushed but only "
                       f"{free / 1e6:.1f} MB are free; free space on the device and retry", kind="disk_full")


def remove_remote(serial: str, paths: Sequence[str], base: str, timeout: float = 30.0) -> None:
    """``rm -rf`` device paths that lie inside ``base`` (others are refused)."""
    safe = [check_remote_path(p, base) for p in paths]
    if safe:
        run_shell(serial, ["rm", "-rf", *safe], timeout=timeout)


def binary_abi(path: Path) -> str | None:
    """The Android ABI an ELF binary is built for; None for ``#!`` scripts. Raises for other files."""
    with open(path, "rb") as fh:
        head = fh.read(20)
    if head.startswith(b"#!"):
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise EdgekitError(f"{path} is neither an ELF executable nor a #! script; name the LiteRT "
                           "benchmark_model binary built for the device (e.g. android_aarch64_benchmark_model)")
    endian = "<" if head[5] == 1 else ">"
    machine = struct.unpack(endian + "H", head[18:20])[0]
    return ELF_MACHINES.get(machine, f"elf-machine-{machine}")


def check_binary_abi(path: Path, abilist: Sequence[str], serial: str) -> str | None:
    """Raise when the binary's ABI is not one the device runs; returns the ABI (None for scripts)."""
    abi = binary_abi(path)
    if abi is not None and abilist and abi not in abilist:
        raise EdgekitError(f"{path} is built for {abi}, but device {serial} runs {', '.join(abilist)}: use a "
                           f"benchmark_model built for {abilist[0]} (e.g. android_aarch64_benchmark_model "
                           "for arm64-v8a)")
    return abi
