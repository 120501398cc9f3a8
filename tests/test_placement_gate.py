"""The placement gate: ``--require ACCELERATOR [--min-coverage PCT]`` on convert, bench and a recipe's ``[export]``.

The per-format analyzers are tested in test_placement_coreml.py and test_placement_runtimes.py; here the gate
itself: it judges only artifacts whose format can target the accelerator, passes on full coverage, fails on
short or unknown coverage with one line naming the artifact and the first offending ops, and never passes on an
empty set."""

from __future__ import annotations

import dataclasses
import json

import pytest

from edgekit import Bundle, EdgekitError
from edgekit.artifact import ArtifactEntry
from edgekit.cli import main
from edgekit.pipeline import placement_gate
from edgekit.placement import OpPlacement, Placement, PlacementGateFailed, Where, check_required, placement_cell
from edgekit.recipe import ExportSpec, load_recipe


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def entry_with(file: str, **reports: Placement) -> ArtifactEntry:
    return ArtifactEntry("tflite", "fp32", "verified", file=file,
                         placement={acc: r.to_dict() for acc, r in reports.items()})


def ops(*wheres: Where) -> list[OpPlacement]:
    return [OpPlacement(f"OP{i}", f"n{i}", w, reason="" if w != Where.OFF else "no kernel", fix="fix it",
                        flops=10.0) for i, w in enumerate(wheres)]


def test_coverage_islands_and_offenders_are_counted():
    p = Placement("xnnpack", "test", ops(Where.ON, Where.OFF, Where.PENALTY, Where.ON, Where.OFF, Where.OFF))
    assert p.coverage == pytest.approx(0.5) and p.flops_coverage == pytest.approx(0.5)
    assert p.islands == 2  # ON | OFF | PENALTY ON | OFF OFF
    first = p.offenders()[0]
    assert first["count"] == 1 and first["first"] in {"n1", "n4", "n5"}
    assert placement_cell({"xnnpack": p.to_dict()}) == "xnnpack 50% (2 islands)"


def test_unknown_placement_has_no_coverage():
    p = Placement("npu", "QNN delegate log", not_run="needs a phone")
    assert p.coverage is None and p.flops_coverage is None and p.summary() == "npu not run"
    empty = Placement("ane", "lint")  # no ops at all is not 100%
    assert empty.coverage is None


def test_gate_passes_full_coverage_and_names_the_first_offender():
    full = entry_with("a.tflite", xnnpack=Placement("xnnpack", "test", ops(Where.ON, Where.PENALTY)))
    short = entry_with("b.tflite", xnnpack=Placement("xnnpack", "test", ops(Where.ON, Where.OFF, Where.ON)))
    assert check_required([full], "xnnpack") == ["a.tflite: 100.0% on xnnpack (test)"]
    with pytest.raises(PlacementGateFailed, match=r"b\.tflite: 66\.7% of ops on xnnpack < 100%.*OP1 at 'n1'"):
        check_required([full, short], "xnnpack")
    assert check_required([short], "xnnpack", min_coverage=0.6)  # 66.7% ≥ 60%


def test_gate_fails_on_unknown_coverage_and_on_nothing_to_judge():
    unknown = entry_with("c.tflite", npu=Placement("npu", "QNN delegate log", not_run="needs a phone"))
    with pytest.raises(PlacementGateFailed, match="c.tflite: coverage unknown \\(needs a phone\\)"):
        check_required([unknown], "npu")
    with pytest.raises(PlacementGateFailed, match="no artifact written here can target ane"):
        check_required([unknown], "ane")
    failed = dataclasses.replace(unknown, file=None)  # a failed artifact is not judged
    with pytest.raises(PlacementGateFailed, match="no artifact"):
        check_required([failed], "npu")
    with pytest.raises(EdgekitError, match="choose one of ane, gpu, npu, xnnpack"):
        check_required([unknown], "tpu")


def test_default_bundle_records_placement_per_format(bundle):
    manifest = Bundle.load(bundle).manifest
    by_format = {e.format: e.placement for e in manifest.artifacts if e.file}
    assert set(by_format["tflite"]) == {"xnnpack", "gpu", "npu"}
    assert by_format["tflite"]["xnnpack"]["coverage"] == 1.0  # a conv net: every op on XNNPACK
    assert by_format["tflite"]["npu"]["not_run"]  # needs a phone
    assert by_format["onnx"]["xnnpack"]["not_run"]  # this wheel has no XNNPACK EP
    assert "ane" in by_format["coreml"]


def test_recipe_gate(bundle):
    manifest = Bundle.load(bundle).manifest
    recipe = load_recipe("cnn_digits")
    tflite_only = dataclasses.replace(manifest, artifacts=[e for e in manifest.artifacts if e.format == "tflite"])
    gated = dataclasses.replace(recipe, export=dataclasses.replace(recipe.export, require="xnnpack"))
    assert placement_gate(tflite_only, gated)["passed"] is True
    failed = placement_gate(manifest, gated)  # the ONNX artifact's XNNPACK coverage cannot be measured here
    assert failed["passed"] is False and "onnx: coverage unknown" in failed["message"]
    assert placement_gate(manifest, recipe) is None
    with pytest.raises(EdgekitError, match=r"\[export\] require = 'tpu'"):
        ExportSpec(require="tpu")


def test_convert_require_cli(capsys, checkpoint, tmp_path):
    code, _, err = run_cli(capsys, "convert", str(checkpoint), "--to", "tflite", "--out", str(tmp_path / "ok"),
                           "--require", "xnnpack")
    assert code == 0, err
    assert "placement: cnn_digits_fp32.tflite: 100.0% on xnnpack" in err
    code, _, err = run_cli(capsys, "convert", str(checkpoint), "--to", "tflite", "--out", str(tmp_path / "ane"),
                           "--require", "ane")
    assert code == 1 and "no artifact written here can target ane" in err
    assert (tmp_path / "ane" / "cnn_digits_fp32.tflite").is_file()  # the gate decides the exit code, keeps files


def test_bench_require_cli(capsys, bundle):
    code, out, err = run_cli(capsys, "bench", str(bundle), "--runs", "2", "--warmup", "0", "--require", "xnnpack",
                             "--json")
    assert code == 1
    assert "coverage unknown" in err and "onnx" in err
    rows = json.loads(out)
    assert any(r["placement"].startswith("xnnpack 100%") for r in rows if r["format"] == "tflite")
    code, _, err = run_cli(capsys, "bench", str(bundle), "--require", "xnnpack", "--min-coverage", "101")
    assert code == 1 and "--min-coverage" in err


@pytest.mark.parametrize("damaged", ["not a dict", {"coverage": "all"}, {"coverage": 7.0, "offenders": []},
                                     {"coverage": 0.5, "offenders": "none"}, {"coverage": 0.5, "offenders": [{"op": 1}]}])
def test_a_damaged_recorded_placement_is_an_error_not_a_crash(damaged):
    entry = ArtifactEntry("tflite", "fp32", "verified", file="m.tflite", placement={"xnnpack": damaged})
    with pytest.raises(PlacementGateFailed, match="m.tflite: its recorded placement is damaged"):
        check_required([entry], "xnnpack")
    assert placement_cell({"xnnpack": damaged}) in ("", "xnnpack 50%")  # the table shows what it can, never crashes
