"""An emulated Android device (adbd) on loopback that the real adb server can `adb connect` to.

It speaks the adb wire protocol (24-byte headers; CNXN, AUTH, OPEN/OKAY/WRTE/CLSE with one WRTE in
flight per stream), the ``shell,v2`` service (packets: 1 stdout, 2 stderr, 3 exit code), plain
``shell:``/``exec:`` and the ``sync:`` service (STAT, LIST, SEND, RECV, QUIT). Shell commands run
as ``sh -c`` on this machine inside a sandbox folder that stands in for /data/local/tmp (the path
is rewritten both ways); ``getprop`` and ``dumpsys`` answer from tables. Faults (unauthorized,
disconnect mid-run, full disk, noexec storage) are switched on by constructor arguments.

For tests only: it runs every shell command it receives on this machine, so it listens on
127.0.0.1 and nowhere else. Usually used through ``edgekit.devices.testing.connected_device``:

    with EmulatedDevice(props={"ro.soc.model": "SM8650"}) as dev:
        run_adb(["connect", dev.serial])
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

A_CNXN, A_AUTH, A_OPEN, A_OKAY = 0x4E584E43, 0x48545541, 0x4E45504F, 0x59414B4F
A_CLSE, A_WRTE = 0x45534C43, 0x45545257
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
DEVICE_TMP = "/data/local/tmp"
FEATURES = "shell_v2,cmd,fixed_push_mkdir"
_HOST_ABI = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}
_ADB_PORT_RANGE = range(5554, 5586)  # the adb server probes these for emulators


class _Closed(Exception):
    """The stream or the connection went away."""


def _default_props() -> dict[str, str]:
    abi = _HOST_ABI.get(platform.machine().lower(), platform.machine())
    return {
        "ro.product.model": "Emulated Device", "ro.product.manufacturer": "edgekit",
        "ro.product.name": "edgekit_emu", "ro.product.device": "emu",
        "ro.soc.manufacturer": "edgekit", "ro.soc.model": "EMU-1", "ro.board.platform": "emu",
        "ro.build.version.release": "15", "ro.build.version.sdk": "35",
        "ro.product.cpu.abi": abi, "ro.product.cpu.abilist": abi,
    }


def _packet(cmd: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    header = struct.pack("<6I", cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF)
    return header + data


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise _Closed("peer closed the connection")
        buf += chunk
    return bytes(buf)


class _Stream:
    """One adb stream: ``write`` waits for the host's OKAY before each WRTE; ``read`` returns payloads."""

    def __init__(self, conn: "_Connection", local: int, remote: int) -> None:
        self.conn, self.local, self.remote = conn, local, remote
        self.ready = threading.Event()
        self.ready.set()
        self.closed = False
        self.lock = threading.Lock()  # whole logical messages, never interleaved
        self.inbox: list[bytes | None] = []
        self.cond = threading.Condition()

    def write(self, data: bytes, okay_timeout: float = 60.0) -> None:
        step = self.conn.max_payload
        for start in range(0, len(data), step):
            deadline = time.monotonic() + okay_timeout
            while not self.ready.wait(0.2):
                if self.closed or self.conn.dead or time.monotonic() > deadline:
                    raise _Closed("stream closed (or the host stopped acknowledging)")
            if self.closed:
                raise _Closed("stream closed")
            self.ready.clear()
            self.conn.send(_packet(A_WRTE, self.local, self.remote, data[start:start + step]))

    def read(self) -> bytes | None:
        with self.cond:
            while not self.inbox:
                self.cond.wait()
            return self.inbox.pop(0)

    def deliver(self, data: bytes | None) -> None:
        with self.cond:
            self.inbox.append(data)
            self.cond.notify()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.streams.pop(self.local, None)
            self.deliver(None)  # wake a thread still waiting to read from this stream
            self.conn.send(_packet(A_CLSE, self.local, self.remote))


class _Reader:
    """Reads exact byte counts from a stream whose WRTE payloads do not align with messages."""

    def __init__(self, stream: _Stream) -> None:
        self.stream, self.buf = stream, bytearray()

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.stream.read()
            if chunk is None:
                raise _Closed("stream closed by the host")
            self.buf += chunk
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def message(self) -> tuple[bytes, int]:
        head = self.read(8)
        return head[:4], struct.unpack("<I", head[4:])[0]


class _Connection:
    """One TCP connection from the adb server: the handshake, then streams multiplexed on it."""

    def __init__(self, device: "EmulatedDevice", sock: socket.socket) -> None:
        self.device, self.sock = device, sock
        self.streams: dict[int, _Stream] = {}
        self.next_id, self.max_payload, self.dead = 1, MAX_PAYLOAD, False
        self.send_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise _Closed(str(exc)) from None

    def serve(self) -> None:
        try:
            while True:
                cmd, arg0, arg1, length, _sum, magic = struct.unpack("<6I", _recv_exact(self.sock, 24))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise _Closed("bad packet magic")
                self._dispatch(cmd, arg0, arg1, _recv_exact(self.sock, length) if length else b"")
        except (_Closed, OSError):
            pass
        finally:
            self.drop()

    def drop(self) -> None:
        self.dead = True
        for stream in list(self.streams.values()):
            stream.closed = True
            stream.deliver(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _dispatch(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        handlers = {
            A_CNXN: lambda: self._greet(arg1),
            A_AUTH: lambda: self._auth(arg0),
            A_OPEN: lambda: self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace")),
            A_OKAY: lambda: self._stream_packet(cmd, arg1, data),
            A_WRTE: lambda: self._stream_packet(cmd, arg1, data),
            A_CLSE: lambda: self._stream_packet(cmd, arg1, data),
        }
        handler = handlers.get(cmd)
        if handler is not None:  # others (STLS, SYNC) are not spoken by this device: ignored
            handler()

    def _greet(self, host_max_payload: int) -> None:
        self.max_payload = max(4096, min(host_max_payload or MAX_PAYLOAD, MAX_PAYLOAD))
        if self.device.auth in ("reject", "accept"):
            self.send(_packet(A_AUTH, AUTH_TOKEN, 0, os.urandom(20)))
        else:
            self.send(_packet(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner().encode()))

    def _auth(self, kind: int) -> None:
        if self.device.auth == "accept" and kind == AUTH_SIGNATURE:
            self.send(_packet(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner().encode()))
        elif kind == AUTH_SIGNATURE:  # "reject": ask again; the host then offers its public key
            self.send(_packet(A_AUTH, AUTH_TOKEN, 0, os.urandom(20)))
        # AUTH_RSAPUBLICKEY: the user never taps "Allow", so the device stays unauthorized.

    def _open(self, remote: int, service: str) -> None:
        handler = self.device.service_handler(service)
        self.device.events.append(("open", service))
        if handler is None:
            self.send(_packet(A_CLSE, 0, remote))
            return
        local, self.next_id = self.next_id, self.next_id + 1
        stream = self.streams[local] = _Stream(self, local, remote)
        self.send(_packet(A_OKAY, local, remote))
        threading.Thread(target=self._run_service, args=(handler, stream, service), daemon=True).start()

    def _run_service(self, handler, stream: _Stream, service: str) -> None:
        try:
            handler(stream, service)
        except _Closed:
            pass
        finally:
            try:
                stream.close()
            except _Closed:
                pass

    def _stream_packet(self, cmd: int, local: int, data: bytes) -> None:
        stream = self.streams.get(local)
        if stream is None:
            return
        if cmd == A_OKAY:
            stream.ready.set()
        elif cmd == A_WRTE:
            self.send(_packet(A_OKAY, stream.local, stream.remote))
            stream.deliver(data)
        else:  # CLSE from the host
            stream.closed = True
            self.streams.pop(local, None)
            stream.deliver(None)


class EmulatedDevice:
    """An adb device on 127.0.0.1:PORT whose shell runs commands in a sandbox folder.

    ``auth``: "none" (no AUTH), "accept" (AUTH, any signature accepted) or "reject" (stays
    unauthorized). ``disconnect_on``: when a shell command contains this text, the device vanishes
    ``disconnect_after_s`` later (connections dropped, listener closed). ``disk_free_bytes``: sync
    pushes beyond this many bytes fail with ENOSPC. ``noexec``: pushed files cannot be executed.
    """

    def __init__(self, *, props: dict[str, str] | None = None, auth: str = "none",
                 disconnect_on: str | None = None, disconnect_after_s: float = 0.3,
                 disk_free_bytes: int | None = None, noexec: bool = False,
                 battery_level: int = 87, thermal_status: int = 0, root: Path | None = None) -> None:
        if auth not in ("none", "accept", "reject"):
            raise ValueError(f"auth must be 'none', 'accept' or 'reject', not {auth!r}")
        self.props = {**_default_props(), **(props or {})}
        self.auth, self.noexec = auth, noexec
        self.disconnect_on, self.disconnect_after_s = disconnect_on, disconnect_after_s
        self.disk_free_bytes, self.bytes_written = disk_free_bytes, 0
        self.battery_level, self.thermal_status = battery_level, thermal_status
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="edgekit-emu-")) if root is None else Path(root)
        self.sandbox = self.root / "data_local_tmp"
        self.events: list[tuple[str, str]] = []
        self._listener: socket.socket | None = None
        self._conns: list[_Connection] = []
        self._procs: set[subprocess.Popen] = set()
        self.port = 0
        self.vanished = False

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmulatedDevice":
        from edgekit.devices import _emulator_tools

        self.sandbox.mkdir(parents=True, exist_ok=True)
        _emulator_tools.install(self)
        self._listener = _listen_outside_adb_range()
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self.vanished:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            if self.vanished:
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self._conns.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def vanish(self) -> None:
        """Simulate the device being unplugged: drop every connection and stop listening."""
        self.vanished = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for conn in list(self._conns):
            conn.drop()
        for proc in list(self._procs):
            _kill_group(proc)

    def stop(self) -> None:
        self.vanish()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "EmulatedDevice":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the services need ---------------------------------------------------------------
    def banner(self) -> str:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        return "device::" + "".join(f"{k}={self.props[k]};" for k in keys) + f"features={FEATURES}"

    def host_path(self, device_path: str) -> Path:
        """Map a device path under /data/local/tmp into the sandbox (others are left as they are)."""
        return Path(self.to_host(device_path))

    def to_host(self, text: str) -> str:
        return text.replace(DEVICE_TMP, str(self.sandbox))

    def to_device(self, data: bytes) -> bytes:
        return data.replace(str(self.sandbox).encode(), DEVICE_TMP.encode())

    def service_handler(self, service: str):
        from edgekit.devices import _emulator_services as svc

        for prefix, handler in svc.SERVICES:
            if service.startswith(prefix):
                return lambda stream, s: handler(self, stream, s)
        return None

    def shell_env(self) -> dict[str, str]:
        path = f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        home = self.root / "home"  # not the sandbox: tools' caches must not look like pushed files
        home.mkdir(exist_ok=True)
        return {"PATH": path, "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8",
                "EDGEKIT_EMULATED_DEVICE": "1"}

    def track(self, proc: subprocess.Popen, running: bool) -> None:
        (self._procs.add if running else self._procs.discard)(proc)

    def props_json(self) -> str:
        return json.dumps(self.props, sort_keys=True)

    def python(self) -> str:
        return sys.executable


def _listen_outside_adb_range() -> socket.socket:
    for _ in range(50):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        if sock.getsockname()[1] not in _ADB_PORT_RANGE:
            sock.listen(8)
            return sock
        sock.close()
    raise RuntimeError("could not find a free loopback port outside 5554-5585")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def file_mode(path: Path) -> int:
    """The st_mode the sync service reports, 0 when the path does not exist."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


__all__ = ["EmulatedDevice", "DEVICE_TMP", "FEATURES", "file_mode"]
