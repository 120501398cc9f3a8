"""App code generated from a bundle (edgekit/appcode): every generated Swift / Kotlin file is checked against the
manifest (names, shapes, dtypes, labels, preprocessing constants, int8 scale/zero-point, tolerance), with a
tokenizer-level syntax check (no ``swiftc`` / ``kotlinc`` here; device_tests/test_coreml_macos.py compiles the
Swift on macOS), and the exported golden arrays are replayed through ONNX Runtime the way the Kotlin self-test
does, passing at the recorded criteria and failing when the outputs are perturbed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgekit.appcode import LANGUAGES, app_code
from edgekit.appcode.common import app_artifacts, syntax_problem
from edgekit.appcode.kotlin import generate as kotlin_files
from edgekit.appcode.swift import generate as swift_files
from edgekit.artifact import ArtifactEntry, Manifest, load_manifest
from edgekit.cli import main
from edgekit.errors import EdgekitError


def _const(text: str, name: str) -> str:
    """The literal assigned to ``name`` on its declaration line (Swift ``let`` or Kotlin ``val``)."""
    found = re.search(rf"(?:let|val) {name}(?:: [^=]+)? = (.+)$", text, re.M)
    assert found, f"{name} is not declared"
    return found.group(1).strip()


def _value(literal: str):
    """A Swift or Kotlin literal of numbers/strings/lists as Python (listOf → list, 1.0f → 1.0)."""
    text = re.sub(r"(?:listOf|floatArrayOf)(?:<\w+>)?\(", "[", literal).replace(")", "]").replace("\\$", "$")
    return json.loads(re.sub(r"(\d)f\b", r"\1", text))


def _manifest_values(manifest: Manifest, entry: ArtifactEntry) -> dict:
    pre = manifest.preprocessing
    return {"names": [t["name"] for t in entry.inputs], "shapes": [t["shape"] for t in entry.inputs],
            "dtypes": [t["dtype"] for t in entry.inputs], "out_names": [t["name"] for t in entry.outputs],
            "out_shapes": [t["shape"] for t in entry.outputs], "labels": manifest.labels,
            "mean": pre["mean"], "std": pre["std"], "scale": pre["scale"], "size": pre["size"],
            "max_abs": [o["allowed"]["max_abs_diff"] for o in entry.verification["outputs"]]}


SWIFT = {"names": "inputNames", "shapes": "inputShapes", "dtypes": "inputDTypes", "out_names": "outputNames",
         "out_shapes": "outputShapes", "labels": "labels", "mean": "mean", "std": "std", "scale": "scale", "size": "size"}
KOTLIN = {"names": "INPUT_NAMES", "shapes": "INPUT_SHAPES", "dtypes": "INPUT_DTYPES", "out_names": "OUTPUT_NAMES",
          "out_shapes": "OUTPUT_SHAPES", "labels": "LABELS", "mean": "MEAN", "std": "STD", "scale": "SCALE",
          "size": "SIZE"}


def test_convert_writes_app_code_for_every_verified_artifact(bundle: Path) -> None:
    manifest = load_manifest(bundle)
    document = manifest.documents["app_code"]
    assert "error" not in document and document["files"]
    for name in document["files"]:
        assert (bundle / name).is_file(), name
    wrappers = {Path(f).stem for f in document["files"] if f.endswith((".swift", ".kt"))}
    verified = [e for e in manifest.artifacts if e.status == "verified" and e.file]
    assert {e.format for e in verified} >= {"onnx", "tflite", "coreml"}
    for entry in verified:
        expected = "".join(w.capitalize() for w in re.split(r"[^0-9A-Za-z]+", f"{manifest.name}_{entry.graph}_"
                                                             f"{entry.precision}_{entry.format}") if w)
        assert expected in wrappers, f"no wrapper for {entry.file}"


def test_generated_constants_are_the_manifests(bundle: Path) -> None:
    manifest = load_manifest(bundle)
    checked = 0
    for entry in [e for e in manifest.artifacts if e.status == "verified" and e.file]:
        lang, keys = ("swift", SWIFT) if entry.format == "coreml" else ("kotlin", KOTLIN)
        cls = app_artifacts(manifest, (entry.format,))[0].class_name
        text = (bundle / "app" / lang / f"{cls}.{'swift' if lang == 'swift' else 'kt'}").read_text()
        want = _manifest_values(manifest, entry)
        for key, const in keys.items():
            got = _value(_const(text, const))
            assert got == pytest.approx(want[key]) if key in ("mean", "std", "scale") else got == want[key], (cls, key)
        for bound in want["max_abs"]:  # the tolerance the artifact was verified with
            assert bound is not None and repr(bound) in text, (cls, bound)
        assert f'"{entry.file}"' in text
        assert syntax_problem(text) is None, (cls, syntax_problem(text))
        checked += 1
    assert checked >= 3
    assert syntax_problem((bundle / "app" / "swift" / "EdgekitGolden.swift").read_text()) is None
    assert syntax_problem((bundle / "app" / "kotlin" / "EdgekitGolden.kt").read_text()) is None


def test_syntax_check_finds_what_is_wrong() -> None:
    assert syntax_problem('let a = [1, 2]\nfunc f() { print("}") } // )') is None
    assert "unbalanced" in syntax_problem("func f() { let a = [1, 2) }")
    assert "never closed" in syntax_problem("class A {\n  fun f() {\n}")
    assert "string" in syntax_problem('val s = "abc\nval t = 1')
    assert "template" in syntax_problem("val x = %%{missing}")


def _kotlin_criteria(text: str) -> list[tuple]:
    found = re.findall(r"EdgekitGolden\.Criteria\(([^()]*)\)", _const(text, "CRITERIA"))
    return [tuple(None if v.strip() == "null" else float(v.strip().rstrip("f")) for v in c.split(",")) for c in found]


def _failure(actual: np.ndarray, expected: np.ndarray, criteria: tuple, width: int) -> str | None:
    """The Kotlin ``EdgekitGolden.Criteria.failure`` in numpy (same formulas)."""
    max_abs, snr_db, top1 = criteria
    diff = np.abs(actual - expected)
    if max_abs is not None and not diff.max() <= max_abs:
        return "max"
    if snr_db is not None and not 10 * np.log10((expected.astype(np.float64) ** 2).sum() / max((diff ** 2).sum(), 1e-300)) >= snr_db:
        return "snr"
    rows_a, rows_e = actual.reshape(-1, width), expected.reshape(-1, width)
    if top1 is not None and (rows_a.argmax(1) == rows_e.argmax(1)).mean() < top1:
        return "top1"
    return None


def test_golden_export_replays_through_onnx_runtime_at_the_bundles_tolerance(bundle: Path) -> None:
    import onnxruntime as ort

    manifest = load_manifest(bundle)
    entry = next(e for e in manifest.artifacts if e.format == "onnx" and e.status == "verified")
    cls = app_artifacts(manifest, ("onnx",))[0].class_name
    text = (bundle / "app" / "kotlin" / f"{cls}.kt").read_text()
    folder = bundle / "app" / "golden"
    index = json.loads((folder / "golden.json").read_text())["arrays"]
    with np.load(bundle / "golden.npz", allow_pickle=False) as npz:
        for name, meta in index.items():  # raw little-endian arrays equal golden.npz's
            raw = np.fromfile(folder / meta["file"], dtype={"float32": "<f4", "int32": "<i4", "int64": "<i8"}[meta["dtype"]])
            np.testing.assert_array_equal(raw.reshape(meta["shape"]), npz[name])
    inputs = np.fromfile(folder / index["input_0"]["file"], "<f4").reshape(index["input_0"]["shape"])
    expected = np.fromfile(folder / index["output_0"]["file"], "<f4")
    assert len(inputs) >= 8 and np.abs(expected).max() > 0
    session = ort.InferenceSession(str(bundle / entry.file), providers=["CPUExecutionProvider"])
    actual = np.concatenate([session.run(None, {entry.inputs[0]["name"]: row[None]})[0].ravel() for row in inputs])
    criteria = _kotlin_criteria(text)[0]
    width = entry.outputs[0]["shape"][-1]
    assert criteria[0] is not None and _failure(actual, expected, criteria, width) is None
    shifted = actual + 10 * criteria[0]  # beyond the |Δ| bound: the self-test must catch it
    assert _failure(shifted, expected, criteria, width) == "max"
    swapped = actual.reshape(-1, width)[:, ::-1].ravel()  # other classes win: top-1 (or |Δ|) must fail
    assert _failure(swapped, expected, (None, None, criteria[2]), width) == "top1"


def _entry(fmt: str, **fields) -> ArtifactEntry:
    io = {"inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
          "outputs": [{"name": "y", "shape": [1, 3], "dtype": "float32"}]}
    verification = {"outputs": [{"allowed": {"max_abs_diff": None, "min_snr_db": 12.0, "min_top1_agreement": 0.98}}]}
    return ArtifactEntry(**({"format": fmt, "precision": "int8", "status": "verified", "file": f"m.{fmt}",
                             "verification": verification} | io | fields))


def _manifest(*entries: ArtifactEntry) -> Manifest:
    return Manifest(name="tiny-model", source={"kind": "module"}, labels=["cat", "dog$", 'say "hi"'],
                    preprocessing={"layout": "NC", "scale": 0.5, "mean": [0.1], "std": [0.2], "size": None},
                    tools={}, artifacts=list(entries))


def test_int8_io_adapters_and_states_reach_the_code() -> None:
    quant = {"inputs": [{"name": "x", "shape": [1, 4], "dtype": "int8", "quantization": {"scale": 0.031, "zero_point": -2}}],
             "outputs": [{"name": "y", "shape": [1, 3], "dtype": "int8", "quantization": {"scale": 0.0125, "zero_point": -128}}]}
    variants = [{"name": "base", "select": {"adapter_file": None}}, {"name": "legal", "select": {"adapter_file": "m.legal.onnx_adapter"}}]
    functions = [{"name": "base", "select": {"function": "base"}}, {"name": "legal", "select": {"function": "legal"}}]
    manifest = _manifest(_entry("tflite", **quant), _entry("onnx", variants=variants),
                         _entry("coreml", graph="step_stateful", states=[{"name": "kv"}], variants=functions))
    kt = kotlin_files(manifest, app_artifacts(manifest, ("tflite", "onnx")))
    sw = swift_files(manifest, app_artifacts(manifest, ("coreml",)))
    tflite, onnx = kt["TinyModelInt8Tflite.kt"], kt["TinyModelInt8Onnx.kt"]
    assert "Pair(0.031f, -2)" in _const(tflite, "INPUT_QUANT") and "Pair(0.0125f, -128)" in _const(tflite, "OUTPUT_QUANT")
    assert "writeInt8(EdgekitGolden.quantize" in tflite and "Accelerator.CPU" in tflite
    assert _const(onnx, "ADAPTERS") == 'mapOf("base" to null, "legal" to "m.legal.onnx_adapter")'
    assert "addActiveLoraAdapter" in onnx and _const(onnx, "INPUT_QUANT") == "listOf(null)"
    assert _value(_const(tflite, "LABELS")) == ["cat", "dog$", 'say "hi"']  # "$" escaped for Kotlin
    assert '"dog\\$"' in tflite
    swift = sw["TinyModelStepStatefulInt8Coreml.swift"]
    assert "makeState()" in swift and "using: state" in swift and "config.functionName = name" in swift
    assert _value(_const(swift, "functionNames")) == ["base", "legal"] and '"dog$"' in swift
    for text in [*kt.values(), *sw.values()]:
        assert syntax_problem(text) is None, syntax_problem(text)


def test_cli_writes_one_language_where_asked(bundle: Path, tmp_path: Path, capsys) -> None:
    assert main(["app-code", str(bundle), "--lang", "swift", "--out", str(tmp_path / "app")]) == 0
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["golden", "swift"]
    assert (tmp_path / "app" / "swift" / "EdgekitGolden.swift").is_file()
    assert str(tmp_path / "app" / "swift") in capsys.readouterr().out
    with pytest.raises(EdgekitError, match="not known"):
        app_code(bundle, ["java"], tmp_path / "x")
    assert set(LANGUAGES) == {"swift", "kotlin"}
