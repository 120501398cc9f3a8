"""App code generated from a bundle (edgekit/appcode): every generated Swift / Kotlin file is checked against the
manifest (names, shapes, dtypes, labels, preprocessing constants, int8 scale/zero-point, tolerance) and parsed by
the real Swift and Kotlin grammars (tree-sitter; no ``swiftc`` here: device_tests/test_coreml_macos.py compiles
the Swift on macOS); where ``kotlinc`` is installed the Kotlin is compiled against stubs that copy the public
signatures of LiteRT, ONNX Runtime Android, Android and org.json. The exported golden arrays are replayed through
ONNX Runtime the way the Kotlin self-test does, passing at the recorded criteria and failing when perturbed.
Writes: into a bundle under its lock with the manifest updated; never over a folder that is not app code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.appcode import LANGUAGES, app_code
from edgekit.appcode.common import APP_GOLDEN_BYTES, app_artifacts, export_golden
from edgekit.appcode.kotlin import generate as kotlin_files
from edgekit.appcode.swift import generate as swift_files
from edgekit.artifact import ArtifactEntry, Manifest, bundle_lock, load_manifest
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.verify.bundle import stray_files

GRAMMARS = {".swift": "tree_sitter_swift", ".kt": "tree_sitter_kotlin"}


def parse(text: str, suffix: str):
    """The syntax tree of ``text`` in the real grammar of ``suffix`` (.swift / .kt)."""
    ts = pytest.importorskip("tree_sitter", reason="tree-sitter is in the test extra: pip install -e '.[test]'")
    module = pytest.importorskip(GRAMMARS[suffix])
    return ts.Parser(ts.Language(module.language())).parse(text.encode())


def syntax_errors(text: str, suffix: str) -> list[str]:
    """Where the real grammar of ``suffix`` (.swift / .kt) finds an ERROR or MISSING node: ``line N: …``."""
    found, todo = [], [parse(text, suffix).root_node]
    while todo:
        node = todo.pop()
        if node.is_error or node.is_missing:
            what = f"missing {node.type!r}" if node.is_missing else f"cannot parse {node.text.decode()[:40]!r}"
            found.append(f"line {node.start_point[0] + 1}: {what}")
        elif node.has_error:
            todo += node.children
    return sorted(found, key=lambda f: int(f.split()[1].rstrip(":")))


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
        checked += 1
    assert checked >= 3


def test_every_generated_file_parses_with_the_real_grammars(bundle: Path) -> None:
    files = sorted((bundle / "app").glob("*/*.swift")) + sorted((bundle / "app").glob("*/*.kt"))
    assert {f.suffix for f in files} == {".swift", ".kt"} and len(files) >= 5
    for f in files:
        text = f.read_text()
        assert "%%" not in text and syntax_errors(text, f.suffix) == [], (f.name, syntax_errors(text, f.suffix))


def test_the_grammars_catch_a_damaged_file(bundle: Path) -> None:
    for f in [*(bundle / "app" / "swift").glob("*Coreml.swift"), *(bundle / "app" / "kotlin").glob("*Tflite.kt")]:
        text = f.read_text()
        brace = text.rindex("}")  # the class's closing brace, on the last line
        assert syntax_errors(text[:brace] + text[brace + 1:], f.suffix), f.name
        line = text[:brace].count("\n") + 1
        assert any(e.startswith(f"line {line}:") or "missing" in e for e in syntax_errors(text[:brace], f.suffix))
        quoted = text.index('"', text.index("modelFile" if f.suffix == ".swift" else "MODEL_FILE"))
        cut = text[:quoted + 1] + text[text.index("\n", quoted):]  # the string never closes
        errors = syntax_errors(cut, f.suffix)
        assert errors and int(errors[0].split()[1].rstrip(":")) <= text[:quoted].count("\n") + 2, (f.name, errors)


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
    meta = json.loads((folder / "golden.json").read_text())
    assert meta["rows"] == meta["source_rows"] == 16  # the digits CNN's golden file fits the app copy whole
    index = meta["arrays"]
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


def _synthetic_code() -> tuple[dict[str, str], dict[str, str]]:
    """Kotlin and Swift of a manifest with int8 I/O (LiteRT), adapter variants of each format (LiteRT
    signatures, .onnx_adapter files, Core ML functions) and a stateful Core ML step graph."""
    quant = {"inputs": [{"name": "x", "shape": [1, 4], "dtype": "int8", "quantization": {"scale": 0.031, "zero_point": -2}}],
             "outputs": [{"name": "y", "shape": [1, 3], "dtype": "int8", "quantization": {"scale": 0.0125, "zero_point": -128}}]}
    signatures = [{"name": n, "select": {"signature": n}} for n in ("base", "legal")]
    variants = [{"name": "base", "select": {"adapter_file": None}}, {"name": "legal", "select": {"adapter_file": "m.legal.onnx_adapter"}}]
    functions = [{"name": "base", "select": {"function": "base"}}, {"name": "legal", "select": {"function": "legal"}}]
    manifest = _manifest(_entry("tflite", variants=signatures, **quant), _entry("onnx", variants=variants),
                         _entry("coreml", graph="step_stateful", states=[{"name": "kv"}], variants=functions))
    android = app_artifacts(manifest, ("tflite", "onnx"))
    for a in android:
        a.golden_rows = {"": (3, 16), "legal": (3, 16)}
    return kotlin_files(manifest, android), swift_files(manifest, app_artifacts(manifest, ("coreml",)))


def test_int8_io_adapters_and_states_reach_the_code() -> None:
    kt, sw = _synthetic_code()
    tflite, onnx = kt["TinyModelInt8Tflite.kt"], kt["TinyModelInt8Onnx.kt"]
    assert "Pair(0.031f, -2)" in _const(tflite, "INPUT_QUANT") and "Pair(0.0125f, -128)" in _const(tflite, "OUTPUT_QUANT")
    assert "writeInt8(EdgekitGolden.quantize" in tflite and "Accelerator.CPU" in tflite
    assert _const(tflite, "SIGNATURES") == 'mapOf<String, String>("base" to "base", "legal" to "legal")'
    assert "model.run(inputBuffers, outputBuffers, signature)" in tflite and "createInputBuffers(signature)" in tflite
    assert _const(onnx, "ADAPTERS") == 'mapOf<String, String?>("base" to null, "legal" to "m.legal.onnx_adapter")'
    assert "run.addActiveLoraAdapter(" in onnx and "OrtLoraAdapter.create(File(adapterFolder, file).absolutePath)" in onnx
    assert _const(onnx, "INPUT_QUANT") == "listOf(null)" and "the first 3 of 16 golden rows" in onnx
    assert _value(_const(tflite, "LABELS")) == ["cat", "dog$", 'say "hi"']  # "$" escaped for Kotlin
    assert '"dog\\$"' in tflite
    swift = sw["TinyModelStepStatefulInt8Coreml.swift"]
    assert "makeState()" in swift and "using: state" in swift and "config.functionName = name" in swift
    assert _value(_const(swift, "functionNames")) == ["base", "legal"] and '"dog$"' in swift
    assert "let name = variant ?? functionName ??" in swift  # the self-test checks the function it loaded
    for name, text in [*kt.items(), *sw.items()]:
        assert syntax_errors(text, Path(name).suffix) == [], (name, syntax_errors(text, Path(name).suffix))


def _crafted_code(crafted: str) -> dict[str, str]:
    """Kotlin and Swift files of a manifest whose every name, label, path and note is ``crafted``."""
    io = {"inputs": [{"name": crafted, "shape": [1, 4], "dtype": "float32"}],
          "outputs": [{"name": crafted, "shape": [1, 3], "dtype": "float32"}]}
    manifest = _manifest(*(_entry(fmt, file=f"{crafted}.{fmt}", graph=crafted, usage=crafted, precision=crafted, **io)
                           for fmt in ("tflite", "onnx", "coreml")))
    manifest.name, manifest.labels = crafted, [crafted]
    return {**kotlin_files(manifest, app_artifacts(manifest, ("tflite", "onnx"))),
            **swift_files(manifest, app_artifacts(manifest, ("coreml",)))}


CRAFTED = ["*/ fun pwned() {} /*", '"""\nfun pwned() {}\n"""', "x\nfun pwned() {}", "x\rfun pwned() {}",
           "x\u2028fun pwned() {}", "${pwned()}", "\\(pwned())", "\\", "é🙂", "bell\x07\x08\x0c\x7f"]


@pytest.mark.parametrize("crafted", CRAFTED, ids=range(len(CRAFTED)))
def test_crafted_manifest_strings_stay_text_in_the_generated_code(crafted: str) -> None:
    """A manifest is a file: names, labels, paths and notes it carries reach string literals and comments, never
    code (no line break ends a comment early, no quote or interpolation escapes a literal)."""
    files = _crafted_code(crafted)
    assert len(files) == 5  # two Kotlin wrappers + support, one Swift wrapper + support
    for name, text in files.items():
        suffix = Path(name).suffix
        assert syntax_errors(text, suffix) == [], (name, syntax_errors(text, suffix))
        todo, functions = [parse(text, suffix).root_node], []
        while todo:
            node = todo.pop()
            todo += node.children
            functions += [node.text.decode()[:60]] if node.type == "function_declaration" else []
        assert not [f for f in functions if "pwned" in f], name


def test_strings_escape_the_way_each_language_reads_them() -> None:
    """Swift has no ``\\uXXXX``, ``\\b`` or ``\\f`` escapes (JSON's), Kotlin needs ``\\$``: each gets its own."""
    from edgekit.appcode.kotlin import literal as kotlin_literal
    from edgekit.appcode.swift import literal as swift_literal

    text = 'a\x01\x08\u2028"\\$\né'
    assert swift_literal(text) == '"a\\u{1}\\u{8}\\u{2028}\\"\\\\$\\né"'
    assert kotlin_literal(text) == '"a\\u0001\\u0008\\u2028\\"\\\\\\$\\né"'


def test_cli_writes_one_language_where_asked(bundle: Path, tmp_path: Path, capsys) -> None:
    assert main(["app-code", str(bundle), "--lang", "swift", "--out", str(tmp_path / "app")]) == 0
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["golden", "swift"]
    assert (tmp_path / "app" / "swift" / "EdgekitGolden.swift").is_file()
    assert str(tmp_path / "app" / "swift") in capsys.readouterr().out
    assert main(["app-code", str(bundle), "--lang", "kotlin", "--out", str(tmp_path / "app")]) == 0  # its own: replaced
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["golden", "kotlin"]
    with pytest.raises(EdgekitError, match="unknown app-code language 'java'"):
        app_code(bundle, ["java"], tmp_path / "x")
    assert set(LANGUAGES) == {"swift", "kotlin"} and not (tmp_path / "x").exists()


def test_no_loadable_artifact_means_no_app_code(bundle: Path, tmp_path: Path) -> None:
    """A bundle whose artifacts all failed gets no app folder (not an empty one); asking for it is a clear error."""
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    raw = json.loads((copy / "manifest.json").read_text())
    for entry in raw["artifacts"]:
        entry["status"] = "failed"
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(EdgekitError, match=r"no verified coreml artifact for swift app code; convert to one"):
        app_code(copy, ["swift"], tmp_path / "out")
    with pytest.raises(EdgekitError, match=r"no verified onnx or tflite artifact for kotlin"):
        app_code(copy, ["kotlin"])
    assert not (tmp_path / "out").exists()
    from edgekit.appcode import app_code_document
    shutil.rmtree(copy / "app")
    assert app_code_document(copy, load_manifest(copy)) == [] and not (copy / "app").exists()


def test_out_folder_that_is_not_app_code_is_refused_and_kept(bundle: Path, tmp_path: Path) -> None:
    mine = tmp_path / "MyApp"
    (mine / "swift").mkdir(parents=True)
    (mine / "swift" / "ContentView.swift").write_text("import SwiftUI\n")  # the user's own code
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(EdgekitError, match=rf"--out {re.escape(str(mine))} holds files that are not edgekit app "
                                           r"code \(notes.txt, swift/ContentView.swift\); name a new or empty folder"):
        app_code(bundle, ["swift"], mine)
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in (mine / "swift").iterdir()) == [
        "ContentView.swift"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgekitError, match="is a file"):
        app_code(bundle, ["swift"], tmp_path / "file")
    assert not list(tmp_path.glob(".*.partial"))  # nothing staged was left behind


def test_app_code_in_the_bundle_is_written_under_its_lock_and_recorded(bundle: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    stale = copy / "app" / "kotlin" / "RemovedModelFp32Onnx.kt"  # a wrapper of an artifact no longer in the bundle
    stale.write_text("// Generated by edgekit 0.0.1 from the manifest of bundle \"x\"\n")
    with bundle_lock(copy), pytest.raises(EdgekitError, match="being written by another edgekit process"):
        app_code(copy, ["swift"])
    assert main(["app-code", str(copy), "--lang", "swift"]) == 0
    manifest = load_manifest(copy)
    recorded = manifest.documents["app_code"]["files"]
    on_disk = sorted(str(p.relative_to(copy)) for p in (copy / "app").rglob("*") if p.is_file())
    assert recorded == on_disk and not stale.exists()  # the whole folder was replaced, the manifest says so
    assert {Path(f).parts[1] for f in recorded} == {"golden", "swift", "kotlin"}  # kotlin kept: it was recorded
    assert stray_files(copy, manifest) == [] and not (copy / ".edgekit.lock").exists()
    assert str(copy / "app" / "swift" / "EdgekitGolden.swift") in capsys.readouterr().out
    (copy / "app" / "README.txt").write_text("the user's own file")
    with pytest.raises(EdgekitError, match=r"bundle app folder .*app holds files that are not edgekit app code "
                                           r"\(README.txt\)"):
        app_code(copy, ["kotlin"])
    assert (copy / "app" / "README.txt").is_file() and load_manifest(copy).documents["app_code"]["files"] == recorded


def test_app_golden_copy_keeps_the_first_rows_that_fit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lm = {"input_0": rng.integers(0, 256, (16, 256)).astype(np.int64),  # an LM's golden file: 4 MB of logits
          "output_0": rng.standard_normal((16, 256, 256)).astype(np.float32)}
    np.savez(tmp_path / "golden_prefill.npz", **lm)
    (tmp_path / "out").mkdir()
    files, rows = export_golden(tmp_path, "prefill", tmp_path / "out")
    per_row = 256 * 8 + 256 * 256 * 4
    assert rows == (max(1, APP_GOLDEN_BYTES // per_row), 16) and rows[0] < 16
    index = json.loads((tmp_path / "out" / "prefill.json").read_text())
    assert (index["rows"], index["source_rows"]) == rows
    assert index["arrays"]["output_0"]["shape"] == [rows[0], 256, 256]
    logits = np.fromfile(tmp_path / "out" / "prefill.output_0.bin", "<f4").reshape(rows[0], 256, 256)
    np.testing.assert_array_equal(logits, lm["output_0"][:rows[0]])
    tokens = np.fromfile(tmp_path / "out" / "prefill.input_0.bin", "<i8")
    np.testing.assert_array_equal(tokens, lm["input_0"][:rows[0]].ravel())
    assert sum(f.stat().st_size for f in files) < APP_GOLDEN_BYTES + per_row
    np.savez(tmp_path / "golden.npz", input_0=lm["input_0"][:, :4].astype(np.float32), labels=np.arange(16))
    assert export_golden(tmp_path, "", tmp_path / "out")[1] == (16, 16)  # small files are kept whole


# Public signatures of the Android-side APIs the generated Kotlin calls, copied from their sources:
# LiteRT litert/kotlin/src/main/kotlin/com/google/ai/edge/litert/{Model,Common,TensorBuffer,Environment}.kt
# (google-ai-edge/LiteRT), ONNX Runtime java/src/main/java/ai/onnxruntime/{OrtSession,OnnxTensor,
# OrtEnvironment,OrtLoraAdapter}.java (microsoft/onnxruntime), android.content.res.AssetManager, org.json.
KOTLIN_STUBS = {
    "AssetManager.kt": "package android.content.res\nclass AssetManager\n",
    "JSONObject.kt": """package org.json
class JSONArray { fun length(): Int = 0; fun getInt(index: Int): Int = index }
class JSONObject(val source: String) {
    fun keys(): Iterator<String> = listOf<String>().iterator()
    fun getJSONObject(name: String): JSONObject = this
    fun getJSONArray(name: String): JSONArray = JSONArray()
    fun getString(name: String): String = name
}
""",
    "LiteRT.kt": """package com.google.ai.edge.litert
import android.content.res.AssetManager
enum class Accelerator { CPU, GPU, NPU }
abstract class JniHandle : AutoCloseable { override fun close() {} }
class Environment private constructor() : JniHandle() {
    enum class Option { CompilerPluginLibraryDir }
    companion object { fun create(options: Map<Option, String> = mapOf()): Environment = Environment() }
}
class TensorBuffer : JniHandle() {
    fun writeInt(data: IntArray) {}
    fun writeFloat(data: FloatArray) {}
    fun writeInt8(data: ByteArray) {}
    fun writeLong(data: LongArray) {}
    fun readInt(): IntArray = IntArray(0)
    fun readFloat(): FloatArray = FloatArray(0)
    fun readInt8(): ByteArray = ByteArray(0)
    fun readLong(): LongArray = LongArray(0)
}
class CompiledModel private constructor() : JniHandle() {
    class Options(val accelerators: Set<Accelerator>) { constructor(vararg accelerators: Accelerator) : this(setOf(*accelerators)) }
    fun createInputBuffers(signatureIndex: Int = 0): List<TensorBuffer> = listOf()
    fun createInputBuffers(signature: String): List<TensorBuffer> = listOf()
    fun createOutputBuffers(signatureIndex: Int = 0): List<TensorBuffer> = listOf()
    fun createOutputBuffers(signature: String): List<TensorBuffer> = listOf()
    fun run(inputs: List<TensorBuffer>, outputs: List<TensorBuffer>, signatureIndex: Int = 0) {}
    fun run(inputs: List<TensorBuffer>, outputs: List<TensorBuffer>, signature: String) {}
    companion object {
        fun create(assetManager: AssetManager, assetName: String, options: Options = Options(Accelerator.CPU),
                   optionalEnv: Environment? = null): CompiledModel = CompiledModel()
    }
}
""",
    "ai/onnxruntime/OrtException.java": "package ai.onnxruntime;\npublic class OrtException extends Exception {}\n",
    "ai/onnxruntime/OnnxValue.java": "package ai.onnxruntime;\npublic interface OnnxValue extends AutoCloseable { void close(); }\n",
    "ai/onnxruntime/OnnxTensorLike.java": "package ai.onnxruntime;\npublic abstract class OnnxTensorLike implements OnnxValue {}\n",
    "ai/onnxruntime/OnnxTensor.java": """package ai.onnxruntime;
import java.nio.*;
public class OnnxTensor extends OnnxTensorLike {
  public static OnnxTensor createTensor(OrtEnvironment env, FloatBuffer data, long[] shape) throws OrtException { return null; }
  public static OnnxTensor createTensor(OrtEnvironment env, IntBuffer data, long[] shape) throws OrtException { return null; }
  public static OnnxTensor createTensor(OrtEnvironment env, LongBuffer data, long[] shape) throws OrtException { return null; }
  public FloatBuffer getFloatBuffer() { return null; }
  public IntBuffer getIntBuffer() { return null; }
  public LongBuffer getLongBuffer() { return null; }
  public void close() {}
}
""",
    "ai/onnxruntime/OrtEnvironment.java": """package ai.onnxruntime;
public class OrtEnvironment implements AutoCloseable {
  public static OrtEnvironment getEnvironment() { return null; }
  public OrtSession createSession(String modelPath, OrtSession.SessionOptions options) throws OrtException { return null; }
  public void close() {}
}
""",
    "ai/onnxruntime/OrtLoraAdapter.java": """package ai.onnxruntime;
public final class OrtLoraAdapter implements AutoCloseable {
  public static OrtLoraAdapter create(String absoluteAdapterPath) throws OrtException { return null; }
  public void close() {}
}
""",
    "ai/onnxruntime/OrtSession.java": """package ai.onnxruntime;
import java.util.Map;
public class OrtSession implements AutoCloseable {
  public Result run(Map<String, ? extends OnnxTensorLike> inputs, RunOptions runOptions) throws OrtException { return null; }
  public void close() throws OrtException {}
  public static class SessionOptions implements AutoCloseable {
    public void addConfigEntry(String configKey, String configValue) throws OrtException {}
    public void close() {}
  }
  public static class RunOptions implements AutoCloseable {
    public RunOptions() throws OrtException {}
    public void addActiveLoraAdapter(OrtLoraAdapter adapter) throws OrtException {}
    public void close() {}
  }
  public static class Result implements AutoCloseable {
    public OnnxValue get(int index) { return null; }
    public void close() {}
  }
}
""",
}


def test_generated_kotlin_compiles_against_the_real_api_signatures(bundle: Path, tmp_path: Path) -> None:
    """kotlinc type-checks the default bundle's Kotlin and the adapter/int8 variants against the stubs: a wrong
    API name, argument or type fails here (Debian's kotlinc 1.3 also rejects newer-Kotlin-only stdlib calls)."""
    kotlinc = shutil.which("kotlinc")
    if kotlinc is None:
        pytest.skip("kotlinc is not installed (Debian: apt-get install kotlin); the tree-sitter parse still runs")
    sources = [*sorted((bundle / "app" / "kotlin").glob("*.kt"))]
    crafted = _crafted_code('Evil*/ x\r\n"""${pwned()}\\(y)\x07é')  # every crafted string at once, compiled
    wrappers = [*_synthetic_code()[0].items(), *((k, v) for k, v in crafted.items() if k.endswith(".kt"))]
    for rel, text in [*KOTLIN_STUBS.items(), *((k, v) for k, v in wrappers if "Golden" not in k)]:
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text)
        sources.append(tmp_path / "src" / rel)
    build = subprocess.run([kotlinc, "-nowarn", *map(str, sources), "-d", str(tmp_path / "classes")],
                           capture_output=True, text=True, timeout=300)
    errors = [line for line in (build.stdout + build.stderr).splitlines() if "error:" in line]
    assert build.returncode == 0 and not errors, "\n".join(errors[:20]) or build.stderr[-2000:]
    assert (tmp_path / "classes" / "edgekit" / "generated" / "TinyModelInt8Onnx.class").is_file()
