"""The model card (MODEL_CARD.md + model_card.json) that every convert writes into the bundle: its facts come from
the manifest, the matching checkpoint's meta.json and the recipe; what edgekit cannot know says so."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import edgekit
from edgekit.artifact import EXPORTED, ArtifactEntry, load_manifest
from edgekit.checkpoint import load_checkpoint
from edgekit.report.model_card import (CARD_JSON, CARD_MD, NOT_MEASURED, PROVIDER, build_model_card,
                                       wilson_interval, write_model_card)
from edgekit.verify.bundle import stray_files

RECIPE = """
name = "card_tiny"
description = "Tiny digits CNN used by the model-card tests"
[data]
source = "digits"
image_size = 8
[model]
family = "cnn"
image_size = 8
stem_channels = 8
blocks = [[16, 1]]
[train]
epochs = 2
batch_size = 64
threads = 1
[export]
formats = ["onnx"]
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    """A one-format bundle of a tiny trained CNN: (checkpoint, bundle)."""
    out = tmp_path_factory.mktemp("card")
    (out / "card_tiny.toml").write_text(RECIPE)
    trained = edgekit.train(out / "card_tiny.toml", out / "run")
    bundle = edgekit.convert(trained.checkpoint, to=["onnx"], out=out / "bundle")
    return Path(trained.checkpoint), Path(bundle.path)


def _card(bundle: Path) -> dict:
    return json.loads((bundle / CARD_JSON).read_text())


def test_convert_writes_the_card_from_the_checkpoint_meta_and_recipe(made):
    checkpoint, bundle = made
    manifest = load_manifest(bundle)
    assert manifest.documents["model_card"] == {"files": sorted([CARD_MD, CARD_JSON])}
    assert stray_files(bundle, manifest) == []  # edgekit verify accepts the card
    meta = json.loads((checkpoint / "meta.json").read_text())
    card = _card(bundle)
    assert card["metadata_source"].startswith(str((checkpoint / "meta.json").resolve()))
    assert card["intended_purpose"]["description"] == "Tiny digits CNN used by the model-card tests"
    assert card["intended_purpose"]["out_of_scope"] == PROVIDER and card["provider"] == PROVIDER
    params = sum(p.numel() for p in load_checkpoint(checkpoint).model.parameters())
    assert card["model"]["family"] == "cnn" and card["model"]["parameters"] == params > 100
    assert card["data"]["name"] == "digits" and card["data"]["splits"] == meta["dataset"]["sizes"]
    assert card["data"]["provenance"]["source"] == "sklearn.datasets.load_digits"
    test = next(r for r in card["evaluation"]["metrics"] if r["split"] == "digits test split")
    assert test["value"] == meta["metrics"]["test_accuracy"] and test["examples"] == meta["dataset"]["sizes"]["test"]
    assert test["ci95"][0] <= test["value"] <= test["ci95"][1] and test["ci95"][0] < test["ci95"][1]
    entry = manifest.artifacts[0]
    (row,) = card["formats"]
    assert (row["format"], row["precision"], row["file"]) == ("onnx", "fp32", entry.file)
    assert row["accuracy"] == entry.verification["accuracy"] and row["compared_on"].startswith("digits test split")
    assert card["traceability"]["artifacts"] == {entry.file: entry.sha256}
    assert card["latency"].startswith(NOT_MEASURED) and card["energy"].startswith(NOT_MEASURED)


def test_markdown_shows_the_same_facts_and_the_annex_iv_map(made):
    _, bundle = made
    card, text = _card(bundle), (bundle / CARD_MD).read_text()
    entry = load_manifest(bundle).artifacts[0]
    for heading in ("## Intended purpose", "## Effect of each format and precision", "## Known limitations",
                    "## On-device processing", "## Traceability", "## EU AI Act Annex IV section map"):
        assert heading in text
    assert entry.sha256 in text and f"{card['model']['parameters']:,}" in text
    assert "Tiny digits CNN used by the model-card tests" in text and "digits test split" in text
    points = {p["point"]: p for p in card["annex_iv"]["points"]}
    assert sorted(points, key=int) == [str(i) for i in range(1, 10)]
    assert "Article 9" in points["5"]["heading"] and "declaration of conformity" in points["8"]["heading"]
    assert {points[p]["status"] for p in ("5", "7", "8", "9")} == {"provider must write"}
    assert points["2"]["status"] == "partly covered" and "data" in points["2"]["card_sections"]
    assert "2024/1689" in card["annex_iv"]["source"]


def test_a_retrained_checkpoint_is_not_described(made):
    """A manifest whose source sha256 is not the checkpoint's: nothing is taken from meta.json."""
    _, bundle = made
    manifest = load_manifest(bundle)
    manifest.source["sha256"] = "0" * 64
    card = build_model_card(bundle, manifest)
    assert card["metadata_source"].startswith("none:") and "retrained" in card["metadata_source"]
    assert card["intended_purpose"]["description"] == PROVIDER and card["data"]["name"] == PROVIDER
    assert str(card["model"]["parameters"]).startswith("unknown")
    assert card["evaluation"]["metrics"] == PROVIDER
    assert any("unknown to edgekit" in line for line in card["limitations"])


def test_each_precision_random_inputs_and_synthetic_adapters_are_reported(made):
    _, bundle = made
    manifest = load_manifest(bundle)
    base = manifest.artifacts[0]
    int8 = copy.deepcopy(base)
    int8.precision, int8.file = "int8", "m_int8.onnx"
    int8.verification.update(accuracy=0.5, accuracy_drop=0.25, input_source="seeded random normal inputs (200)",
                             quantization={"layer_sqnr_db": [
                                 {"layer": "a", "op": "conv", "sqnr_db": 31.5, "quantized": True},
                                 {"layer": "b", "op": "conv", "sqnr_db": 12.25, "quantized": True},
                                 {"layer": "c", "op": "linear", "sqnr_db": None, "quantized": False}]})
    coreml = ArtifactEntry("coreml", "fp16", EXPORTED, file="m.mlpackage",
                           verification={"status": "not run: Core ML prediction needs macOS"})
    manifest.artifacts += [int8, coreml]
    manifest.adapters = [{"name": "inv", "description": "inverted digits [synthetic]"}]
    card = build_model_card(bundle, manifest)
    rows = {r["file"]: r for r in card["formats"]}
    assert rows["m_int8.onnx"]["accuracy_drop"] == 0.25 and rows[base.file]["accuracy_drop"] == 0.0
    assert rows["m_int8.onnx"]["worst_layer_sqnr_db"] == {"layer": "b", "sqnr_db": 12.25}
    assert rows[base.file]["worst_layer_sqnr_db"] is None
    text = " ".join(card["limitations"])
    assert "random inputs" in text and "m_int8.onnx" in text and base.file not in text.split("random inputs")[1]
    assert "m.mlpackage (not run: Core ML prediction needs macOS)" in text
    assert "'inv'" in text and "synthetic" in text


def test_latency_comes_only_from_a_report_of_these_very_artifacts(made, tmp_path):
    _, bundle = made
    manifest = load_manifest(bundle)
    entry = manifest.artifacts[0]
    report = {"rows": [{"artifact": entry.file, "format": "onnx", "runtime": "onnxruntime", "target": "host",
                        "median_ms": 0.42, "p90_ms": 0.5, "runs": 5, "threads": 1}],
              "manifest": {"artifacts": [{"file": entry.file, "sha256": entry.sha256}]}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    (row,) = build_model_card(tmp_path / "bundle", manifest)["latency"]
    assert (row["artifact"], row["median_ms"], row["runs"]) == (entry.file, 0.42, 5)
    report["manifest"]["artifacts"][0]["sha256"] = "f" * 64  # a stale run's report: other bytes
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert build_model_card(tmp_path / "bundle", manifest)["latency"].startswith(NOT_MEASURED)


def test_wilson_interval():
    assert wilson_interval(0.5, 100) == [0.4038, 0.5962]
    assert wilson_interval(1.0, 180)[1] == 1.0 and wilson_interval(1.0, 180)[0] < 1.0
    assert wilson_interval(0.9, None) is None and wilson_interval(0.9, 0) is None


def test_a_bundle_that_kept_no_artifact_gets_no_card(made, tmp_path):
    _, bundle = made
    manifest = load_manifest(bundle)
    for entry in manifest.artifacts:
        entry.file, entry.status = None, "failed"
    assert write_model_card(tmp_path, manifest) == [] and list(tmp_path.iterdir()) == []
    assert write_model_card(tmp_path, load_manifest(bundle)) == [CARD_MD, CARD_JSON]
    assert json.loads((tmp_path / CARD_JSON).read_text())["name"] == manifest.name
