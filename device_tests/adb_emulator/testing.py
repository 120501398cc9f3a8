"""Test helpers: a private adb server (own port, HOME and TMPDIR; killed afterwards) and an
emulated device connected to it. Used by tests/ and device_tests/ (never shipped in the wheel); no phone needed.

    with private_adb_server(), connected_device() as dev:
        bench_on_adb("m.tflite", dev.serial, runner="python", python=sys.executable)
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from adb_emulator.emulator import EmulatedDevice
from edgekit.devices.adb import PORT_ENV, AdbError, device_state, run_adb

_AVOID = set(range(5037, 5038)) | set(range(5554, 5586))


def free_port() -> int:
    """A free loopback port that the adb server does not probe (5554-5585) and is not 5037."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _AVOID:
            return port


@contextmanager
def _patched_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def private_adb_server() -> Iterator[dict[str, str]]:
    """Start an adb server on a private port with private HOME/TMPDIR; kill it and clean up after.

    ADB_LIBUSB=0 skips the libusb scan that otherwise delays the start by ~3 s (there is no USB
    device in these tests). Yields the environment it set.
    """
    home = Path(tempfile.mkdtemp(prefix="edgekit-adb-home-"))
    values = {PORT_ENV: str(free_port()), "HOME": str(home), "TMPDIR": str(home),
              "ANDROID_USER_HOME": str(home / ".android"), "ADB_LIBUSB": "0", "ADB_MDNS_AUTO_CONNECT": "0"}
    with _patched_env(values):
        try:
            run_adb(["start-server"], timeout=30)
            yield values
        finally:
            run_adb(["kill-server"], check=False, timeout=15)
            shutil.rmtree(home, ignore_errors=True)


def connect(device: EmulatedDevice, timeout: float = 10.0) -> str:
    """``adb connect`` the emulated device and wait until adb settles on a state; returns the state."""
    run_adb(["connect", device.serial], timeout=timeout)
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = device_state(device.serial)
        if state in ("device", "unauthorized"):
            return state
        time.sleep(0.05)
    raise AdbError(f"emulated device {device.serial} did not come up (state {state or 'unknown'})")


@contextmanager
def connected_device(**kwargs: Any) -> Iterator[EmulatedDevice]:
    """An EmulatedDevice (kwargs as for EmulatedDevice) connected to the current adb server."""
    with EmulatedDevice(**kwargs) as device:
        connect(device)
        try:
            yield device
        finally:
            run_adb(["disconnect", device.serial], check=False, timeout=10)


def write_tiny_tflite(path: Path) -> Path:
    """A real two-op LiteRT model (y = (x + c) * c, float32 [1, 8]) built with the official
    flatbuffer schema of ai-edge-litert: no converter run, so it takes milliseconds."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as s

    const = np.linspace(0.5, 2.0, 8, dtype=np.float32).reshape(1, 8)
    buffers = [s.BufferT(), s.BufferT()]
    buffers[1].data = list(const.tobytes())
    tensors = []
    for name, buf in (("x", 0), ("c", 1), ("h", 0), ("y", 0)):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, 8], s.TensorType.FLOAT32, buf, name
        tensors.append(t)
    ops = []
    for opcode, inputs, output in ((0, [0, 1], 2), (1, [2, 1], 3)):
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, [output]
        ops.append(op)
    codes = []
    for builtin in (s.BuiltinOperator.ADD, s.BuiltinOperator.MUL):
        code = s.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
        codes.append(code)
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators, graph.name = tensors, [0], [3], ops, "main"
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], buffers
    model.description = "edgekit test model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(bytes(builder.Output()))
    return Path(path)


def write_tiny_onnx(path: Path) -> Path:
    """A real ONNX model (y = relu(x @ W), float32 [1, 8] -> [1, 4]) built with onnx.helper."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    weights = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("W", TensorProto.FLOAT, [8, 4], weights.flatten().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)
