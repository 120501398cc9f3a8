"""The CLI: commands, --json, exit codes, and one-line errors for bad input with nothing half-written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from edgekit.cli import main
from edgekit.converters import CONVERTERS


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("edgekit: error")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_everywhere(capsys):
    from edgekit.commands import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert "usage: edgekit" in capsys.readouterr().out


def test_list_json(capsys):
    code, out, _ = run_cli(capsys, "list", "formats", "--json")
    assert code == 0
    listed = {f["name"] for f in json.loads(out)}
    assert listed == set(CONVERTERS.names()) and {"onnx", "tflite", "coreml"} <= listed  # the built-ins, at least
    code, out, _ = run_cli(capsys, "list", "models")
    assert code == 0 and "cnn" in out
    code, out, _ = run_cli(capsys, "list", "devices")
    assert code == 0 and "host" in out


def test_verify_and_bench_bundle(capsys, bundle):
    code, out, _ = run_cli(capsys, "verify", str(bundle), "--json")
    assert code == 0
    results = {r["format"]: r for r in json.loads(out)["results"]}
    assert results["onnx"]["status"] == results["tflite"]["status"] == "passed"
    assert results["coreml"]["status"] == "passed"
    assert results["coreml"]["verification"]["method"] == "mil-reference"
    code, out, _ = run_cli(capsys, "bench", str(bundle), "--runs", "5", "--warmup", "1", "--json")
    assert code == 0
    rows = {r["format"]: r for r in json.loads(out)}
    assert rows["pytorch"]["runs"] == rows["onnx"]["runs"] == 5


def test_bench_single_artifact(capsys, bundle):
    artifact = next(bundle.glob("*.tflite"))
    code, out, _ = run_cli(capsys, "bench", str(artifact), "--runs", "3", "--warmup", "1", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["format"] for r in rows] == ["pytorch", "tflite"] and rows[1]["median_ms"] > 0


def test_tampered_artifact_fails_verify(capsys, bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    onnx_file = next(copy.glob("*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[-100] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    code, out, _ = run_cli(capsys, "verify", str(copy), "--json")
    assert code == 1
    results = {r["format"]: r for r in json.loads(out)["results"]}
    assert results["onnx"]["status"] == "failed" and "sha256" in results["onnx"]["reason"]
    assert results["tflite"]["status"] == "passed"


def test_missing_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "convert", str(tmp_path / "nope"), "--to", "onnx")
    assert_one_line_error(code, err, "does not exist")


def test_not_a_model(capsys, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    code, _, err = run_cli(capsys, "convert", str(junk), "--to", "onnx")
    assert_one_line_error(code, err, "not a model", ".pt2")
    fake = tmp_path / "fake.pt2"
    fake.write_bytes(b"not a zip")
    code, _, err = run_cli(capsys, "convert", str(fake), "--to", "onnx")
    assert_one_line_error(code, err, "not a readable torch.export program")
    assert not (tmp_path / "fake_bundle").exists()


def test_unknown_format(capsys, checkpoint):
    code, _, err = run_cli(capsys, "convert", str(checkpoint), "--to", "onnx,tfl")
    assert_one_line_error(code, err, "unknown format 'tfl'", ", ".join(CONVERTERS.names()))
    code, _, err = run_cli(capsys, "convert", str(checkpoint), "--to", "onnx", "--precision", "fp16")
    assert_one_line_error(code, err, "onnx", "fp16", "fp32")


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_truncated_artifact(capsys, bundle, tmp_path, suffix):
    original = next(bundle.glob(f"*{suffix}"))
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(original.read_bytes()[: original.stat().st_size // 3])
    code, _, err = run_cli(capsys, "bench", str(broken), "--runs", "1")
    assert_one_line_error(code, err, str(broken))


def test_not_an_artifact(capsys, tmp_path):
    other = tmp_path / "model.bin"
    other.write_bytes(b"\0" * 10)
    code, _, err = run_cli(capsys, "bench", str(other))
    assert_one_line_error(code, err, "not an artifact", ".onnx")


class Inverse(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x) + 1


def save_pt2(module, path, example, extra=None):
    program = torch.export.export(module.eval(), example)
    torch.export.save(program, str(path), extra_files=extra)
    return path


@pytest.mark.parametrize("fmt, op", [("tflite", "linalg_inv"), ("onnx", "linalg_inv"), ("coreml", "linalg_inv")])
def test_unsupported_op_is_named(capsys, tmp_path, fmt, op):
    pt2 = save_pt2(Inverse(), tmp_path / "inv.pt2", (torch.randn(1, 4, 4),))
    out = tmp_path / "bundle"
    code, _, err = run_cli(capsys, "convert", str(pt2), "--to", fmt, "--out", str(out))
    assert_one_line_error(code, err, f"the {fmt} converter cannot handle operator", op)
    assert sorted(p.name for p in out.iterdir()) == ["golden.npz", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"][0]["status"] == "failed" and op in manifest["artifacts"][0]["error"]


def test_debug_shows_traceback(capsys, tmp_path):
    with pytest.raises(Exception):
        main(["--debug", "convert", str(tmp_path / "nope"), "--to", "onnx"])


def test_user_pt2_with_labels(capsys, tmp_path):
    from edgekit.models import create_model

    model = create_model("cnn", {"width": 0.25, "blocks": [[32, 2]], "num_classes": 3}).eval()
    pt2 = save_pt2(model, tmp_path / "mine.pt2", model.example_inputs())
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    code, out, err = run_cli(capsys, "convert", str(pt2), "--to", "onnx,tflite", "--labels", str(labels), "--json")
    assert code == 0, err
    result = json.loads(out)
    for entry in result["artifacts"]:
        assert entry["status"] == "verified"
        assert entry["verification"]["inputs"] == 200 and entry["verification"]["max_abs_diff"] <= 1e-4
    manifest = json.loads((tmp_path / "mine_bundle" / "manifest.json").read_text())
    assert manifest["labels"] == ["cat", "dog", "bird"] and manifest["source"]["kind"] == "pt2"
