"""Verification never passes on a degenerate case: NaN/inf, no inputs, a state that collapsed, an artifact that
returns fewer outputs than PyTorch fail; a constant or near-zero reference is "not meaningful", never "passed"."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.verify import ReferenceData, compare, tolerance_for

PRECISIONS = ("fp32", "fp16", "int8", "int8-weight", "int4-weight")


def _reference(n: int = 8, seed: int = 0, classes: int = 10, state: bool = True) -> ReferenceData:
    rng = np.random.default_rng(seed)
    outputs = [[rng.normal(0, 3, (1, classes)).astype(np.float32)] + ([rng.normal(0, 1, (1, 4, 8)).astype(np.float32)]
               if state else []) for _ in range(n)]
    return ReferenceData([(np.zeros((1, 2), np.float32),) for _ in range(n)], outputs,
                         np.array([int(o[0].argmax()) for o in outputs]), f"test ({n})")


def _replay(reference: ReferenceData, edit=lambda k, x: x):
    """A runner that answers PyTorch's own outputs (edited per output index k) in order."""
    answers = iter(reference.outputs)
    return lambda _inputs: [edit(k, o.copy()) for k, o in enumerate(next(answers))]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_exact_outputs_pass(precision):
    ref = _reference()
    assert compare(_replay(ref), ref, tolerance_for(precision), "t")["status"] == "passed"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_all_non_finite_first_output_fails(precision, value):
    ref = _reference()
    result = compare(_replay(ref, lambda k, x: np.full_like(x, value) if k == 0 else x), ref,
                     tolerance_for(precision), "t")
    assert result["status"] == "failed"
    assert any("output 0" in p and "non-finite" in p for p in result["problems"])


@pytest.mark.parametrize("precision", ("fp32", "int8"))
def test_one_nan_in_a_state_output_fails(precision):
    ref = _reference()

    def poison(k, x):
        if k == 1:
            x.flat[3] = np.nan
        return x

    result = compare(_replay(ref, poison), ref, tolerance_for(precision), "t")
    assert result["status"] == "failed" and result["outputs"][1]["non_finite"] == len(ref)
    assert any("output 1" in p for p in result["problems"])


def test_a_state_that_collapsed_to_zero_fails_even_where_max_abs_diff_is_not_a_criterion():
    ref = _reference()
    assert tolerance_for("int8").rtol is None  # quantized rows do not bound max |Δ|
    result = compare(_replay(ref, lambda k, x: np.zeros_like(x) if k == 1 else x), ref, tolerance_for("int8"), "t")
    state = result["outputs"][1]
    assert result["status"] == "failed" and state["rel_error"] == pytest.approx(1.0)
    assert state["kind"] == "values" and state["snr_db"] == pytest.approx(0.0, abs=1e-9)
    assert state["failures"] == ["SNR 0.0 dB (required ≥ 12)"]


def test_non_finite_pytorch_reference_fails():
    ref = _reference()
    for out in ref.outputs:
        out[0][0, 0] = np.nan
    result = compare(_replay(ref), ref, tolerance_for("fp32"), "t")
    assert result["status"] == "failed" and "PyTorch's own output 0" in result["problems"][0]


def test_no_reference_inputs_fails():
    empty = ReferenceData([], [], None, "nothing")
    result = compare(lambda _: [], empty, tolerance_for("fp32"), "t")
    assert result["status"] == "failed" and "no reference inputs" in result["problems"][0]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("scale", [0.0, 1e-19, 1e-44])
def test_constant_or_near_zero_logits_cannot_pass_on_vacuous_agreement(scale, precision):
    ref = _reference(state=False)
    for out in ref.outputs:
        out[0] *= scale  # all zero, or the 1e-19 logits of a randomly initialised deep BatchNorm net
    result = compare(lambda _: [np.zeros((1, 10), np.float32)], ref, tolerance_for(precision), "t")
    assert result["status"].startswith("not meaningful: PyTorch's output is near zero everywhere")
    assert "accuracy" not in result  # arg-max of a degenerate output says nothing either


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_meaningful_state_beside_degenerate_logits_is_still_checked(precision):
    ref = _reference()
    for out in ref.outputs:
        out[0] *= 0.0
    zeros = compare(lambda _: [np.zeros((1, 10), np.float32), np.zeros((1, 4, 8), np.float32)], ref,
                    tolerance_for(precision), "t")
    assert zeros["status"] == "failed" and zeros["outputs"][0]["status"].startswith("not meaningful")
    assert zeros["outputs"][1]["status"] == "failed"
    assert compare(_replay(ref), ref, tolerance_for(precision), "t")["status"] == "passed"


def test_logits_flat_along_the_class_axis_are_judged_by_their_values():
    """Every row the same across classes (arg-max vacuous) but varying between samples: not top-1."""
    ref = _reference(state=False)
    for i, out in enumerate(ref.outputs):
        out[0][:] = float(i)
    result = compare(lambda _: [np.full((1, 10), 3.0, np.float32)], ref, tolerance_for("int8"), "t")
    assert result["outputs"][0]["kind"] == "values" and result["status"] == "failed"
    assert result["top1_agreement"] is None


def test_an_output_of_another_size_fails_without_crashing():
    ref = _reference()
    result = compare(_replay(ref, lambda k, x: x[..., :3] if k == 1 else x), ref, tolerance_for("fp32"), "t")
    assert result["status"] == "failed" and any("another number of values" in p for p in result["problems"])


def test_an_infinite_artifact_output_still_gives_valid_json():
    ref = _reference()
    result = compare(_replay(ref, lambda k, x: np.full_like(x, np.inf)), ref, tolerance_for("int8"), "t")
    assert result["status"] == "failed"
    json.dumps(result, allow_nan=False)


def test_fewer_outputs_than_pytorch_fails():
    ref = _reference()
    result = compare(lambda _inputs, it=iter(ref.outputs): next(it)[:1], ref, tolerance_for("fp32"), "t")
    assert result["status"] == "failed" and any("fewer outputs" in p for p in result["problems"])


def test_verify_fails_a_bundle_whose_onnx_artifact_answers_nan(bundle, tmp_path, capsys):
    """End to end: an ONNX artifact rewritten to multiply its logits by NaN (manifest sha256 updated, as an
    attacker or a broken tool would) is ❌ in `edgekit verify`, not "max |Δ| 0"."""
    import onnx
    from onnx import helper, numpy_helper

    from edgekit.io import sha256_path

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    model = onnx.load(copy / entry["file"])
    out = model.graph.output[0].name
    for node in model.graph.node:  # the producer of the output now writes an inner name
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "poison"))
    model.graph.node.append(helper.make_node("Mul", [f"{out}_raw", "poison"], [out]))
    onnx.save(model, copy / entry["file"])
    entry["sha256"] = sha256_path(copy / entry["file"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(copy), "--json"]) == 1
    results = json.loads(capsys.readouterr().out)["results"]
    row = next(r for r in results if r["file"] == entry["file"])
    assert row["status"] == "failed" and "non-finite" in " ".join(row["verification"]["problems"])
