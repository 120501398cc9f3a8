"""The one function that runs every adb command, and the errors it raises.

``run_adb`` takes an argument list (never a shell string), puts a timeout on every call and
raises ``AdbError`` naming the command and its output. ``run_shell`` quotes every word it sends
to ``adb shell`` with ``shlex.quote``. adb is found from ``EDGEKIT_ADB``, then the official binary
that the ``adbutils`` wheel ships, then ``adb`` on PATH; ``ANDROID_ADB_SERVER_PORT`` is honored.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from edgekit.errors import EdgekitError

DEFAULT_TIMEOUT_S = 30.0
ADB_ENV = "EDGEKIT_ADB"
SERIAL_ENV = "EDGEKIT_ADB_SERIAL"
PORT_ENV = "ANDROID_ADB_SERVER_PORT"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# (seconds, flag) set by ``adb_timeout``: replaces the timeout of every adb call made inside it
_TIMEOUT: contextvars.ContextVar[tuple[float, str] | None] = contextvars.ContextVar("adb_timeout", default=None)


class AdbError(EdgekitError):
    """An adb command failed. ``kind`` says why: no_device, unauthorized, offline, not_found,
    ambiguous, disk_full, disconnected, timeout, connect_failed, failed, ..."""

    def __init__(self, message: str, *, kind: str = "failed", command: Sequence[str] = (),
                 output: str = "") -> None:
        super().__init__(message)
        self.kind, self.command, self.output = kind, tuple(command), output


@dataclass(frozen=True)
class AdbResult:
    """What one adb command did."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def output(self) -> str:
        return "\n".join(part for part in (self.stdout.strip(), self.stderr.strip()) if part)


def find_adb() -> str:
    """The adb binary: $EDGEKIT_ADB, else the one in the adbutils wheel, else ``adb`` on PATH."""
    chosen = os.environ.get(ADB_ENV)
    if chosen:
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise AdbError(f"{ADB_ENV}={chosen} is not an executable file; point it at an adb binary "
                           "or unset it to use the adb that the adbutils package ships", kind="no_adb")
        return chosen
    try:
        import adbutils

        bundled = adbutils.adb_path()
        if bundled and os.path.isfile(bundled):
            return str(bundled)
    except Exception:  # noqa: BLE001 - adbutils missing or without a binary for this platform
        pass
    on_path = shutil.which("adb")
    if on_path:
        return on_path
    raise AdbError("no adb binary found: install the adb extra (pip install -c constraints.txt -e '.[adb]', "
                   f"whose adbutils wheel ships the official adb), put adb on PATH, or set {ADB_ENV}=/path/to/adb",
                   kind="no_adb")


def adb_command(args: Sequence[str], serial: str | None = None) -> list[str]:
    """The full argument list for one adb call (server port and serial made explicit)."""
    cmd = [find_adb()]
    port = os.environ.get(PORT_ENV)
    if port:
        cmd += ["-P", port]
    if serial:
        cmd += ["-s", serial]
    return cmd + [str(a) for a in args]


def render(cmd: Sequence[str]) -> str:
    """A command as a person would type it (for messages only; never executed)."""
    return " ".join(shlex.quote(c) for c in cmd)


@contextlib.contextmanager
def adb_timeout(seconds: float | None, flag: str = "--timeout") -> Iterator[None]:
    """Inside this block every adb call waits at most ``seconds`` (the user's ``flag``); None: each
    call keeps its own default."""
    if seconds is None:
        yield
        return
    token = _TIMEOUT.set((float(seconds), flag))
    try:
        yield
    finally:
        _TIMEOUT.reset(token)


def _child_setup() -> object | None:
    """A ``preexec_fn`` that makes the adb client die with edgekit (Linux: PR_SET_PDEATHSIG = SIGKILL).

    prctl is looked up here, in the parent: the child, between fork and exec, only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # edgekit died before prctl took effect
            os._exit(1)

    return setup


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the adb client and anything it started in its process group, then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _communicate(cmd: list[str], input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
    """Run ``cmd`` in its own process group; on timeout or interrupt the whole group is killed."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_child_setup())
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    except BaseException:  # KeyboardInterrupt, SystemExit: the client must not outlive edgekit's wait
        _kill_group(proc)
        raise
    return proc.returncode, out, err


def run_adb(args: Sequence[str], *, serial: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
            check: bool = True, input: bytes | None = None) -> AdbResult:
    """Run one adb command with a timeout (``adb_timeout`` overrides it); with ``check`` a non-zero
    exit raises ``AdbError``. The adb client dies with edgekit and is killed on timeout."""
    if isinstance(args, (str, bytes)):
        raise TypeError("run_adb takes a list of arguments, not a shell string")
    cmd = adb_command(args, serial)
    override = _TIMEOUT.get()
    timeout, flag = override if override else (timeout, "--timeout")
    start = time.monotonic()
    try:
        returncode, stdout, stderr = _communicate(cmd, input, timeout)
    except subprocess.TimeoutExpired as exc:
        out = _text(exc.stdout) + _text(exc.stderr)
        raise AdbError(f"`{render(cmd)}` on device {serial or '(default)'} did not finish within {timeout:g} s "
                       f"and was stopped (the device may be hung or disconnected, or the command needs longer: "
                       f"raise {flag} SECONDS); output so far: {_tail(out, 3).replace(chr(10), ' | ') or '(none)'}",
                       kind="timeout", command=cmd, output=out) from None
    except OSError as exc:
        raise AdbError(f"could not run `{render(cmd)}`: {exc}", kind="no_adb", command=cmd) from None
    result = AdbResult(tuple(cmd), returncode, _text(stdout), _text(stderr), time.monotonic() - start)
    if check and result.returncode != 0:
        raise classify_failure(result, serial)
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# What adb prints, mapped to what went wrong and what to do: checked in order, first match wins.
_FAILURES: list[tuple[str, str, str]] = [
    (r"no devices/emulators found|no devices found", "no_device",
     "no Android device is connected (`adb devices` lists none): connect a phone with USB debugging "
     "enabled, or `adb connect HOST:PORT`, then retry"),
    (r"unauthorized", "unauthorized",
     "device {serial} is unauthorized: unlock it and accept the 'Allow USB debugging' prompt, then retry"),
    (r"device offline|device still connecting", "offline",
     "device {serial} is offline (it disconnected, or is rebooting): reconnect it and retry"),
    (r"device '[^']*' not found|device not found", "not_found",
     "device {serial} is not connected; `edgekit devices` lists the connected ones"),
    (r"more than one device", "ambiguous",
     "more than one device is connected: choose one with --device adb:SERIAL (see `edgekit devices`)"),
    (r"No space left on device", "disk_full",
     "the storage of device {serial} is full: free space on it (for example under /data/local/tmp) and retry"),
    (r"error: closed|protocol fault|connection reset|Broken pipe", "disconnected",
     "device {serial} disconnected during the command: reconnect it and retry"),
    (r"remote object '[^']*' does not exist|No such file or directory", "missing_file",
     "a file that the command needs does not exist on device {serial}"),
    (r"failed to connect|cannot connect|Connection refused", "connect_failed",
     "adb could not connect to {serial}: check the address and that the device listens for adb"),
]


# Kinds that mean the device itself is unusable (as opposed to one command failing on it).
DEVICE_GONE = frozenset({"no_device", "unauthorized", "offline", "not_found", "ambiguous", "disconnected",
                         "timeout", "no_adb", "connect_failed"})
# Lines that adb itself prints (the rest of the output belongs to the command run on the device).
_ADB_LINE = re.compile(r"^(adb: |error: |failed to |cannot |\* )", re.MULTILINE)


def classify_failure(result: AdbResult, serial: str | None) -> AdbError:
    """Turn a failed adb command into an AdbError whose message says what to do.

    Only adb's own lines are matched, so a device command that merely prints "unauthorized" or
    "No space left" is not mistaken for an adb-level failure.
    """
    text = result.output
    own = "\n".join(line for line in text.splitlines() if _ADB_LINE.match(line))
    for pattern, kind, advice in _FAILURES:
        if re.search(pattern, own, re.IGNORECASE):
            message = advice.format(serial=serial or "(default)")
            break
    else:
        kind, message = "failed", f"adb exited with status {result.returncode}"
    detail = _tail(text) or "(no output)"
    return AdbError(f"{message} [`{render(result.command)}` said: {detail}]", kind=kind,
                    command=result.command, output=text)


def quote_command(argv: Sequence[str]) -> str:
    """One shell command line from an argument list, every word quoted with shlex.quote."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("pass the command as a list of words, not a shell string")
    return " ".join(shlex.quote(str(a)) for a in argv)


def shell_script(*commands: Sequence[str], sep: str = " && ", suffix: str = "") -> list[str]:
    """``["sh", "-c", SCRIPT]`` where SCRIPT joins quoted commands with ``sep`` (``&&``, ``;``)."""
    if sep.strip() not in ("&&", ";", "||"):
        raise ValueError(f"sep must be '&&', ';' or '||', not {sep!r}")
    return ["sh", "-c", sep.join(quote_command(c) for c in commands) + suffix]


def run_shell(serial: str | None, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S,
              check: bool = True) -> AdbResult:
    """Run one command on the device via ``adb shell``; every word is quoted with shlex.quote.

    adb exits 255 when the device vanished mid-command (and prints nothing), so an exit of 255
    is checked against the device state before it is reported as the command's own status.
    """
    result = run_adb(["shell", quote_command(argv)], serial=serial, timeout=timeout, check=False)
    if result.returncode == 255:
        state = device_state(serial)
        if state != "device":
            raise AdbError(f"device {serial or '(default)'} disconnected while running `{quote_command(argv)}` "
                           f"(its state is now: {state or 'gone'}); reconnect it and retry. Output so far: "
                           f"{_tail(result.output) or '(none)'}", kind="disconnected",
                           command=result.command, output=result.output)
    if check and result.returncode != 0:
        err = classify_failure(result, serial)
        if err.kind == "failed":
            err = AdbError(f"`{quote_command(argv)}` failed on device {serial or '(default)'} with exit status "
                           f"{result.returncode}: {_tail(result.output) or '(no output)'}",
                           kind="command_failed", command=result.command, output=result.output)
        raise err
    return result


def device_state(serial: str | None, timeout: float = 10.0) -> str:
    """``device``, ``offline``, ``unauthorized``... or "" when adb does not know the device."""
    result = run_adb(["get-state"], serial=serial, timeout=timeout, check=False)
    if result.returncode == 0:
        return result.stdout.strip()
    match = re.search(r"device (offline|unauthorized|still connecting)", result.output)
    return match.group(1) if match else ""


def list_serials(timeout: float = 15.0) -> list[tuple[str, str]]:
    """(serial, state) for every device that ``adb devices`` lists."""
    out = run_adb(["devices"], timeout=timeout).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            rows.append((parts[0], parts[1]))
    return rows


def resolve_serial(serial: str | None = None, timeout: float = 15.0) -> str:
    """The serial to use: the given one, else $EDGEKIT_ADB_SERIAL, else the only ready device."""
    serial = serial or os.environ.get(SERIAL_ENV) or None
    rows = list_serials(timeout)
    if serial:
        state = dict(rows).get(serial)
        if state is None:
            listed = ", ".join(f"{s} ({st})" for s, st in rows) or "none"
            raise AdbError(f"device {serial} is not connected (connected: {listed}); check the cable or "
                           f"`adb connect {serial}`", kind="not_found")
        _require_ready(serial, state)
        return serial
    ready = [s for s, state in rows if state == "device"]
    if len(ready) == 1:
        return ready[0]
    if len(ready) > 1:
        raise AdbError(f"more than one device is connected ({', '.join(ready)}): choose one with "
                       f"--device adb:SERIAL or {SERIAL_ENV}", kind="ambiguous")
    for s, state in rows:
        _require_ready(s, state)
    raise AdbError("no Android device is connected (`adb devices` lists none): connect a phone with USB "
                   "debugging enabled, or `adb connect HOST:PORT`, then retry", kind="no_device")


def _require_ready(serial: str, state: str) -> None:
    advice = {
        "unauthorized": "unlock it and accept the 'Allow USB debugging' prompt, then retry",
        "offline": "it disconnected or is rebooting; reconnect it and retry",
        "no permissions": "this user may not open its USB device; fix the udev rules",
    }
    if state != "device":
        raise AdbError(f"device {serial} is {state}: {advice.get(state, 'wait until adb lists it as device')}",
                       kind=state.replace(" ", "_") if state in advice else "not_ready")


def adb_version() -> str:
    """``adb version``'s first two lines on one line (recorded with each result)."""
    lines = run_adb(["version"], timeout=10).stdout.strip().splitlines()
    return " / ".join(lines[:2])


def local_path(path: str | os.PathLike[str]) -> Path:
    """A user-given local path, expanded and absolute."""
    return Path(path).expanduser().resolve()
