"""The model card of a bundle: ``MODEL_CARD.md`` + ``model_card.json``, written from what edgekit knows.

Sources, in order of trust: the manifest (artifacts, their verification, hashes, tools), the checkpoint's
``meta.json`` when the bundle's source is an edgekit checkpoint whose recorded weights sha256 matches the
manifest's (JSON only: nothing is unpickled), the recipe that checkpoint records, and a ``report.json`` in the
bundle or its run folder for latency (used only for artifacts whose sha256 the report's manifest shares).
A field none of these know is written as :data:`PROVIDER` or as "not measured", never guessed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from edgekit.artifact import VERIFIED, ArtifactEntry, Manifest
from edgekit.checkpoint import META, read_meta
from edgekit.errors import EdgekitError
from edgekit.io import atomic_write_text
from edgekit.models import create_model
from edgekit.report.model_card_annex import annex_iv_map
from edgekit.report.model_card_md import render_markdown

CARD_MD, CARD_JSON = "MODEL_CARD.md", "model_card.json"
CARD_VERSION = 1
PROVIDER = "to be filled by the provider"
NOT_MEASURED = "not measured"
REPORT = "report.json"
ON_DEVICE = ("Every artifact runs entirely on the device, in the runtime named per artifact; the artifacts hold "
             "no network code and edgekit adds none. Whether an app sends inputs or outputs elsewhere is the "
             "app's (the provider's) decision and is not known here.")


def write_model_card(bundle: Path, manifest: Manifest) -> list[str]:
    """The ``model_card`` bundle document: write both files atomically, return their relative paths. A bundle
    that kept no artifact (every conversion failed) gets none: there is nothing to ship or describe."""
    if not any(e.file for e in manifest.artifacts):
        return []
    card = build_model_card(bundle, manifest)
    atomic_write_text(Path(bundle) / CARD_JSON, json.dumps(card, indent=2, default=str))
    atomic_write_text(Path(bundle) / CARD_MD, render_markdown(card))
    return [CARD_MD, CARD_JSON]


def build_model_card(bundle: Path, manifest: Manifest) -> dict[str, Any]:
    """The card as a JSON-able dict (``model_card.json``); ``MODEL_CARD.md`` renders it."""
    meta, meta_note = checkpoint_meta(Path(bundle), manifest)
    recipe = _dict(meta.get("recipe"))
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": manifest.name,
        "created": manifest.created,
        "generated_by": f"edgekit {manifest.edgekit_version}",
        "provider": PROVIDER,
        "metadata_source": meta_note,
        "intended_purpose": _purpose(meta, recipe),
        "model": _model(meta, manifest),
        "training": _training(meta, recipe),
        "data": _data(meta),
        "evaluation": _evaluation(meta),
        "formats": [row for e in manifest.artifacts for row in _artifact_rows(e)],
        "on_device": _on_device(manifest),
        "latency": latency_rows(Path(bundle), manifest),
        "energy": f"{NOT_MEASURED}: edgekit measures latency, not energy",
        "traceability": _traceability(meta, manifest),
    }
    card["limitations"] = limitations(card, manifest)
    card["annex_iv"] = annex_iv_map(card)
    return card


def checkpoint_meta(bundle: Path, manifest: Manifest) -> tuple[dict[str, Any], str]:
    """The source checkpoint's meta.json when it is the one the bundle was made from, and a note saying
    which file was used or why none was."""
    source = manifest.source
    if source.get("kind") != "checkpoint" or not isinstance(source.get("path"), str):
        return {}, f"none: the source is a {source.get('kind', 'model')!r}, not an edgekit checkpoint"
    path = bundle / source["path"] / META  # recorded relative to the bundle (or absolute)
    if not path.is_file():
        return {}, f"none: the source checkpoint's {META} is not at {path}"
    try:
        meta = read_meta(path)
    except EdgekitError as exc:
        return {}, f"none: {exc}"
    if meta["weights_sha256"] != source.get("sha256"):
        return {}, (f"none: {path} records weights sha256 {meta['weights_sha256'][:12]}…, the bundle was made "
                    f"from {str(source.get('sha256'))[:12]}… (retrained since)")
    return meta, f"{path.resolve()} (weights sha256 matches the manifest)"


def _purpose(meta: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    description = recipe.get("description") or ""
    return {"description": description or PROVIDER,
            "from": f"recipe {recipe.get('name')!r} description" if description else None,
            "task": meta.get("task") or PROVIDER,
            "out_of_scope": PROVIDER}


def parameter_count(meta: dict[str, Any]) -> int | None:
    """Trainable + frozen parameters of the checkpoint's model, built from its config (no weights read). Built on
    the CPU: the meta device costs seconds of lazy torch imports in a fresh process; a small edge model costs ms."""
    try:
        with torch.no_grad():
            model = create_model(meta["family"], meta["config"])
    except Exception:  # noqa: BLE001 - a family this install cannot build: the count is unknown, not wrong
        return None
    return sum(p.numel() for p in model.parameters())


def _model(meta: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    params = parameter_count(meta) if meta else None
    return {
        "family": meta.get("family") or manifest.source.get("family") or f"unknown ({manifest.source.get('kind')})",
        "config": meta.get("config"),
        "parameters": params if params is not None else "unknown: no matching edgekit checkpoint to count from",
        "input_shape": meta.get("input_shape"),
        "artifact_sizes_bytes": {e.file: e.size_bytes for e in manifest.artifacts if e.file},
    }


def _training(meta: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    if not meta:
        return {"method": PROVIDER}
    metrics = _dict(meta.get("metrics"))
    return {"recipe": recipe.get("name"), "recipe_path": recipe.get("path"), "seed": meta.get("seed"),
            "settings": recipe.get("train"), "model_options": recipe.get("model"),
            "epochs": metrics.get("epochs"), "train_seconds": metrics.get("train_seconds"),
            "final_train_loss": metrics.get("train_loss"), "adaptation": _adaptation(recipe)}


def _adaptation(recipe: dict[str, Any]) -> dict[str, Any] | None:
    adapt = _dict(recipe.get("adapt"))
    return {k: adapt.get(k) for k in ("domain", "data", "rank")} if adapt.get("domain") or adapt.get("data") else None


def _data(meta: dict[str, Any]) -> dict[str, Any]:
    dataset = meta.get("dataset")
    if not isinstance(dataset, dict):
        return {"name": PROVIDER, "provenance": PROVIDER, "splits": PROVIDER}
    provenance = {k: v for k, v in dataset.items() if k not in ("name", "sizes")}
    return {"name": dataset.get("name"), "provenance": provenance, "splits": dataset.get("sizes") or "not recorded",
            "options": _dict(meta.get("recipe")).get("data")}


def _evaluation(meta: dict[str, Any]) -> dict[str, Any]:
    """The PyTorch model's metrics as training recorded them, each with the split it was measured on."""
    dataset = _dict(meta.get("dataset"))
    sizes, name = _dict(dataset.get("sizes")), dataset.get("name")
    rows = []
    for key, value in _dict(meta.get("metrics")).items():
        split, _, metric = str(key).partition("_")
        if split in ("test", "val") and metric and isinstance(value, (int, float)):
            n = sizes.get(split)
            rows.append({"metric": metric, "split": f"{name} {split} split", "examples": n,
                         "value": value, "ci95": wilson_interval(value, n) if key.endswith("accuracy") else None})
    return {"model": "PyTorch (fp32) checkpoint", "metrics": rows or PROVIDER}


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict, else an empty one (meta.json is read, not trusted)."""
    return value if isinstance(value, dict) else {}


def wilson_interval(p: float, n: Any) -> list[float] | None:
    """The 95% Wilson score interval of an accuracy ``p`` measured on ``n`` examples."""
    if not isinstance(n, int) or n <= 0 or not 0.0 <= p <= 1.0:
        return None
    z = 1.959964
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [round((centre - half) / (1 + z * z / n), 4), round((centre + half) / (1 + z * z / n), 4)]


def _artifact_rows(entry: ArtifactEntry) -> list[dict[str, Any]]:
    """The artifact's row, then, for a multi-adapter artifact, one row per variant (base or adapter), each
    verified on that variant's own data."""
    return [_artifact_effect(entry), *(_artifact_effect(entry, v.get("verification") or {}, str(v.get("name")))
                                       for v in entry.variants if isinstance(v, dict))]


def _artifact_effect(entry: ArtifactEntry, verification: dict[str, Any] | None = None,
                     variant: str | None = None) -> dict[str, Any]:
    """What one format × precision (or one ``variant`` of it) does to the model's outputs and metrics, from its
    verification."""
    v = entry.verification if verification is None else verification
    layers = [r for r in (v.get("quantization") or {}).get("layer_sqnr_db") or []
              if isinstance(r, dict) and r.get("quantized") and isinstance(r.get("sqnr_db"), (int, float))]
    worst = min(layers, key=lambda r: r["sqnr_db"]) if layers else None
    return {
        "format": entry.format, "precision": entry.precision, "graph": entry.graph, "variant": variant,
        "file": entry.file,
        "status": entry.status, "verification": v.get("status") or entry.error or "not verified",
        "runtime": v.get("runtime") or entry.runtime, "compared_on": v.get("input_source") or "nothing",
        "inputs": v.get("inputs"), "accuracy": v.get("accuracy"), "accuracy_drop": v.get("accuracy_drop"),
        "top1_agreement": v.get("top1_agreement"), "mean_kl_bits": v.get("mean_kl_bits"),
        "snr_db": v.get("snr_db"), "max_abs_diff": v.get("max_abs_diff"),
        "worst_layer_sqnr_db": {"layer": worst["layer"], "sqnr_db": worst["sqnr_db"]} if worst else None,
        "error": entry.error,
    }


def _on_device(manifest: Manifest) -> dict[str, Any]:
    return {
        "statement": ON_DEVICE,
        "preprocessing": manifest.preprocessing or "not recorded: the app must feed the model's raw inputs",
        "labels": manifest.labels,
        "artifacts": [{"file": e.file, "runtime": e.runtime, "graph": e.graph, "inputs": e.inputs,
                       "outputs": e.outputs, "states": e.states, "usage": e.usage,
                       "accelerators": {name: "not run" if p.get("not_run") else p.get("coverage")
                                        for name, p in e.placement.items() if isinstance(p, dict)}}
                      for e in manifest.artifacts if e.file],
    }


def latency_rows(bundle: Path, manifest: Manifest) -> list[dict[str, Any]] | str:
    """Measured latency of this bundle's artifacts from a ``report.json`` beside or above the bundle; only rows
    whose artifact the report's manifest records with the sha256 this manifest has (not a stale run's)."""
    current = {e.file: e.sha256 for e in manifest.artifacts if e.file}
    for path in (bundle / REPORT, bundle.parent / REPORT):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            reported = {a.get("file"): a.get("sha256") for a in report["manifest"]["artifacts"]}
            rows = [_latency_row(r, path) for r in report["rows"]
                    if isinstance(r, dict) and r.get("median_ms") is not None
                    and (file := str(r.get("artifact", "")).partition("#")[0]) in current
                    and current[file] == reported.get(file)]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if rows:
            return rows
    return f"{NOT_MEASURED}: no report.json beside the bundle has benchmarks of these very artifacts"


def _latency_row(row: dict[str, Any], report: Path) -> dict[str, Any]:
    keys = ("artifact", "format", "precision", "graph", "runtime", "target", "median_ms", "p90_ms", "runs", "threads")
    return {k: row.get(k) for k in keys} | {"report": str(report)}


def _traceability(meta: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    return {"source": manifest.source, "artifacts": {e.file: e.sha256 for e in manifest.artifacts if e.file},
            "conversion_tools": manifest.tools, "training_tools": meta.get("versions") or "unknown",
            "edgekit_version": manifest.edgekit_version, "manifest_created": manifest.created}


def limitations(card: dict[str, Any], manifest: Manifest) -> list[str]:
    """Known limitations that follow from the facts above (each names the artifacts or data it is about)."""
    found, artifacts = [], [f for f in card["formats"] if not f.get("variant")]  # one row per artifact
    on_random = [f["file"] or f["format"] for f in artifacts if str(f["compared_on"]).startswith("seeded random")]
    if on_random:
        found.append(f"Verified on seeded random inputs, not real data: {', '.join(on_random)} (parity with PyTorch "
                     "shows the same function is computed; it says nothing about accuracy on real inputs).")
    unverified = [f"{f['file'] or f['format']} ({f['verification']})" for f in artifacts if f["status"] != VERIFIED]
    if unverified:
        found.append(f"Not verified here: {'; '.join(unverified)}.")
    for a in manifest.adapters:
        if "synthetic" in str(a.get("description") or "").lower():
            found.append(f"Adapter {a.get('name')!r} was trained and evaluated on a synthetic domain shift: "
                         f"{a.get('description')}.")
    if card["data"]["name"] != PROVIDER:
        found.append(f"Evaluated only on held-out splits of the training dataset ({card['data']['name']}); no "
                     "out-of-distribution or real-world field evaluation was made.")
        found.append("No evaluation per person or group of persons: edgekit cannot know who is affected.")
    else:
        found.append("Training data, evaluation and their limits are unknown to edgekit (the source is not a "
                     f"matching edgekit checkpoint): {PROVIDER}.")
    return found
