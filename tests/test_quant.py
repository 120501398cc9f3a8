"""Quantization: QuantSpec, per-converter support, calibration checks, real int8 in ONNX/TFLite,
per-layer SQNR, mixed precision and Core ML weight compression."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.artifact import load_manifest
from edgekit.cli import main
from edgekit.converters import CONVERTERS, ModelSource
from edgekit.converters.tflite._compat import ops_details
from edgekit.errors import EdgekitError
from edgekit.models import create_model
from edgekit.quant import QuantSpec, Scheme


def tiny_source(tmp_path=None) -> ModelSource:
    torch.manual_seed(0)
    model = create_model("cnn", {"width": 0.25, "blocks": [[16, 2]], "num_classes": 3}).eval()
    return ModelSource("tiny", model, model.example_inputs(), ("image",), ("logits",), "0" * 64, "tiny", "pt2")


def test_spec_parse_and_what_each_format_supports():
    assert QuantSpec.parse("int8").scheme is Scheme.INT8_STATIC and QuantSpec.parse("int8").needs_calibration
    pal = QuantSpec.parse("palettize3")
    assert (pal.scheme, pal.bits, pal.tag) == (Scheme.PALETTIZE, 3, "palettize3")
    assert QuantSpec.parse("int4-weight").granularity.value == "per-block"
    with pytest.raises(EdgekitError, match="unknown quantization 'int7'.*int8-dynamic"):
        QuantSpec.parse("int7")
    with pytest.raises(EdgekitError, match="onnx converter does not support quantization 'int4-weight'.*fp32, int8"):
        CONVERTERS.get("onnx").check_precision("int4-weight")
    CONVERTERS.get("coreml").check_precision("palettize4")
    CONVERTERS.get("tflite").check_precision(QuantSpec.parse("int8"))
    with pytest.raises(EdgekitError, match="accuracy budget needs --quant int8"):
        QuantSpec.parse("int8-weight", budget_points=0.5)


def test_one_spec_holds_everything_validates_each_field_and_round_trips():
    spec = QuantSpec.parse("int8", calib_source=Path("calib.npz"), calib_samples=32, calib_method="minmax",
                           budget_points=2, op_types={"linear": None}, layers=(("stem.0", None),))
    assert spec.calib_source == "calib.npz" and spec.float_layers == ("stem.0",) and hash(spec)
    assert spec.keeps_float("head.1", "linear") and spec.keeps_float("stem.0", "conv2d")
    assert not spec.keeps_float("blocks.0.pointwise", "conv2d")
    saved = json.loads(json.dumps(spec.to_dict()))
    assert saved["op_types"] == {"linear": None} and saved["budget_points"] == 2 and saved["tag"] == "int8"
    assert QuantSpec.from_dict(saved) == spec
    assert QuantSpec.from_dict(QuantSpec.parse("palettize3").to_dict()).tag == "palettize3"
    for fields, message in [
        ({"qat_epochs": 1, "budget_points": 1.0}, "either an accuracy budget .* or QAT, not both"),
        ({"budget_points": 101}, "accuracy budget must be >= 0 and <= 100"),
        ({"op_types": {"relu": None}}, "op_types names 'relu'; op types: conv1d, conv2d, linear"),
        ({"layers": {"head.1": "int4"}}, r"layers\['head.1'\] = 'int4'; the only override is None"),
        ({"calib_method": "mse"}, "calibration method 'mse' is not one of: histogram, minmax"),
        ({"qat_epochs": -1}, "qat_epochs must be an integer >= 0"),
        ({"calib": "x.npy"}, "QuantSpec has no field 'calib'; fields: scheme, granularity"),
    ]:
        with pytest.raises(EdgekitError, match=message):
            QuantSpec.parse("int8", **fields)
    with pytest.raises(EdgekitError, match="QAT needs --quant int8 .*not fp16"):
        QuantSpec.parse("fp16", qat_epochs=1)
    with pytest.raises(EdgekitError, match="keeping op types or layers in float needs --quant int8"):
        QuantSpec.parse("int8-dynamic", layers={"head.1": None})
    for damaged, message in [({**saved, "budget_points": "2"}, "accuracy budget must be a number"),
                             ({**saved, "tag": "fp32"}, "tag 'fp32' does not match its fields"),
                             ({**saved, "extra": 1}, "unknown field 'extra'"), ([], "must be an object")]:
        with pytest.raises(EdgekitError, match=message):
            QuantSpec.from_dict(damaged)


def test_calibration_data_is_checked(tmp_path):
    from edgekit.quant.calib import calibration_for

    source = tiny_source()
    good = np.random.default_rng(0).normal(size=(6, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    assert len(calibration_for(source, 4, tmp_path / "good.npy")) == 4
    np.save(tmp_path / "shape.npy", good[:, :, :16])
    with pytest.raises(EdgekitError, match=r"shape \[1, 1, 16, 32\]; the model takes \[1, 1, 32, 32\]"):
        calibration_for(source, 4, tmp_path / "shape.npy")
    bad = good.copy()
    bad[2, 0, 5, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(EdgekitError, match="sample 2 contains NaN or inf"):
        calibration_for(source, 6, tmp_path / "nan.npy")
    np.savez(tmp_path / "nan.npz", image=bad)  # an .npz is keyed by the model's input names
    with pytest.raises(EdgekitError, match=r"nan.npz: image holds 1 NaN/inf values \(first at index \(2, 0, 5, 5\)\)"):
        calibration_for(source, 6, tmp_path / "nan.npz")
    np.savez(tmp_path / "good.npz", image=good)
    assert len(calibration_for(source, 4, tmp_path / "good.npz")) == 4
    with pytest.raises(EdgekitError, match="no recipe dataset"):
        calibration_for(source, 4)


def test_int8_cli_really_computes_in_integers(capsys, checkpoint, bundle, tmp_path):
    import onnx
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    out = tmp_path / "int8"
    code = main(["convert", str(checkpoint), "--to", "onnx,tflite,coreml", "--quant", "int8", "--calib-samples", "32",
                 "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    fp32 = {a.format: a.size_bytes for a in load_manifest(bundle).artifacts}
    for entry in result["artifacts"]:
        v = entry["verification"]
        assert entry["status"] == "verified" and entry["precision"] == "int8", entry["error"]
        # issue target 0.33x; the recipe CNN measures ONNX 0.29x, Core ML 0.30x, TFLite 0.30x (per-channel
        # zero-point vectors shared in the flatbuffer; written anew for every weight and bias it was 0.334x)
        assert entry["size_bytes"] <= 0.33 * fp32[entry["format"]], entry["format"]
        assert v["accuracy_drop"] <= 0.005 and v["top1_agreement"] >= 0.98 and v["inputs"] >= 200
        layers = v["quantization"]["layer_sqnr_db"]
        assert [r["layer"] for r in layers][:2] == ["stem.0", "blocks.0.depthwise"] and layers[-1]["layer"] == "output"
        assert all(r["quantized"] and r["sqnr_db"] > 10 for r in layers)
    coreml_entry = next(e for e in result["artifacts"] if e["format"] == "coreml")
    assert coreml_entry["verification"]["method"] == "mil-reference"  # int8 q/dq evaluated op by op
    assert coreml_entry["op_histogram"]["quantize"] >= 11 and coreml_entry["op_histogram"]["constexpr_affine_dequantize"] >= 11
    assert not (out / "cnn_digits_int8.mlpackage" / "executorch_debug_handle_mapping.json").exists()
    onnx_file, tflite_file = out / "cnn_digits_int8.onnx", out / "cnn_digits_int8.tflite"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] == 11 and ops["Conv"] == 0, ops  # every convolution runs in int8
    interp = Interpreter(model_path=str(tflite_file))
    tensors = interp.get_tensor_details()
    convs = [op for op in ops_details(interp) if "CONV" in op["op_name"]]
    assert len(convs) == 11
    assert all(tensors[op["inputs"][1]]["dtype"] == np.int8 and tensors[op["inputs"][0]]["dtype"] == np.int8
               for op in convs)
    tflite_entry = next(e for e in result["artifacts"] if e["format"] == "tflite")
    assert tflite_entry["inputs"][0]["dtype"] == "int8" and tflite_entry["inputs"][0]["quantization"]["scale"] > 0
    from edgekit.converters.tflite.export import read_metadata
    embedded = json.loads(read_metadata(tflite_file)["edgekit"])  # what an app reads from the file itself
    assert embedded["inputs"][0]["dtype"] == "int8" and embedded["outputs"][0]["quantization"]["scale"] > 0


def test_layer_report_and_mixed_precision_keep_layers_float():
    from edgekit.quant.mixed import EvalSet, search
    from edgekit.quant.pt2e import float_ops_left, prepare_quant
    from edgekit.quant.report import layer_report

    source = tiny_source()
    calib = [(torch.randn(1, 1, 32, 32),) for _ in range(8)]
    spec = QuantSpec.parse("int8", calib_method="minmax")
    quant = prepare_quant(source, spec, calib)
    layers = [r.layer for r in layer_report(quant, calib[:4])]
    assert layers == ["stem.0", "blocks.0.depthwise", "blocks.0.pointwise", "head.1", "output"]
    with pytest.raises(EdgekitError, match="float layer 'nope' is not a conv/linear layer"):
        prepare_quant(source, QuantSpec.parse("int8", layers={"nope": None}), calib)
    labels = tuple(int(source.module(*s).argmax()) for s in calib)
    # an impossible budget sends every layer back to float, most sensitive first, and says so
    result = search(source, spec, calib, EvalSet(tuple(calib), labels, "calib"), budget_points=-1.0, probe=4)
    assert list(result.float_layers) == list(result.sensitivity) and len(result.float_layers) == 4
    assert sorted(float_ops_left(result.quant.converted(False))) == sorted(result.float_layers)
    assert len(result.steps) == 5 and result.to_dict()["within_budget"] is False
    report = layer_report(result.quant, calib[:2])
    assert not any(r.quantized for r in report[:-1])


def test_an_op_type_override_keeps_float_and_the_plan_is_the_result():
    from edgekit.quant.plan import QuantPlan, plan_quantization
    from edgekit.quant.pt2e import float_ops_left

    source = tiny_source()
    calib = np.random.default_rng(0).normal(size=(8, 1, 32, 32)).astype(np.float32)
    spec = QuantSpec.parse("int8", calib_samples=8, op_types={"linear": None})
    plan = plan_quantization(source, spec, calib)
    assert isinstance(plan, QuantPlan) and plan.spec is spec and plan.calibration == "the calibration array (8)"
    assert float_ops_left(plan.prepared.converted(False)) == ["head.1"]  # the only linear layer
    assert [r.layer for r in plan.layers if not r.quantized] == ["head.1"]
    assert plan.summary()["spec"] == spec.to_dict()
    with pytest.raises(EdgekitError, match="calibration data given twice"):
        plan_quantization(source, QuantSpec.parse("int8", calib_source="x.npy"), calib)


def test_coreml_weight_compression(tmp_path):
    from edgekit.conversion import convert_model
    from edgekit.sources import reference_for

    torch.manual_seed(0)
    model = create_model("cnn", {"blocks": [[64, 2]], "num_classes": 3}).eval()  # ~3k weights: enough to compress
    source = ModelSource("small", model, model.example_inputs(), ("image",), ("logits",), "0" * 64, "small", "pt2")
    reference = reference_for(source)
    sizes = {}
    for scheme, op in (("fp32", "conv"), ("int8-weight", "constexpr_affine_dequantize"),
                       ("palettize4", "constexpr_lut_to_dense")):
        manifest = convert_model(source, ["coreml"], tmp_path, reference, quant=QuantSpec.parse(scheme))
        entry = next(a for a in manifest.artifacts if a.precision == scheme)
        # compressed weights are evaluated by the MIL reference against the quant tolerance row
        assert entry.status == "verified", entry.error
        assert entry.verification["method"] == "mil-reference"
        assert entry.op_histogram.get(op, 0) >= 3, entry.op_histogram
        sizes[scheme] = (tmp_path / entry.file / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size
    # the weights file (a tiny model's package is mostly program text, so compare what compression shrinks)
    assert sizes["int8-weight"] < 0.4 * sizes["fp32"] and sizes["palettize4"] < 0.3 * sizes["fp32"], sizes


def test_qat_fine_tunes_and_exports_to_every_format(capsys, checkpoint, tmp_path):
    code = main(["convert", str(checkpoint), "--quant", "int8", "--qat", "1", "--calib-samples", "16",
                 "--out", str(tmp_path / "qat"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {e["format"] for e in result["artifacts"]} == set(CONVERTERS.names())
    for entry in result["artifacts"]:
        assert entry["status"] == "verified", entry["error"]
        qat = entry["verification"]["quantization"]["qat"]
        assert qat["epochs"] == 1 and qat["samples_per_epoch"] > 0 and np.isfinite(qat["last_loss"])
        assert entry["verification"]["accuracy_drop"] <= 0.01


def test_tflite_flatbuffer_shares_identical_vectors(tmp_path):
    """pack_model writes each distinct numeric vector once; the model reads back field for field."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from edgekit.converters.tflite.flatbuffer import pack_model

    model = schema.ModelT()
    model.version, model.buffers, model.subgraphs = 3, [schema.BufferT(), schema.BufferT()], [schema.SubGraphT()]
    model.buffers[1].data = np.arange(40, dtype=np.uint8)
    model.subgraphs[0].tensors = []
    for index in range(6):
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.buffer = f"t{index}".encode(), np.array([64, 3, 3, 1], np.int32), 1
        tensor.quantization = schema.QuantizationParametersT()
        tensor.quantization.scale = np.full(64, 0.01 * (index + 1), np.float32)
        tensor.quantization.zeroPoint = np.zeros(64, np.int64)
        model.subgraphs[0].tensors.append(tensor)
    plain = flatbuffers.Builder(1024)
    plain.Finish(model.Pack(plain), file_identifier=b"TFL3")
    shared = pack_model(model, 1024)
    assert len(plain.Output()) - len(shared) >= 5 * 64 * 8  # five of the six zero-point vectors not repeated
    back = schema.ModelT.InitFromPackedBuf(bytearray(shared), 0)
    for a, b in zip(model.subgraphs[0].tensors, back.subgraphs[0].tensors):
        assert a.name == b.name and (a.shape == b.shape).all()
        assert (a.quantization.scale == b.quantization.scale).all() and not b.quantization.zeroPoint.any()
    assert (back.buffers[1].data == model.buffers[1].data).all()
    offset = schema.Model.GetRootAs(shared, 0).Buffers(1).DataAsNumpy().ctypes.data - np.frombuffer(shared, np.uint8).ctypes.data
    assert offset % 16 == 0  # constant data aligned as the LiteRT converter writes it


def test_int8_tflite_with_an_output_that_also_feeds_a_layer_through_dropout(tmp_path):
    """An eval-mode dropout between a graph output and the layer it feeds used to leave two int8
    quantizations of one tensor, which the LiteRT converter refuses (the SSM classifier's mean)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.quant.pt2e import export_graph, prepare_quant

    class MeanThenClassify(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj, self.drop, self.classifier = torch.nn.Linear(6, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean = self.proj(x).mean(1)
            return self.classifier(self.drop(mean)), mean

    torch.manual_seed(0)
    model = MeanThenClassify().eval()
    source = ModelSource("mean", model, (torch.randn(1, 10, 6),), ("x",), ("logits", "mean"), "0" * 64, "m", "pt2")
    assert "dropout" not in str(export_graph(source).graph)
    prepared = prepare_quant(source, QuantSpec.parse("int8"), [(torch.randn(1, 10, 6),) for _ in range(8)])
    path = tmp_path / "mean_int8.tflite"
    CONVERTERS.get("tflite").export(source, path, QuantSpec.parse("int8"), {}, prepared=prepared)
    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    assert len(interp.get_output_details()) == 2


def test_weight_only_int8_and_int4_in_onnx_and_tflite(capsys, checkpoint, bundle, tmp_path):
    """int8-weight (ONNX: DequantizeLinear of int8 initializers; TFLite: ai-edge-quantizer) and TFLite
    int4-weight: verified like any export, weights really stored in 8/4 bits."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    fp32 = {a.format: a.size_bytes for a in load_manifest(bundle).artifacts}
    for scheme, formats, ratio in (("int8-weight", "onnx,tflite", 0.31), ("int4-weight", "tflite", 0.22)):
        out = tmp_path / scheme
        code = main(["convert", str(checkpoint), "--to", formats, "--quant", scheme, "--out", str(out), "--json"])
        result = json.loads(capsys.readouterr().out)
        assert code == 0
        allowed_drop = {"int8-weight": 0.005, "int4-weight": 0.02}[scheme]  # int4: its tolerance row
        for entry in result["artifacts"]:
            v = entry["verification"]
            assert entry["status"] == "verified", (scheme, entry["format"], entry["error"])
            assert v["accuracy_drop"] <= allowed_drop, (scheme, entry["format"], v["accuracy_drop"], v["top1_agreement"])
            assert entry["size_bytes"] <= ratio * fp32[entry["format"]], (scheme, entry["format"], entry["size_bytes"])
    graph = onnx.load(str(tmp_path / "int8-weight" / "cnn_digits_int8-weight.onnx")).graph
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    assert conv_weights and conv_weights <= dequantized  # every conv weight comes from int8
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "int8-weight" / "cnn_digits_int8-weight.onnx")).metadata_props}
    assert json.loads(props["onnxruntime_session_config"]) == {"session.disable_quant_qdq": "1"}  # fold at load
    # int8: every conv/linear weight (11); int4: ai-edge-quantizer's recipe leaves the 5 small depthwise kernels float
    for scheme, dequantized_weights in (("int8-weight", 11), ("int4-weight", 6)):
        interp = Interpreter(model_path=str(tmp_path / scheme / f"cnn_digits_{scheme}.tflite"))
        ops = [op for op in ops_details(interp) if op["op_name"] == "DEQUANTIZE"]
        assert len(ops) >= dequantized_weights, scheme


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits CNN at half width trained for a few epochs: its recipe's data calibrates it and judges accuracy."""
    out = tmp_path_factory.mktemp("small")
    (out / "small.toml").write_text('extends = "cnn_digits"\nname = "small"\n[model]\nwidth = 0.5\n'
                                    '[train]\nepochs = 4\n')
    return edgekit.train(out / "small.toml", out / "run").checkpoint


def test_a_bundle_made_with_an_accuracy_budget_passes_verify_with_its_recorded_tolerance(capsys, small_checkpoint,
                                                                                          tmp_path):
    """`--accuracy-budget 2` verifies at conversion with a 2-point accuracy drop allowed; `edgekit verify`
    must re-check with that recorded tolerance, not rebuild int8's default 1-point row."""
    out = tmp_path / "budget"
    code = main(["convert", str(small_checkpoint), "--to", "onnx", "--quant", "int8", "--accuracy-budget", "2",
                 "--calib-samples", "32", "--out", str(out), "--json"])
    capsys.readouterr()
    assert code == 0
    (entry,) = load_manifest(out).artifacts
    assert entry.status == "verified" and entry.verification["tolerance"]["max_accuracy_drop"] == 0.02
    assert main(["verify", str(out), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["status"] == "passed"
    assert result["verification"]["tolerance"] == entry.verification["tolerance"]  # the recorded one, budget applied
    assert entry.verification["quantization"]["spec"]["budget_points"] == 2
    # a manifest cannot loosen the check beyond its recorded spec, and a damaged spec falls back to the default row
    recorded = entry.verification["tolerance"]
    for change, used, note in [
        ({"tolerance": recorded | {"min_top1_agreement": 0.0, "max_accuracy_drop": 1.0}}, recorded,
         "recorded tolerance is looser than the int8 tolerance (budget 2 points) allows"),
        ({"quantization": {"spec": {"scheme": "int8", "budget_points": "lots"}}}, recorded | {"max_accuracy_drop": 0.01},
         "recorded quantization spec is damaged (accuracy budget must be a number"),
    ]:
        raw = json.loads((out / "manifest.json").read_text())
        raw["artifacts"][0]["verification"] |= change
        (out / "manifest.json").write_text(json.dumps(raw))
        main(["verify", str(out), "--json"])  # passes or not by the artifact's accuracy drop; the check is what is used
        (result,) = json.loads(capsys.readouterr().out)["results"]
        assert result["verification"]["tolerance"] == used and note in result["reason"], result
