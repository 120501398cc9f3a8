"""The main job end to end: the default recipe trained, converted, verified, benchmarked, reported."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgekit.artifact import load_manifest
from edgekit.checkpoint import load_checkpoint
from edgekit.converters.tflite.export import read_metadata


def test_training_reaches_target_accuracy(default_run):
    _, outcome = default_run
    metrics = outcome.report["training"]
    assert metrics["test_accuracy"] >= 0.985
    assert metrics["epochs"] >= 1


def test_checkpoint_is_safetensors_plus_json(checkpoint):
    files = sorted(p.name for p in checkpoint.iterdir())
    assert files == ["meta.json", "model.safetensors"]
    meta = json.loads((checkpoint / "meta.json").read_text())
    for key in ("recipe", "metrics", "seed", "versions", "labels", "preprocessing", "weights_sha256"):
        assert key in meta
    assert meta["versions"]["torch"].startswith("2.")
    ckpt = load_checkpoint(checkpoint)
    assert not ckpt.model.training and ckpt.labels == [str(d) for d in range(10)]


def test_every_format_is_verified_or_honestly_not_run(bundle):
    manifest = load_manifest(bundle)
    by_format = {a.format: a for a in manifest.artifacts}
    assert set(by_format) == {"onnx", "tflite", "coreml"}
    for fmt in ("onnx", "tflite"):
        entry = by_format[fmt]
        v = entry.verification
        assert entry.status == "verified", entry.error
        assert v["status"] == "passed" and v["inputs"] >= 200
        assert v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] == 1.0
        assert v["accuracy"] >= 0.985
        assert (bundle / entry.file).stat().st_size == entry.size_bytes
    coreml = by_format["coreml"]
    v = coreml.verification
    assert coreml.status == "verified", coreml.error
    assert v["method"] == "mil-reference" and v["runtime"] == "not run: Core ML prediction needs macOS"
    assert v["inputs"] >= 200 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] == 1.0
    assert coreml.inputs == [{"name": "image", "shape": [1, 1, 32, 32], "dtype": "float32"}]
    assert coreml.op_histogram.get("conv", 0) >= 5
    assert manifest.source["kind"] == "checkpoint" and len(manifest.source["sha256"]) == 64
    assert manifest.preprocessing["layout"] == "NCHW" and manifest.labels[0] == "0"
    assert {"torch", "onnxruntime", "litert-torch", "coremltools"} <= set(manifest.tools)
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")], "staging leftovers"


def test_metadata_is_embedded_in_each_artifact(bundle):
    manifest = load_manifest(bundle)
    files = {a.format: bundle / a.file for a in manifest.artifacts}
    props = {p.key: p.value for p in onnx.load(str(files["onnx"])).metadata_props}
    tflite = read_metadata(files["tflite"])
    import coremltools as ct

    coreml = ct.models.MLModel(str(files["coreml"]), skip_model_load=True).user_defined_metadata
    for raw in (props["edgekit"], tflite["edgekit"], coreml["edgekit"]):
        meta = json.loads(raw)
        assert meta["labels"] == manifest.labels
        assert meta["preprocessing"] == manifest.preprocessing
        assert meta["source"]["sha256"] == manifest.source["sha256"]
    assert json.loads(props["labels"]) == manifest.labels == json.loads(coreml["labels"])


def test_report_rows_and_benchmarks(default_run):
    out, outcome = default_run
    assert outcome.ok
    report = json.loads((out / "report.json").read_text())
    rows = {r["format"]: r for r in report["rows"]}
    assert set(rows) == {"pytorch", "onnx", "tflite", "coreml"}
    for fmt in ("pytorch", "onnx", "tflite"):
        r = rows[fmt]
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] >= r["min_ms"]
        assert r["runs"] == 200 and r["threads"] == 2
        assert r["speedup_vs_pytorch"] > 0
    assert rows["pytorch"]["speedup_vs_pytorch"] == pytest.approx(1.0)
    assert rows["coreml"]["mark"] == "✅" and "MIL reference" in rows["coreml"]["note"]
    assert "needs macOS" in rows["coreml"]["note"] and rows["coreml"]["median_ms"] is None
    assert rows["onnx"]["mark"] == "✅"


def test_golden_vectors_match_pytorch(bundle, checkpoint):
    import torch

    model = load_checkpoint(checkpoint).model
    with np.load(bundle / "golden.npz", allow_pickle=False) as z:
        x, y = z["input_0"], z["output_0"]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(expected - y).max() < 1e-5
