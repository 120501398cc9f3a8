"""The public Python API: edgekit.convert on what a user holds (a module, an ExportedProgram, a .pt2),
Bundle.verify / bench / load, and the other top-level names."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
    assert all(verb.__module__.startswith("edgekit.api.") for verb in (edgekit.train, edgekit.bench))
    import pkgutil

    # an imported submodule becomes an attribute of the package and would hide a public name of the same spelling
    assert not set(edgekit.__all__) & {m.name for m in pkgutil.iter_modules(edgekit.__path__)}
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
    second = edgekit.train(recipe, tmp_path / "b")  # a second call: still the verb
    assert first.checkpoint == tmp_path / "a" / "checkpoint" and second.checkpoint.is_dir()
    assert first.family == "cnn" and first.config["width"] == 0.25
    assert 0.0 <= first.metrics["test_accuracy"] <= 1.0
    again = edgekit.Trained.load(first.checkpoint)
    assert again == first  # what was saved reads back as what train returned
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


def test_verify_rows_and_the_tables_the_cli_prints(tiny_run, capsys):
    bundle = edgekit.Bundle.load(tiny_run[1] / "bundle")
    report = bundle.verify(threads=1)
    (row,) = report.rows()
    assert (row["mark"], row["artifact"], row["note"]) == ("✅", "api_tiny_fp32.onnx", "")
    edgekit.print_table(report.rows(), "verified", columns="verify")
    edgekit.print_table(bundle.rows(), "converted", columns="convert")
    out = capsys.readouterr().out
    assert out.count("api_tiny_fp32.onnx") == 2 and "100.00%" in out and "100.0%" in out
    with pytest.raises(edgekit.EdgekitError, match="unknown table 'nope'; choose one of: report, convert, verify"):
        edgekit.print_table([], columns="nope")


# ---- everything `edgekit convert` does, from Python: labels, meta, lengths, adapters, NPU, progress ----

def test_convert_a_checkpoint_with_labels_and_progress_tells_what_it_wrote(tiny_run, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)))
    lines: list[str] = []
    bundle = edgekit.convert(tiny_run[1] / "checkpoint", to=["onnx"], quant=edgekit.QuantSpec.parse("int8",
                             calib_samples=16), labels=labels, out=tmp_path / "b", progress=lines.append)
    assert bundle.manifest.labels == [f"digit {i}" for i in range(10)]
    assert any(line.startswith("calibrating (histogram observers) on digits train split (16)") for line in lines), lines
    (entry,) = bundle.written
    assert entry.file == "api_tiny_int8.onnx" and entry.status == "verified"
    assert [r["artifact"] for r in bundle.rows()] == ["api_tiny_int8.onnx"] and "test split" in bundle.verified_on
    layers = entry.verification["quantization"]["layer_sqnr_db"]
    assert layers and {"layer", "op", "sqnr_db", "quantized"} <= set(layers[0])
    again = edgekit.convert(tiny_run[1] / "checkpoint", to=["onnx"], out=tmp_path / "b")  # fp32 beside int8
    assert [e.file for e in again.written] == ["api_tiny_fp32.onnx"] and len(again.artifacts) == 2
    assert len(edgekit.Bundle.load(tmp_path / "b").rows()) == 2


def test_convert_a_pt2_with_meta_and_refuse_files_for_a_module(net, tmp_path):
    torch.export.save(torch.export.export(net, X), str(tmp_path / "net.pt2"))
    (tmp_path / "meta.json").write_text(json.dumps({"labels": list("abcde"), "input_names": ["image"],
                                                    "output_names": ["scores"]}))
    bundle = edgekit.convert(tmp_path / "net.pt2", to=["onnx"], meta=tmp_path / "meta.json")
    assert bundle.path == tmp_path / "net_bundle" and bundle.manifest.labels == list("abcde")
    (entry,) = bundle.written
    assert [t["name"] for t in entry.inputs] == ["image"] and [t["name"] for t in entry.outputs] == ["scores"]
    with pytest.raises(edgekit.EdgekitError, match="labels= and meta= are files"):
        edgekit.convert(net, X, to=["onnx"], labels=tmp_path / "labels.txt", out=tmp_path / "m")
    with pytest.raises(edgekit.EdgekitError, match="give out="):
        edgekit.convert(net, X, to=["onnx"])


SSM_RECIPE = """
name = "api_ssm"
[data]
source = "python_stdlib_bytes"
seq_len = 32
train_bytes = 4096
eval_bytes = 1024
[model]
family = "ssm"
head = "byte_lm"
d_model = 16
n_layers = 1
head_dim = 8
d_state = 4
chunk = 16
export_lengths = [32]
[train]
epochs = 1
batch_size = 16
"""


def test_convert_a_sequence_model_at_chosen_lengths(tmp_path):
    (tmp_path / "api_ssm.toml").write_text(SSM_RECIPE)
    checkpoint = edgekit.train(tmp_path / "api_ssm.toml", tmp_path / "run").checkpoint
    bundle = edgekit.convert(checkpoint, to=["onnx"], lengths=[8, 24])
    assert bundle.path == tmp_path / "run" / "bundle"
    assert [(e.graph, e.status) for e in bundle.written] == [
        ("prefill_L8", "verified"), ("prefill_L24", "verified"), ("step", "verified")]
    assert bundle.manifest.source["lengths"] == [8, 24]
    with pytest.raises(edgekit.EdgekitError, match="every length must be at least 2"):
        edgekit.convert(checkpoint, to=["onnx"], lengths=[1], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def tiny_adapters(tiny_run, tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("api_adapters")
    checkpoint = tiny_run[1] / "checkpoint"
    return [edgekit.adapt(checkpoint, domain=d, out=root / d, steps=5, examples=20)
            for d in ("digits_inverted_rotated", "digits_mirrored_noisy")]


def test_adapt_returns_the_folder_and_its_record(tiny_adapters):
    first = tiny_adapters[0]
    assert isinstance(first, edgekit.Adapted) and (first.path / "adapter.json").is_file()
    assert first.meta["domain"] == first.meta["name"] == "digits_inverted_rotated" and first.meta["steps"] == 5
    assert os.fspath(first) == str(first.path)  # path-like


def test_convert_merges_one_adapter_and_records_it(tiny_run, tiny_adapters):
    bundle = edgekit.convert(tiny_run[1] / "checkpoint", to=["onnx"], adapter=tiny_adapters[0])
    assert bundle.path == tiny_run[1] / "bundle_api_tiny_digits_inverted_rotated"
    assert [e.file for e in bundle.written] == ["api_tiny_digits_inverted_rotated_fp32.onnx"]
    assert bundle.written[0].status == "verified" and "digits_inverted_rotated test split" in bundle.verified_on
    merged = edgekit.Bundle.load(bundle.path).manifest.source["merged_adapter"]
    assert merged["name"] == "digits_inverted_rotated" and merged["sha256"]


def test_convert_packages_base_and_adapters_in_one_artifact(tiny_run, tiny_adapters, tmp_path):
    bundle = edgekit.convert(tiny_run[1] / "checkpoint", to=["tflite"], adapters=tiny_adapters, out=tmp_path / "a")
    (entry,) = bundle.written
    assert entry.status == "verified", entry.error
    assert [v["name"] for v in entry.variants] == ["base", "digits_inverted_rotated", "digits_mirrored_noisy"]
    assert [a["name"] for a in bundle.manifest.adapters] == ["digits_inverted_rotated", "digits_mirrored_noisy"]
    assert entry.verification["size_ratio_vs_base"] > 0 and edgekit.ADAPTER_SIZE_GOAL > 1
    for kwargs, words in [({"quant": edgekit.QuantSpec.parse("int8", qat_epochs=1)}, "--qat does not apply"),
                          ({"npu": "qualcomm:SM8650"}, "--npu does not apply"),
                          ({"adapter": tiny_adapters[0]}, "not both")]:
        with pytest.raises(edgekit.EdgekitError, match=words):
            edgekit.convert(tiny_run[1] / "checkpoint", to=["tflite"], adapters=tiny_adapters, out=tmp_path / "x",
                            **kwargs)
    with pytest.raises(edgekit.EdgekitError, match="needs an edgekit checkpoint folder"):
        edgekit.convert(Net(), X, to=["tflite"], adapters=tiny_adapters, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_convert_compiles_the_tflite_artifact_for_an_npu(tiny_run, tmp_path, monkeypatch):
    """A registered NPU vendor's compiler runs on the verified .tflite; its output is recorded, not verified."""
    import shutil

    from edgekit.converters.tflite.npu import NPU_COMPILERS

    def compile_for(model, soc, out):
        return Path(shutil.copy(model, out / f"{model.stem}_acme_{soc}.tflite"))

    monkeypatch.setitem(NPU_COMPILERS._items, "acme", compile_for)
    checkpoint = tiny_run[1] / "checkpoint"
    with pytest.raises(edgekit.EdgekitError, match="add tflite to --to"):
        edgekit.convert(checkpoint, to=["onnx"], npu="acme:X1", out=tmp_path / "b")
    with pytest.raises(edgekit.EdgekitError, match="NPU vendor 'nobody'"):
        edgekit.convert(checkpoint, to=["tflite"], npu="nobody:X1", out=tmp_path / "b")
    bundle = edgekit.convert(checkpoint, to=["tflite"], npu="acme:X1", out=tmp_path / "b")
    tflite, compiled = bundle.written
    assert tflite.status == "verified" and compiled.compiled_for == "acme:X1" and compiled.status == "exported"
    assert compiled.file == "api_tiny_fp32_acme_X1.tflite" and (tmp_path / "b" / compiled.file).is_file()


def test_reference_is_the_data_convert_verifies_on():
    """edgekit.reference: an in-memory module gets seeded random inputs of its example shapes and PyTorch's outputs."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    ref = edgekit.reference(model, (torch.randn(1, 3, 4),))
    assert len(ref) > 1 and ref.inputs[0][0].shape == (1, 3, 4) and ref.labels is None
    with torch.no_grad():
        expected = model(torch.from_numpy(ref.inputs[1][0])).numpy()
    np.testing.assert_allclose(ref.outputs[1][0], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(edgekit.EdgekitError, match="no graph 'step'"):
        edgekit.reference(model, (torch.randn(1, 3, 4),), graph="step")
