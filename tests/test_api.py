"""The public Python API: edgekit.convert on what a user holds (a module, an ExportedProgram, a .pt2),
Bundle.verify / bench / load, and the other top-level names."""

from __future__ import annotations

import json

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


# ---- the rest of the public face: run, train, recipes, models, bench, a bundle's golden data and runners ----

TINY_RECIPE = """
name = "api_tiny"
extends = "cnn_digits"
[model]
width = 0.25
[train]
epochs = 1
[export]
formats = ["onnx"]
[bench]
warmup = 1
runs = 5
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``edgekit.run`` on a one-epoch CNN: its outcome and its run folder."""
    folder = tmp_path_factory.mktemp("api_run")
    (folder / "api_tiny.toml").write_text(TINY_RECIPE)
    return edgekit.run(folder / "api_tiny.toml", folder / "run"), folder / "run"


def test_every_public_name_resolves_and_registries_hold_the_built_ins():
    for name in edgekit.__all__:
        assert getattr(edgekit, name) is not None, name
    assert {"onnx", "tflite", "coreml"} <= set(edgekit.CONVERTERS.names())
    assert {"cnn", "ssm", "transformer"} <= set(edgekit.FAMILIES.names())
    assert "digits" in edgekit.DATASETS and "prose" in edgekit.DOMAINS
    assert "adb" in edgekit.DEVICE_BENCHES and "adb" in edgekit.DEVICE_LISTERS
    assert isinstance(edgekit.DEVICE_BENCHES.get("adb"), edgekit.DeviceBackend)
    assert isinstance(edgekit.CONVERTERS.get("onnx"), edgekit.Converter)
    assert callable(edgekit.register_converter) and callable(edgekit.register_family)


def test_verbs_and_subpackages_do_not_share_names():
    """The verbs edgekit.train / edgekit.bench are not shadowed by subpackages (those are training/, benchmarking/)."""
    import edgekit.benchmarking.targets as targets
    import edgekit.training.run  # noqa: F401

    assert callable(edgekit.train) and callable(edgekit.bench)
    assert edgekit.train.__module__ == edgekit.bench.__module__ == "edgekit.api"
    assert targets.DEVICE_BENCHES is edgekit.DEVICE_BENCHES


def test_load_recipe_accepts_a_name_a_path_or_a_recipe(tmp_path):
    recipe = edgekit.load_recipe("cnn_digits")
    assert recipe.name == "cnn_digits" and recipe.model["family"] == "cnn"
    assert edgekit.load_recipe(recipe) is recipe
    (tmp_path / "t.toml").write_text(TINY_RECIPE)
    assert edgekit.load_recipe(tmp_path / "t.toml").export.formats == ("onnx",)
    with pytest.raises(edgekit.EdgekitError, match="no_such_recipe"):
        edgekit.load_recipe("no_such_recipe")


def test_run_writes_the_report_and_returns_its_rows(tiny_run):
    outcome, folder = tiny_run
    assert outcome.ok and outcome.report_path == folder / "report.json" and outcome.report_path.is_file()
    assert [r["runtime"] for r in outcome.rows] == ["torch-eager", "onnxruntime"]
    assert outcome.rows[1]["artifact"] == "api_tiny_fp32.onnx" and outcome.rows[1]["runs"] == 5
    assert edgekit.Bundle.load(folder / "bundle").verify().ok


def test_train_a_changed_recipe_twice_and_read_the_checkpoint_back(tmp_path):
    import dataclasses

    recipe = edgekit.load_recipe("cnn_digits")
    recipe = dataclasses.replace(recipe, model={**recipe.model, "width": 0.25},
                                 train=dataclasses.replace(recipe.train, epochs=1))
    first = edgekit.train(recipe, tmp_path / "a")
    second = edgekit.train(recipe, tmp_path / "b")  # the verb, not the edgekit.train package it imported
    assert first.checkpoint == tmp_path / "a" / "checkpoint" and second.checkpoint.is_dir()
    assert first.family == "cnn" and first.config["width"] == 0.25
    assert 0.0 <= first.metrics["test_accuracy"] <= 1.0
    again = edgekit.Trained.load(first.checkpoint)
    assert again == first
    with pytest.raises(edgekit.EdgekitError, match="not an edgekit checkpoint"):
        edgekit.Trained.load(tmp_path)


def test_create_model_names_families_and_keys():
    model = edgekit.create_model("ssm", head="byte_lm", d_model=32, n_layers=1, head_dim=16, d_state=8, chunk=16)
    assert isinstance(model, edgekit.EdgeModel) and model.config.d_model == 32
    with pytest.raises(edgekit.EdgekitError, match="unknown model family 'rnn'.*cnn, ssm, transformer"):
        edgekit.create_model("rnn")
    with pytest.raises(edgekit.EdgekitError, match="d_modle"):
        edgekit.create_model("ssm", d_modle=32)


def test_bench_graph_exports_checks_and_times_one_graph():
    torch.manual_seed(0)
    model = edgekit.create_model("ssm", head="byte_lm", d_model=32, n_layers=1, head_dim=16, d_state=8, chunk=16,
                                 export_lengths=[24]).eval()
    timings = edgekit.bench_graph(model, "step", formats=["onnx"], threads=1, warmup=1, runs=3)
    assert set(timings) == {"pytorch", "onnx"} and timings["pytorch"]["runs"] == 3
    onnx = timings["onnx"]
    assert "error" not in onnx, onnx
    assert onnx["max_abs_diff"] < 1e-4 and onnx["runs"] == 3 and onnx["size_bytes"] > 0
    with pytest.raises(edgekit.EdgekitError, match="unknown format 'no_format'"):
        edgekit.bench_graph(model, "prefill", formats=["no_format"])
    with pytest.raises(edgekit.EdgekitError, match="has no graph 'decode'.*'prefill_L24', 'step'"):
        edgekit.bench_graph(model, "decode")


def test_bench_a_bundle_and_one_artifact_and_save_the_report(tiny_run, tmp_path, capsys):
    _, folder = tiny_run
    report = edgekit.bench(folder / "bundle", threads=1, warmup=1, runs=4, out=tmp_path / "bench.json")
    assert report.ok and [r["runtime"] for r in report.rows] == ["torch-eager", "onnxruntime"]
    assert report.rows[1]["speedup_vs_pytorch"] is not None and report.manifest.artifacts[0].format == "onnx"
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report.rows, default=str)) and len(saved["bench"]) == 2
    one = edgekit.bench(folder / "bundle" / "api_tiny_fp32.onnx", runs=3, warmup=0)
    assert [(r["artifact"], r["runs"]) for r in one.rows][-1] == ("api_tiny_fp32.onnx", 3)
    edgekit.print_table(one.rows, "one artifact")
    assert "api_tiny_fp32.onnx" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, words", [
    ({"runs": 0}, "runs must be at least 1"),
    ({"options": object()}, "options= is for a device"),
    ({"device": "phone"}, "unknown device backend 'phone'.*adb"),
])
def test_bench_refuses_bad_arguments(tiny_run, kwargs, words):
    with pytest.raises(edgekit.EdgekitError, match=words):
        edgekit.bench(tiny_run[1] / "bundle", **kwargs)


def test_bench_checks_its_report_file_before_running(tiny_run, tmp_path):
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    with pytest.raises(edgekit.EdgekitError, match="did not write"):
        edgekit.bench(tiny_run[1] / "bundle", out=tmp_path / "notes.json")
    with pytest.raises(edgekit.EdgekitError, match="does not exist"):
        edgekit.bench(tmp_path / "missing.onnx")


def test_bundle_runner_reproduces_the_golden_outputs(tiny_run, tmp_path):
    import shutil

    bundle = edgekit.Bundle.load(tiny_run[1] / "bundle")
    reference = bundle.reference()
    assert len(reference) == len(reference.outputs) > 10 and reference.labels is not None
    for which in ("onnx", "api_tiny_fp32.onnx"):
        run = bundle.runner(which, threads=1)
        got = run(list(reference.inputs[0]))
        assert np.abs(got[0] - reference.outputs[0][0]).max() < 1e-4
    with pytest.raises(edgekit.EdgekitError, match="no artifact 'tflite'.*api_tiny_fp32.onnx"):
        bundle.runner("tflite")
    copy = shutil.copytree(bundle.path, tmp_path / "copy")
    with open(copy / "api_tiny_fp32.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(edgekit.EdgekitError, match="changed since conversion.*not run"):
        edgekit.Bundle.load(copy).runner("onnx")
