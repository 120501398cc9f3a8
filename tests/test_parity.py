"""Parity rules: scale-aware |Δ| and SNR per output, each output judged by its kind (classifier logits by
top-1, next-token logits by top-1 or KL, other outputs by their values), degenerate references, --tolerance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit.quant.spec import QuantSpec
from edgekit.verify import ReferenceData, compare, reference_from_model, tolerance_for
from edgekit.verify.parity import failure_text, output_kind
from edgekit.verify.tolerances import (ALL_OUTPUTS, OutputTolerance, Tolerance, check_output_names,
                                       parse_tolerances, recorded_tolerance)

FLOAT_IN = (np.zeros((1, 2), np.float32),)
TOKENS_IN = (np.zeros((1, 16), np.int64),)


def _reference(*outputs: np.ndarray, names: tuple[str, ...] = (), inputs=FLOAT_IN, labels=None) -> ReferenceData:
    """Samples along axis 0 of each output array; every sample gets ``inputs``."""
    n = len(outputs[0])
    return ReferenceData([inputs] * n, [[o[i] for o in outputs] for i in range(n)], labels, f"test ({n})", names)


def _replay(*outputs: np.ndarray):
    """A runner answering the given arrays (samples along axis 0) in order."""
    samples = iter(range(len(outputs[0])))

    def run(_inputs):
        i = next(samples)
        return [o[i] for o in outputs]
    return run


def _flip_rows(logits: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """The logits with the top class of ``share`` of the samples moved to another class."""
    out, rng = logits.copy(), np.random.default_rng(seed)
    for i in rng.choice(len(out), int(round(share * len(out))), replace=False):
        row = out[i].reshape(-1)
        top = row.argmax()
        row[top], row[(top + 1) % row.size] = row[(top + 1) % row.size], row[top] + 0.5
    return out


def _logits(n: int = 200, classes: int = 10, scale: float = 3.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, scale, (n, 1, classes))).astype(np.float32)


def test_a_large_valued_output_passes_fp32_at_a_relative_error_of_4e_7_and_records_its_snr():
    """Pixel boxes of 175–523 off by 2e-4 (what the issue saw rejected under the absolute 1e-4)."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(175, 523, (50, 1, 4)).astype(np.float64)
    near = boxes + rng.choice([-2e-4, 2e-4], boxes.shape)
    result = compare(_replay(near), _reference(boxes, names=("boxes",)), tolerance_for("fp32"), "t")
    (out,) = result["outputs"]
    assert result["status"] == "passed" and out["kind"] == "values"
    assert out["max_abs_diff"] == pytest.approx(2e-4) and out["scale"] == pytest.approx(boxes.max())
    assert out["allowed"]["max_abs_diff"] == pytest.approx(1e-7 + 1e-4 * boxes.max())
    assert 120 < out["snr_db"] < 135 and result["snr_db"] == out["snr_db"]  # 10·log10(Σref²/ΣΔ²) ≈ 127
    wrong = boxes * (1 + 1e-3)  # a conversion off by 1e-3 of the scale (a tanh-approximated GELU, say) fails
    result = compare(_replay(wrong), _reference(boxes, names=("boxes",)), tolerance_for("fp32"), "t")
    assert result["status"] == "failed" and "max |Δ|" in result["outputs"][0]["failures"][0]


@pytest.mark.parametrize("precision, error, passes", [
    ("fp32", 1e-6, True), ("fp32", 1e-3, False), ("fp16", 5e-3, True), ("fp16", 5e-2, False)])
def test_logits_of_order_one_to_ten_are_judged_relative_to_their_scale(precision, error, passes):
    logits = _logits(scale=3.0)
    noise = np.random.default_rng(1).choice([-1.0, 1.0], logits.shape) * error * np.abs(logits).max()
    result = compare(_replay(logits + noise), _reference(logits), tolerance_for(precision), "t")
    assert (result["status"] == "passed") is passes, result["outputs"][0]
    assert result["outputs"][0]["kind"] == "logits" and result["top1_agreement"] is not None


@pytest.mark.parametrize("scale", [0.0, 1e-19, 1e-44])
def test_a_near_zero_reference_is_not_meaningful_never_passed(scale):
    """Random-initialised MobileNetV2 logits of 1e-19…1e-44: a zeros artifact would 'pass' |Δ| ≤ 1e-4."""
    logits = _logits() * scale
    result = compare(_replay(np.zeros_like(logits)), _reference(logits), tolerance_for("fp32"), "t")
    assert result["status"].startswith("not meaningful: ") and "near zero" in result["status"]
    assert result["outputs"][0]["status"].startswith("not meaningful")


def test_a_constant_reference_is_not_meaningful():
    constant = np.full((20, 1, 3, 4), 7.25, np.float32)
    result = compare(_replay(constant.copy()), _reference(constant), tolerance_for("int8"), "t")
    assert result["status"].startswith("not meaningful: ") and "same value (7.25)" in result["status"]


def test_a_degenerate_output_among_meaningful_ones_is_skipped_and_listed():
    logits, zeros = _logits(), np.zeros((200, 1, 5), np.float32)
    ref = _reference(logits, zeros, names=("logits", "aux"))
    result = compare(_replay(logits, zeros + 1.0), ref, tolerance_for("fp32"), "t")  # aux is off, but says nothing
    assert result["status"] == "passed"
    assert [o["status"][:14] for o in result["outputs"]] == ["passed", "not meaningful"]
    broken = compare(_replay(logits * 0, zeros), ref, tolerance_for("fp32"), "t")
    assert broken["status"] == "failed"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int8-weight", "int4-weight"])
@pytest.mark.parametrize("kind", ["logits", "values", "tokens"])
def test_an_artifact_that_outputs_zeros_fails_against_a_meaningful_reference(precision, kind):
    if kind == "tokens":  # a near-uniform untrained LM: zeros (a uniform guess) are within 0.05 bits of it
        ref = _reference(_logits(40, 64, scale=0.2).reshape(40, 1, 1, 64).repeat(4, 2), inputs=TOKENS_IN)
    else:
        ref = _reference(_logits(), names=("logits" if kind == "logits" else "embedding",))
    expected = np.stack([o[0] for o in ref.outputs])
    result = compare(_replay(np.zeros_like(expected)), ref, tolerance_for(precision), "t")
    assert result["outputs"][0]["kind"] == kind and result["status"] == "failed", result["outputs"][0]


def test_an_unlabelled_int8_classifier_at_90_percent_top1_fails_kl_does_not_rescue_it():
    logits = _logits()
    logits[..., :2] = logits.max() + np.array([1.0, 1.01], np.float32)  # two near-tied favourites per sample
    swapped = logits.copy()
    swapped[:20, :, :2] = swapped[:20, :, 1::-1]  # 10% of the arg-maxes move to the near-tied class
    result = compare(_replay(swapped), _reference(logits), tolerance_for("int8"), "t")
    assert result["top1_agreement"] == pytest.approx(0.90) and result["mean_kl_bits"] < 1e-4
    assert result["status"] == "failed"
    assert "top-1 agreement 90.00% (required 98.00%)" in failure_text("onnx", result)
    one_percent = compare(_replay(_flip_rows(logits, 0.01)), _reference(logits), tolerance_for("int8"), "t")
    assert one_percent["status"] == "passed"


def test_a_labelled_classifier_is_judged_by_its_accuracy_drop_too():
    logits = _logits()
    labels = logits.reshape(200, -1).argmax(-1)  # PyTorch is right on every sample
    flipped = _flip_rows(logits, 0.015)  # 98.5% agreement: top-1 passes, but 1.5 points of accuracy are lost
    result = compare(_replay(flipped), _reference(logits, labels=labels), tolerance_for("int8"), "t")
    assert result["accuracy"] == pytest.approx(0.985) and result["accuracy_drop"] == pytest.approx(0.015)
    assert result["status"] == "failed" and "accuracy drop 1.50 points (allowed 1.00)" in failure_text("x", result)
    budget = tolerance_for(QuantSpec.parse("int8", budget_points=2))
    assert compare(_replay(flipped), _reference(logits, labels=labels), budget, "t")["status"] == "passed"


def test_next_token_logits_with_near_tie_flips_pass_int8_on_a_small_kl_and_fail_on_a_large_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (30, 1, 8, 256)).astype(np.float32)  # (1, T, V) of integer tokens
    logits[..., :2] = logits.max() + np.array([1.0, 1.0001], np.float32)  # two near-tied favourites per position
    nudged = logits + rng.normal(0, 1e-3, logits.shape).astype(np.float32)  # arg-max is a coin toss
    ref = _reference(logits, inputs=TOKENS_IN)
    result = compare(_replay(nudged), ref, tolerance_for("int8"), "t")
    assert result["outputs"][0]["kind"] == "tokens"
    assert result["top1_agreement"] < 0.98 and result["mean_kl_bits"] < 1e-4 and result["status"] == "passed"
    wrong = rng.normal(0, 2, logits.shape).astype(np.float32)
    result = compare(_replay(wrong), ref, tolerance_for("int8"), "t")
    assert result["mean_kl_bits"] > 0.05 and result["status"] == "failed"
    assert "mean KL" in failure_text("tflite", result)
    # the same logits from float inputs are not a language model's: no KL escape
    values = compare(_replay(nudged), _reference(logits), tolerance_for("int8"), "t")
    assert values["outputs"][0]["kind"] == "values" and "mean_kl_bits" not in values["outputs"][0]


def test_top1_agreement_counts_every_position_of_sequence_logits():
    logits = np.random.default_rng(0).normal(size=(2, 1, 4, 8)).astype(np.float32) * 3  # 2 samples × 4 × 8
    flipped = logits.copy()
    flipped[0, 0, 1] = -flipped[0, 0, 1]  # one position's distribution mirrored: its arg-max moves
    result = compare(_replay(flipped), _reference(logits, inputs=TOKENS_IN), tolerance_for("int8"), "t")
    assert result["top1_agreement"] == 7 / 8  # not 1/2 (one arg-max over the whole (L × classes) array)


@pytest.mark.parametrize("name, shape, token_input, kind", [
    ("logits", (1, 10), "none", "logits"), ("logits", (1, 3), "sequence", "logits"),  # BERT classifier
    ("logits", (1, 256), "single", "tokens"),  # a byte LM's step: one token in, next-token logits out
    ("logits", (1, 16, 128), "sequence", "tokens"), ("logits", (1, 16, 128), "none", "values"),
    ("pred_boxes", (1, 4), "none", "values"), ("last_hidden_state", (1, 32), "none", "values"),
    ("pool_mean_out", (1, 8), "single", "values"), ("output", (1,), "none", "values"),
    ("scores", (1, 1), "none", "values"),
])
def test_output_kind_follows_shape_name_and_token_inputs(name, shape, token_input, kind):
    assert output_kind(name, shape, token_input) == kind


def test_outputs_after_the_first_of_an_unnamed_model_are_values():
    """A step graph's golden file has no names: its states (1, C, K) are not next-token logits."""
    assert output_kind("output_1", (1, 64, 4), "single", named=False, index=1) == "values"
    assert output_kind("output_1", (1, 64, 4), "single", named=True, index=1) == "tokens"


def test_results_are_json_with_null_for_what_has_no_finite_value():
    logits = _logits(20)
    result = compare(_replay(logits.copy()), _reference(logits), tolerance_for("fp32"), "t")
    assert result["status"] == "passed" and result["snr_db"] is None and result["outputs"][0]["snr_db"] is None
    json.dumps(result, allow_nan=False)
    broken = logits.copy()
    broken[0, 0, 0] = -np.inf  # the softmax of the artifact has a zero: KL is infinite
    result = compare(_replay(broken), _reference(logits), tolerance_for("int8"), "t")
    assert result["status"] == "failed" and result["mean_kl_bits"] is None
    json.dumps(result, allow_nan=False)


# --- --tolerance ------------------------------------------------------------------------------------

def test_parse_tolerances_reads_repeated_flags_per_output_and_for_all():
    got = parse_tolerances(["boxes:rtol=1e-3,atol=0.5", "rtol=1e-4", "scores:top1=0.9,kind=logits", "boxes:snr=30"])
    assert got == {"boxes": OutputTolerance(rtol=1e-3, atol=0.5, snr=30.0), ALL_OUTPUTS: OutputTolerance(rtol=1e-4),
                   "scores": OutputTolerance(top1=0.9, kind="logits")}


@pytest.mark.parametrize("text, message", [
    ("boxes:rtl=1e-3", "unknown key 'rtl'; allowed keys: rtol, atol, top1, snr, kind"),
    ("rtol=-1", "rtol = -1.0; expected a number ≥ 0"),
    ("rtol=lots", "rtol = 'lots'; expected a number ≥ 0"),
    ("atol=nan", "atol = nan; expected a number ≥ 0"),
    ("top1=1.5", "top1 = 1.5; expected a share in [0, 1]"),
    ("kind=boxes", "kind = 'boxes'; expected one of logits, tokens, values"),
    ("boxes:rtol", "'rtol' is not key=value"),
    ("boxes:", "no key=value given"),
    (":rtol=1", "the output name before ':' is empty"),
    ("rtol=1,rtol=2", "rtol is given twice for every output"),
])
def test_parse_tolerances_refuses_bad_input_in_one_line(text, message):
    with pytest.raises(EdgekitError) as info:
        parse_tolerances([text])
    assert message in str(info.value) and "\n" not in str(info.value) and f"--tolerance {text}" in str(info.value)


def test_a_key_repeated_across_flags_for_one_output_is_refused():
    with pytest.raises(EdgekitError, match="atol is given twice for output 'boxes'"):
        parse_tolerances(["boxes:atol=1", "boxes:atol=2"])


def test_check_output_names_lists_the_model_outputs():
    check_output_names(parse_tolerances(["boxes:rtol=1", "rtol=1"]), ["boxes", "scores"])
    with pytest.raises(EdgekitError, match="no output 'boxs'; its outputs are boxes, scores"):
        check_output_names(parse_tolerances(["boxs:rtol=1"]), ["boxes", "scores"])


def test_a_tolerance_override_is_applied_to_its_output_and_recorded():
    rng = np.random.default_rng(0)
    boxes, scores = rng.uniform(175, 523, (30, 1, 4)), _logits(30, 3)
    off = boxes + 0.3  # 6e-4 of the scale, SNR ≈ 62 dB: too far for fp32, within rtol=1e-3 and 60 dB
    ref = _reference(boxes, scores, names=("boxes", "scores"))
    failures = compare(_replay(off, scores), ref, tolerance_for("fp32"), "t")["outputs"][0]["failures"]
    assert [f.split(" ")[0] for f in failures] == ["max", "SNR"]
    tolerance = tolerance_for("fp32", parse_tolerances(["boxes:rtol=1e-3,snr=60"]))
    result = compare(_replay(off, scores), ref, tolerance, "t")
    assert result["status"] == "passed" and result["outputs"][0]["allowed"]["min_snr_db"] == 60.0
    assert result["tolerance"]["overrides"] == {"boxes": {"rtol": 1e-3, "snr": 60.0}}
    scores_off = compare(_replay(off, scores + 1e-3 * np.abs(scores).max()), ref, tolerance, "t")
    assert scores_off["status"] == "failed" and scores_off["outputs"][1]["failures"]  # scores kept the fp32 row
    assert result["outputs"][0]["allowed"]["max_abs_diff"] == pytest.approx(1e-7 + 1e-3 * boxes.max())
    assert result["outputs"][1]["allowed"]["max_abs_diff"] == pytest.approx(1e-7 + 1e-4 * np.abs(scores).max())
    assert Tolerance.from_dict(json.loads(json.dumps(result["tolerance"]))) == tolerance  # round trip


def test_a_named_override_on_reference_data_without_output_names_is_an_error_not_ignored():
    logits = _logits(20)
    with pytest.raises(EdgekitError, match="cannot apply --tolerance for logits: the reference data"):
        compare(_replay(logits), _reference(logits), tolerance_for("fp32", parse_tolerances(["logits:rtol=1"])), "t")
    loose = tolerance_for("fp32", parse_tolerances(["rtol=0.1,snr=20"]))
    every = compare(_replay(logits * 1.01), _reference(logits), loose, "t")
    assert every["status"] == "passed"  # an all-outputs override needs no names


def test_an_override_sets_the_kind_and_a_named_override_beats_the_all_outputs_one():
    tolerance = tolerance_for("int8", parse_tolerances(["top1=0.5", "scores:top1=0.8,kind=values,snr=20"]))
    assert tolerance.criteria("logits", "logits").min_top1_agreement == 0.5
    scores = tolerance.criteria("scores", tolerance.kind_for("scores"))
    assert (scores.kind, scores.min_top1_agreement, scores.min_snr_db) == ("values", None, 20.0)
    logits = _logits()
    ninety = _flip_rows(logits, 0.10)
    assert compare(_replay(ninety), _reference(logits, names=("logits",)), tolerance, "t")["status"] == "passed"


def test_recorded_overrides_are_not_applied_unless_given_again():
    written = tolerance_for("fp32", parse_tolerances(["boxes:rtol=0.5,kind=values"]))
    verification = {"tolerance": written.to_dict(), "quantization": {"spec": {"scheme": "fp32"}}}
    used, note = recorded_tolerance(verification, "fp32")
    assert used == tolerance_for("fp32") and used.overrides == {}
    assert "records tolerance overrides" in note and "--tolerance boxes:rtol=0.5,kind=values" in note
    assert "not applied" in note
    again = parse_tolerances(["boxes:rtol=0.5,kind=values"])
    used, note = recorded_tolerance(verification, "fp32", again)
    assert used == written and note == ""


def test_recorded_tolerance_never_loosens_and_reads_old_manifests():
    spec = {"quantization": {"spec": {"scheme": "int8"}}}
    looser = tolerance_for("int8").to_dict() | {"min_top1_agreement": 0.5, "rtol": 1.0, "max_mean_kl_bits": 9.0}
    used, note = recorded_tolerance(spec | {"tolerance": looser}, "int8")
    assert used == tolerance_for("int8") and "looser than the int8 tolerance" in note
    assert "rtol" in note and "min_top1_agreement" in note
    old = {"max_abs_diff": None, "min_top1_agreement": 0.98, "max_accuracy_drop": 0.01, "max_mean_kl_bits": 0.05,
           "max_rel_error": 0.25}  # written before scale-aware parity
    used, note = recorded_tolerance(spec | {"tolerance": old}, "int8")
    assert used == tolerance_for("int8") and "predates scale-aware parity" in note
    damaged = tolerance_for("int8").to_dict() | {"overrides": {"x": {"rtol": "wide"}}}
    used, note = recorded_tolerance(spec | {"tolerance": damaged}, "int8")
    assert used == tolerance_for("int8") and "recorded tolerance is damaged" in note and "rtol" in note


def test_reference_from_model_flattens_dict_outputs_in_order():
    class Boxes(torch.nn.Module):
        def forward(self, x):
            return {"boxes": 300 + x[:, :4], "scores": x[:, 4:] * 2}

    ref = reference_from_model(Boxes(), [(torch.ones(1, 7),), (torch.zeros(1, 7),)], None, "t",
                               output_names=("boxes", "scores"))
    assert [o.shape for o in ref.outputs[0]] == [(1, 4), (1, 3)] and ref.outputs[0][0][0, 0] == 301.0
    assert ref.names() == ("boxes", "scores") and ReferenceData([], [], None, "t").names() == ()
