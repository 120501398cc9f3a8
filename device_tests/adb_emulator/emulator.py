"""An emulated Android device (adbd) on loopback that the real adb server can `adb connect` to.

It speaks the adb wire protocol (24-byte headers; CNXN, AUTH, OPEN/OKAY/WRTE/CLSE with one WRTE in
flight per stream), the ``shell,v2`` service (packets: 1 stdout, 2 stderr, 3 exit code), plain
``shell:``/``exec:`` and the ``sync:`` service (STAT, LIST, SEND, RECV, QUIT). Shell commands run
as ``sh -c`` on this machine inside a sandbox folder that stands in for /data/local/tmp (the path
is rewritten both ways); ``getprop`` and ``dumpsys`` answer from tables. Faults (unauthorized,
disconnect mid-run, full disk, noexec storage) are switched on by constructor arguments.

For tests only: it runs every shell command it receives on this machine, so it listens on
127.0.0.1 and nowhere else. Usually used through ``adb_emulator.testing.connected_device``:

    with EmulatedDevice(props={"ro.soc.model": "SM8650"}) as dev:
        run_adb(["connect", dev.serial])
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from adb_emulator import services, tools
from adb_emulator.wire import (A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_WRTE, AUTH_SIGNATURE, AUTH_TOKEN,
                               MAX_PAYLOAD, Closed, Stream, kill_group, packet, recv_exact)

DEVICE_TMP = "/data/local/tmp"
FEATURES = "shell_v2,cmd,fixed_push_mkdir"
_HOST_ABI = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}
_ADB_PORT_RANGE = range(5554, 5586)  # the adb server probes these for emulators


def _default_props() -> dict[str, str]:
    abi = _HOST_ABI.get(platform.machine().lower(), platform.machine())
    return {
        "ro.product.model": "Emulated Device", "ro.product.manufacturer": "edgekit",
        "ro.product.name": "edgekit_emu", "ro.product.device": "emu",
        "ro.soc.manufacturer": "edgekit", "ro.soc.model": "EMU-1", "ro.board.platform": "emu",
        "ro.build.version.release": "15", "ro.build.version.sdk": "35",
        "ro.product.cpu.abi": abi, "ro.product.cpu.abilist": abi,
    }


class _Connection:
    """One TCP connection from the adb server: the handshake, then streams multiplexed on it."""

    def __init__(self, device: "EmulatedDevice", sock: socket.socket) -> None:
        self.device, self.sock = device, sock
        self.streams: dict[int, Stream] = {}
        self.next_id, self.max_payload, self.dead = 1, MAX_PAYLOAD, False
        self.send_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise Closed(str(exc)) from None

    def serve(self) -> None:
        try:
            while True:
                cmd, arg0, arg1, length, _sum, magic = struct.unpack("<6I", recv_exact(self.sock, 24))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise Closed("bad packet magic")
                self._dispatch(cmd, arg0, arg1, recv_exact(self.sock, length) if length else b"")
        except (Closed, OSError):
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
            A_OKAY: lambda: self._streampacket(cmd, arg1, data),
            A_WRTE: lambda: self._streampacket(cmd, arg1, data),
            A_CLSE: lambda: self._streampacket(cmd, arg1, data),
        }
        handler = handlers.get(cmd)
        if handler is not None:  # others (STLS, SYNC) are not spoken by this device: ignored
            handler()

    def _greet(self, host_max_payload: int) -> None:
        self.max_payload = max(4096, min(host_max_payload or MAX_PAYLOAD, MAX_PAYLOAD))
        if self.device.auth in ("reject", "accept"):
            self.send(packet(A_AUTH, AUTH_TOKEN, 0, os.urandom(20)))
        else:
            self.send(packet(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner().encode()))

    def _auth(self, kind: int) -> None:
        if self.device.auth == "accept" and kind == AUTH_SIGNATURE:
            self.send(packet(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner().encode()))
        elif kind == AUTH_SIGNATURE:  # "reject": ask again; the host then offers its public key
            self.send(packet(A_AUTH, AUTH_TOKEN, 0, os.urandom(20)))
        # AUTH_RSAPUBLICKEY: the user never taps "Allow", so the device stays unauthorized.

    def _open(self, remote: int, service: str) -> None:
        handler = self.device.service_handler(service)
        self.device.events.append(("open", service))
        if handler is None:
            self.send(packet(A_CLSE, 0, remote))
            return
        local, self.next_id = self.next_id, self.next_id + 1
        stream = self.streams[local] = Stream(self, local, remote)
        self.send(packet(A_OKAY, local, remote))
        threading.Thread(target=self._run_service, args=(handler, stream, service), daemon=True).start()

    def _run_service(self, handler, stream: Stream, service: str) -> None:
        try:
            handler(stream, service)
        except Closed:
            pass
        finally:
            try:
                stream.close()
            except Closed:
                pass

    def _streampacket(self, cmd: int, local: int, data: bytes) -> None:
        stream = self.streams.get(local)
        if stream is None:
            return
        if cmd == A_OKAY:
            stream.ready.set()
        elif cmd == A_WRTE:
            self.send(packet(A_OKAY, stream.local, stream.remote))
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
        self.sandbox.mkdir(parents=True, exist_ok=True)
        tools.install(self)
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
            kill_group(proc)

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
        for prefix, handler in services.SERVICES:
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


__all__ = ["EmulatedDevice", "DEVICE_TMP", "FEATURES"]
