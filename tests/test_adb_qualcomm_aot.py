"""Qualcomm NPU ahead-of-time compilation (ai_edge_litert.aot.aot_compile), run for real.

Without Qualcomm's SDK package the compiler plugin cannot load libQnnHtp.so; aot_compile does not
raise then, so edgekit must turn its failed_backends into a clear error and leave no 0-byte file.
"""

import importlib.util

import pytest

from adb_emulator.testing import write_tiny_tflite
from edgekit.converters.tflite.npu import compile_npu, parse_npu_target
from edgekit.errors import EdgekitError

pytest.importorskip("ai_edge_litert.aot.aot_compile")
HAVE_SDK = importlib.util.find_spec("ai_edge_litert_sdk_qualcomm") is not None


@pytest.fixture()
def model(tmp_path):
    return write_tiny_tflite(tmp_path / "tiny.tflite")


@pytest.mark.skipif(HAVE_SDK, reason="Qualcomm's SDK is installed here, so compilation may succeed")
def test_without_the_sdk_it_fails_clearly_and_leaves_nothing(model, tmp_path, capsys):
    out = tmp_path / "npu"
    with pytest.raises(EdgekitError) as err:
        compile_npu(model, "qualcomm:SM8650", out)
    message = str(err.value)
    assert "Qualcomm AOT compilation for SM8650 failed" in message
    assert "pip install ai-edge-litert-sdk-qualcomm==" in message and "network access" in message
    assert "libQnnHtp.so" in message  # what the compiler could not load
    assert "deleted the empty output" in message
    assert list(out.rglob("*")) == []  # no 0-byte .tflite, no temp folder
    assert capsys.readouterr().out == ""  # aot_compile's prints went to stderr


@pytest.mark.skipif(not HAVE_SDK, reason="needs ai-edge-litert-sdk-qualcomm (downloads QAIRT at install)")
def test_with_the_sdk_it_writes_a_compiled_model(model, tmp_path):
    path = compile_npu(model, "qualcomm:SM8650", tmp_path / "npu")
    assert path.name == "tiny_qualcomm_SM8650.tflite" and path.stat().st_size > 0


def test_bad_targets_name_the_valid_ones(model, tmp_path):
    with pytest.raises(EdgekitError, match="unknown Qualcomm SoC 'SM0000'; ai-edge-litert knows: .*SM8650"):
        compile_npu(model, "qualcomm:SM0000", tmp_path)
    with pytest.raises(EdgekitError, match="unknown NPU vendor 'acme'; choose one of: qualcomm"):
        compile_npu(model, "acme:X1", tmp_path)
    with pytest.raises(EdgekitError, match="must look like VENDOR:SOC"):
        parse_npu_target("qualcomm")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EdgekitError, match="is not a .tflite file"):
        compile_npu(onnx, "qualcomm:SM8650", tmp_path)
    assert parse_npu_target("Qualcomm:sm8650") == ("qualcomm", "SM8650")
