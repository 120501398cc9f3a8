"""The public Python API: edgekit.convert on what a user holds (a module, an ExportedProgram, a .pt2),
Bundle.verify / bench / load, and the other top-level names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


X = (torch.randn(1, 3, 16, 16),)


def test_top_level_names_are_the_public_api():
    assert {"convert", "Bundle", "QuantSpec", "train", "adapt", "load", "EdgekitError"} <= set(dir(edgekit))
    assert edgekit.EdgekitError is __import__("edgekit.errors").errors.EdgekitError
    with pytest.raises(AttributeError):
        edgekit.not_a_name  # noqa: B018


def test_convert_a_module_with_int8_from_a_calibration_array_then_verify_bench_load(net, tmp_path):
    calib = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    bundle = edgekit.convert(net, X, to=["onnx"], quant=edgekit.QuantSpec.parse("int8"), calib=calib,
                             out=tmp_path / "b", name="net")
    (entry,) = bundle.artifacts
    assert entry["status"] == "verified" and entry["file"] == "net_int8.onnx", entry["error"]
    assert "calibration array (32)" in entry["verification"]["quantization"]["calibration"]
    report = bundle.verify()
    assert report.ok and [r["status"] for r in report.results] == ["passed"]
    rows = bundle.bench(threads=1, warmup=1, runs=5)
    assert [r["artifact"] for r in rows] == ["net_int8.onnx"] and rows[0]["runs"] == 5
    again = edgekit.Bundle.load(tmp_path / "b")
    assert again.manifest.to_dict()["artifacts"] == bundle.manifest.to_dict()["artifacts"]


def test_convert_an_exported_program_and_a_pt2_path(net, tmp_path):
    program = torch.export.export(net, X)
    from_program = edgekit.convert(program, to=["onnx"], out=tmp_path / "p")
    torch.export.save(program, str(tmp_path / "net.pt2"))
    from_file = edgekit.convert(tmp_path / "net.pt2", to=["onnx"], out=tmp_path / "f")
    for bundle in (from_program, from_file):
        assert [a["status"] for a in bundle.artifacts] == ["verified"]
    # the same weights: the same recorded source hash for the module and the program it was exported to
    assert edgekit.convert(net, X, to=["onnx"], out=tmp_path / "m").manifest.source["sha256"] == \
        from_program.manifest.source["sha256"]


@pytest.mark.parametrize("call, words", [
    (lambda out: edgekit.convert(Net(), to=["onnx"], out=out), "needs its example inputs"),
    (lambda out: edgekit.convert(Net(), X, to=[], out=out), "names no format"),
    (lambda out: edgekit.convert(Net(), X, to=["onnx"], quant="int9", out=out), "int9"),
    (lambda out: edgekit.convert(42, to=["onnx"], out=out), "expected an nn.Module"),
    (lambda out: edgekit.convert(Net(), X, to=["onnx"], quant="int8", calib=np.zeros((4, 2)), out=out),
     "sample 0 has shape"),
])
def test_bad_calls_raise_edgekit_errors_and_write_nothing(tmp_path, call, words):
    with pytest.raises(edgekit.EdgekitError, match=words):
        call(tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_load_and_adapt_check_their_arguments(checkpoint, tmp_path):
    model = edgekit.load(checkpoint)
    assert isinstance(model, torch.nn.Module) and not model.training
    with pytest.raises(edgekit.EdgekitError, match="unknown key 'ranks'"):
        edgekit.adapt(checkpoint, domain="digits_inverted_rotated", out=tmp_path / "a", ranks=4)
    assert not (tmp_path / "a").exists()
