"""The adb wire protocol as the emulated device speaks it: 24-byte packet headers, streams with one
WRTE in flight (``Stream``), exact reads across WRTE payloads (``Reader``). Test infrastructure only.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Protocol

A_CNXN, A_AUTH, A_OPEN, A_OKAY = 0x4E584E43, 0x48545541, 0x4E45504F, 0x59414B4F
A_CLSE, A_WRTE = 0x45534C43, 0x45545257
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3


class Connection(Protocol):
    """What a stream needs from its connection (``emulator._Connection``)."""

    max_payload: int
    dead: bool
    streams: dict[int, "Stream"]

    def send(self, data: bytes) -> None: ...


class Closed(Exception):
    """The stream or the connection went away."""


def packet(cmd: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    header = struct.pack("<6I", cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF)
    return header + data


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed("peer closed the connection")
        buf += chunk
    return bytes(buf)


class Stream:
    """One adb stream: ``write`` waits for the host's OKAY before each WRTE; ``read`` returns payloads."""

    def __init__(self, conn: "Connection", local: int, remote: int) -> None:
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
                    raise Closed("stream closed (or the host stopped acknowledging)")
            if self.closed:
                raise Closed("stream closed")
            self.ready.clear()
            self.conn.send(packet(A_WRTE, self.local, self.remote, data[start:start + step]))

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
            self.conn.send(packet(A_CLSE, self.local, self.remote))


class Reader:
    """Reads exact byte counts from a stream whose WRTE payloads do not align with messages."""

    def __init__(self, stream: Stream) -> None:
        self.stream, self.buf = stream, bytearray()

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.stream.read()
            if chunk is None:
                raise Closed("stream closed by the host")
            self.buf += chunk
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def message(self) -> tuple[bytes, int]:
        head = self.read(8)
        return head[:4], struct.unpack("<I", head[4:])[0]


def kill_group(proc: subprocess.Popen) -> None:
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
