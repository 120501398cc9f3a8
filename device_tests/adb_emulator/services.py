"""Services of the emulated adb device: ``shell,v2``, ``shell:``/``exec:`` and ``sync:``.

Each handler gets the device, an open stream and the service string; it returns when the service
is done (the caller closes the stream).
"""

from __future__ import annotations

import os
import struct
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from adb_emulator.wire import SYNC_DATA_MAX, Closed, Reader, Stream, file_mode, kill_group

if TYPE_CHECKING:
    from adb_emulator.emulator import EmulatedDevice

SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4


def _start(device: "EmulatedDevice", command: str, merge_stderr: bool) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["sh", "-c", device.to_host(command)],
        cwd=device.sandbox, env=device.shell_env(), start_new_session=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
    )
    device.track(proc, True)
    if device.disconnect_on and device.disconnect_on in command:
        timer = threading.Timer(device.disconnect_after_s, device.vanish)
        timer.daemon = True
        timer.start()
    return proc


def _pump(device: "EmulatedDevice", pipe, stream: Stream, packet_id: int | None) -> None:
    """Copy a process pipe to the stream, as shell-v2 packets or (packet_id None) raw bytes."""
    try:
        while True:
            chunk = os.read(pipe.fileno(), 32 * 1024)
            if not chunk:
                return
            chunk = device.to_device(chunk)
            with stream.lock:
                if packet_id is None:
                    stream.write(chunk)
                else:
                    stream.write(struct.pack("<BI", packet_id, len(chunk)) + chunk)
    except (Closed, OSError):
        return


def _feed_stdin(stream: Stream, proc: subprocess.Popen) -> None:
    """Read shell-v2 packets from the host: stdin data, close-stdin; a host close kills the command."""
    reader = Reader(stream)
    try:
        while True:
            head = reader.read(5)
            kind, length = head[0], struct.unpack("<I", head[1:])[0]
            data = reader.read(length) if length else b""
            if kind == SHELL_STDIN and proc.stdin and not proc.stdin.closed:
                proc.stdin.write(data)
                proc.stdin.flush()
            elif kind == SHELL_CLOSE_STDIN and proc.stdin:
                proc.stdin.close()
    except (Closed, OSError, ValueError):
        if stream.closed and proc.poll() is None:
            kill_group(proc)


def _exit_byte(code: int) -> int:
    return (128 - code) & 0xFF if code < 0 else code & 0xFF


def shell_v2(device: "EmulatedDevice", stream: Stream, service: str) -> None:
    """``shell,v2,OPTIONS:COMMAND``: stdout as packet 1, stderr as 2, then the exit code as 3."""
    command = service.split(":", 1)[1] if ":" in service else ""
    if not command.strip():
        msg = b"the emulated device has no interactive shell; pass a command\n"
        stream.write(struct.pack("<BI", SHELL_STDERR, len(msg)) + msg)
        stream.write(struct.pack("<BIB", SHELL_EXIT, 1, 1))
        return
    proc = _start(device, command, merge_stderr=False)
    pumps = [threading.Thread(target=_pump, args=(device, pipe, stream, pid), daemon=True)
             for pipe, pid in ((proc.stdout, SHELL_STDOUT), (proc.stderr, SHELL_STDERR))]
    for t in pumps:
        t.start()
    threading.Thread(target=_feed_stdin, args=(stream, proc), daemon=True).start()
    code = proc.wait()
    for t in pumps:
        t.join()
    device.track(proc, False)
    if device.vanished:
        raise Closed("device vanished")
    with stream.lock:
        stream.write(struct.pack("<BIB", SHELL_EXIT, 1, _exit_byte(code)))


def shell_raw(device: "EmulatedDevice", stream: Stream, service: str) -> None:
    """``shell:COMMAND`` / ``exec:COMMAND``: stdout and stderr merged, no exit code (protocol v1)."""
    command = service.split(":", 1)[1]
    proc = _start(device, command, merge_stderr=True)
    if proc.stdin:
        proc.stdin.close()
    _pump(device, proc.stdout, stream, None)
    proc.wait()
    device.track(proc, False)


# -- sync ------------------------------------------------------------------------------------
def _fail(stream: Stream, message: str) -> None:
    data = message.encode()
    stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)


def _stat(device: "EmulatedDevice", stream: Stream, path: str) -> None:
    host = device.host_path(path)
    mode = file_mode(host)
    size = host.stat().st_size if mode else 0
    mtime = int(host.stat().st_mtime) if mode else 0
    stream.write(b"STAT" + struct.pack("<III", mode, size & 0xFFFFFFFF, mtime))


def _list(device: "EmulatedDevice", stream: Stream, path: str) -> None:
    host = device.host_path(path)
    names = sorted(os.listdir(host)) if host.is_dir() else []
    out = bytearray()
    for name in [".", ".."] + names:
        st = (host / name).stat()
        raw = name.encode()
        out += b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw
    stream.write(bytes(out) + b"DONE" + struct.pack("<IIII", 0, 0, 0, 0))


def _receive_file(device: "EmulatedDevice", reader: Reader, tmp: Path) -> tuple[int, str | None]:
    """Consume DATA chunks until DONE; return (mtime, error). Keeps reading after an error."""
    error: str | None = None
    with open(tmp, "wb") as fh:
        while True:
            kind, length = reader.message()
            if kind == b"DONE":
                return length, error
            if kind != b"DATA" or length > SYNC_DATA_MAX:
                raise Closed(f"bad sync message {kind!r} ({length} bytes) during SEND")
            data = reader.read(length)
            if error:
                continue
            limit = device.disk_free_bytes
            if limit is not None and device.bytes_written + len(data) > limit:
                error = "write failed: No space left on device"
                continue
            fh.write(data)
            device.bytes_written += len(data)


def _send(device: "EmulatedDevice", stream: Stream, reader: Reader, spec: str) -> None:
    path, _, mode_text = spec.rpartition(",")
    host = device.host_path(path)
    tmp = host.with_name(f".{host.name}.part")
    try:
        host.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        while reader.message()[0] != b"DONE":  # drain what the host still sends
            pass
        return _fail(stream, f"mkdir failed: {exc.strerror}")
    mtime, error = _receive_file(device, reader, tmp)
    if error:
        tmp.unlink(missing_ok=True)
        return _fail(stream, error)
    mode = 0o644 if device.noexec else (int(mode_text or "644") & 0o777)
    os.chmod(tmp, mode)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, host)
    stream.write(b"OKAY" + struct.pack("<I", 0))


def _recv(device: "EmulatedDevice", stream: Stream, path: str) -> None:
    host = device.host_path(path)
    if not host.is_file():
        return _fail(stream, f"open failed: No such file or directory: {path}")
    with open(host, "rb") as fh:
        while chunk := fh.read(SYNC_DATA_MAX):
            stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
    stream.write(b"DONE" + struct.pack("<I", 0))


_SYNC_REQUESTS = {
    b"STAT": lambda device, stream, reader, arg: _stat(device, stream, arg),
    b"LIST": lambda device, stream, reader, arg: _list(device, stream, arg),
    b"SEND": _send,
    b"RECV": lambda device, stream, reader, arg: _recv(device, stream, arg),
}


def sync(device: "EmulatedDevice", stream: Stream, service: str) -> None:
    """``sync:``: requests are 4-byte id + length + payload, independent of WRTE boundaries."""
    reader = Reader(stream)
    while True:
        kind, length = reader.message()
        if kind == b"QUIT":
            return
        payload = reader.read(length).decode("utf-8", "replace")
        handler = _SYNC_REQUESTS.get(kind)
        if handler is None:
            return _fail(stream, f"the emulated device does not support sync request {kind!r}")
        handler(device, stream, reader, payload)


SERVICES = [("shell,v2", shell_v2), ("shell:", shell_raw), ("exec:", shell_raw), ("sync:", sync)]

__all__ = ["SERVICES", "shell_v2", "shell_raw", "sync"]
