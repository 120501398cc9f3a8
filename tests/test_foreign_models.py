"""Models nobody here wrote (tests/foreign_models.py: transformers' BERT, Llama, Mamba, ViT, MobileNetV2,
Wav2Vec2 and a small detector with large-valued dict outputs) convert to every format and verify, as users'
own ``.pt2`` files with their own sample inputs (``sample_inputs=``, an ``.npz`` keyed by input name).

Each model × scheme is converted once (to every format that writes the scheme: asked of the converter) and
shared by its cells, one per format, so a failure names model × scheme × format. Static int8 is calibrated on
the same ``.npz`` (``QuantSpec.calib_source``). The manifest carries each model's input names and dtypes and the
dict model's output names in every format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import edgekit  # noqa: E402
from edgekit import CONVERTERS, EdgekitError, QuantSpec  # noqa: E402
from edgekit.converters.onnx.export import ort_weight_qmax  # noqa: E402
from foreign_models import CALIB_SAMPLES, DICT_OUTPUTS, FOREIGN_MODELS, SAMPLES, Foreign, save_foreign  # noqa: E402

SCHEMES = ("fp32", "int8", "int8-weight")
# the dtype each format's artifact takes for an integer (token id, mask) input of the model: ONNX keeps the
# model's int64, LiteRT and Core ML take int32; a format not named here may take either
INTEGER_INPUT_DTYPE = {"onnx": ("int64",), "tflite": ("int32",), "coreml": ("int32",)}
Saved = tuple[Path, Path, Foreign]
THREADS = 1  # the runtimes' threads, and PyTorch's during this module (see one_torch_thread)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch on one thread while this module runs: on a shared 2-core machine two threads per process
    thrash (the reference forward of MobileNetV2 went from 9 ms to 180 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def spec_for(scheme: str, samples: Path) -> QuantSpec:
    """The scheme as a QuantSpec; static int8 is calibrated on every sample input of the model."""
    if QuantSpec.parse(scheme).needs_calibration:
        return QuantSpec.parse(scheme, calib_source=str(samples), calib_samples=CALIB_SAMPLES)
    return QuantSpec.parse(scheme)


def formats_for(scheme: str) -> list[str]:
    """Every registered format that writes ``scheme`` (asked of each converter, never listed here)."""
    found = []
    for fmt in CONVERTERS.names():
        try:
            CONVERTERS.get(fmt).check_precision(scheme)
        except EdgekitError:
            continue
        found.append(fmt)
    return found


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Saved]:
    """model name → (its .pt2, its sample inputs .npz, the model), exported once per module."""
    root, made = tmp_path_factory.mktemp("foreign"), {}

    def get(name: str) -> Saved:
        if name not in made:
            made[name] = save_foreign(name, root / name)
        return made[name]

    return get


@pytest.fixture(scope="module")
def converted(saved, tmp_path_factory) -> Callable[[str, str], edgekit.Bundle]:
    """(model, scheme) → the bundle of every format that writes the scheme, converted once. An exception of
    ``edgekit.convert`` is kept and fails each of that conversion's cells (a format's failure must not raise)."""
    made: dict[tuple[str, str], edgekit.Bundle | Exception] = {}

    def get(name: str, scheme: str) -> edgekit.Bundle:
        if (name, scheme) not in made:
            pt2, npz, _ = saved(name)
            out = tmp_path_factory.mktemp(f"{name}_{scheme}") / "bundle"
            try:
                made[name, scheme] = edgekit.convert(pt2, to=formats_for(scheme), quant=spec_for(scheme, npz),
                                                     out=out, sample_inputs=npz, threads=THREADS)
            except Exception as exc:  # noqa: BLE001 - recorded, and reported by every cell of this conversion
                made[name, scheme] = exc
        found = made[name, scheme]
        if isinstance(found, Exception):
            pytest.fail(f"edgekit.convert({name}, {scheme}) raised {type(found).__name__}: {found}")
        return found

    return get


def entry_of(bundle: edgekit.Bundle, fmt: str) -> dict:
    """The bundle's one manifest entry of ``fmt``."""
    entries = [e for e in bundle.manifest.to_dict()["artifacts"] if e["format"] == fmt]
    assert len(entries) == 1, f"{fmt}: {len(entries)} manifest entries, expected 1: {entries}"
    return entries[0]


# Known gaps, measured on the 100 sample inputs (static int8 calibrated on the same 100). The random-init ViT's
# logits have near ties (5% of its rows within 3.3% of the logit range), and its int8 artifacts flip 3–4 of them:
# 96% (ONNX Runtime) and 97% (Core ML, MIL reference) top-1 agreement against the 98% bar; borderline, so not
# strict. LiteRT's is worse (89–93%, SNR ~15 dB against ~28 dB from the same calibrated graph): the TFLite
# int8 lowering adds error (like the SSM int8 xfail in test_conformance); strict, it fails the day it passes.
VIT_INT8 = "random-init ViT, static int8: 96–97% top-1 agreement on 100 inputs (bar 98%), flips on near ties"
KNOWN_GAPS = {
    ("vit", "int8", "onnx"): (VIT_INT8, False),
    ("vit", "int8", "coreml"): (VIT_INT8, False),
    ("vit", "int8", "tflite"): ("LiteRT static int8 ViT: 89–93% top-1 agreement where ONNX Runtime and Core ML keep "
                                "96–97% from the same calibrated graph (the TFLite int8 lowering adds error)", True),
    # on an x86 host without VNNI the ONNX int8 weights are 7-bit (converters/onnx/export.py ort_weight_qmax), and
    # the MobileNetV2 then keeps 97% top-1 agreement (23.3 dB; 99% and 25.6 dB with 8-bit weights)
    **({("mobilenet", "int8", "onnx"): ("ONNX Runtime int8 MobileNetV2 with 7-bit weights (x86 host without VNNI): "
                                        "97% top-1 agreement, 98% required", False)} if ort_weight_qmax()[0] else {}),
}


def cells() -> list:
    def marks(key: tuple[str, str, str]) -> list:
        if key not in KNOWN_GAPS:
            return []
        reason, strict = KNOWN_GAPS[key]
        return [pytest.mark.xfail(strict=strict, reason=reason)]

    return [pytest.param(name, scheme, fmt, id=f"{name}-{scheme}-{fmt}", marks=marks((name, scheme, fmt)))
            for name in FOREIGN_MODELS for scheme in SCHEMES for fmt in CONVERTERS.names()]


@pytest.mark.parametrize("name, scheme, fmt", cells())
def test_foreign_model_converts_and_verifies(name: str, scheme: str, fmt: str, saved, converted) -> None:
    if fmt not in formats_for(scheme):
        pytest.skip(f"the {fmt} converter declares {scheme} unsupported")
    entry = entry_of(converted(name, scheme), fmt)
    assert entry["status"] == "verified", f"{name} {scheme} {fmt}: {entry['status']}: {entry['error']}"
    check = entry["verification"]
    assert check["status"] == "passed", check
    assert check["inputs"] == SAMPLES, f"verified on {check['inputs']} inputs ({check.get('input_source')}), " \
                                       f"expected the model's {SAMPLES} sample inputs"
    assert entry["precision"] == QuantSpec.parse(scheme).tag
    recorded = check["quantization"]["spec"]
    assert recorded["scheme"] == scheme
    if scheme == "int8":  # calibrated on the model's own samples, as the manifest records
        assert Path(recorded["calib_source"]).name == saved(name)[1].name, recorded


@pytest.mark.parametrize("fmt", CONVERTERS.names())
@pytest.mark.parametrize("name", list(FOREIGN_MODELS))
def test_manifest_carries_the_model_inputs_and_outputs(name: str, fmt: str, saved, converted) -> None:
    """Inputs named as the model names them, at batch 1, with the format's dtype for integer inputs; the dict
    model's outputs named by their keys, in order."""
    _, _, model = saved(name)
    entry = entry_of(converted(name, "fp32"), fmt)
    assert entry["status"] == "verified", f"{name} fp32 {fmt}: {entry['error']}"
    inputs = entry["inputs"]
    assert [t["name"] for t in inputs] == list(model.input_names), inputs
    for tensor, (input_name, samples) in zip(inputs, model.samples.items()):
        assert tensor["shape"] == [1, *samples.shape[1:]], (input_name, tensor)
        integer = np.issubdtype(samples.dtype, np.integer)
        want = INTEGER_INPUT_DTYPE.get(fmt, ("int32", "int64")) if integer else ("float32",)
        assert tensor["dtype"] in want, (input_name, tensor)
    if name in DICT_OUTPUTS:
        assert [t["name"] for t in entry["outputs"]] == list(DICT_OUTPUTS[name]), entry["outputs"]
    else:
        assert len(entry["outputs"]) == 1, entry["outputs"]


def test_sample_inputs_alone_calibrate_static_int8(saved, tmp_path: Path) -> None:
    """``--quant int8 --sample-inputs FILE`` with no ``--calib``: the sample inputs calibrate, as recorded."""
    pt2, npz, _ = saved("boxes")
    bundle = edgekit.convert(pt2, to=formats_for("int8"), quant="int8", out=tmp_path / "bundle", sample_inputs=npz,
                             threads=THREADS)
    for fmt in formats_for("int8"):
        entry = entry_of(bundle, fmt)
        assert entry["status"] == "verified", f"boxes int8 {fmt}: {entry['error']}"
        assert Path(entry["verification"]["quantization"]["spec"]["calib_source"]).name == npz.name


def test_foreign_models_are_deterministic_and_meaningful() -> None:
    """Two builds give the same outputs; outputs differ between samples (no degenerate constant reference);
    sample inputs are valid: token ids below the vocabulary, 0/1 masks with trailing padding."""
    for name, build in FOREIGN_MODELS.items():
        first, second = build(), build()
        batch = tuple(torch.from_numpy(a[:4]) for a in first.samples.values())
        with torch.no_grad():
            a, b = _flat(first.module(*batch)), _flat(second.module(*batch))
        assert all(torch.equal(x, y) for x, y in zip(a, b)), name
        for out in a:
            assert torch.isfinite(out).all(), name
            spread = (out - out[:1]).abs().amax()
            assert spread > 1e-3 * max(float(out.abs().amax()), 1e-3), f"{name}: same output for every sample"
        for key, values in first.samples.items():
            assert values.shape[0] == SAMPLES, (name, key)
            if key == "attention_mask":
                assert set(np.unique(values)) == {0, 1} and (np.diff(values, axis=1) <= 0).all(), name
            elif np.issubdtype(values.dtype, np.integer):
                vocab = first.module.model.config.vocab_size
                assert 0 <= values.min() and values.max() < vocab, name


def test_the_large_valued_model_has_large_values() -> None:
    """The dict model's boxes are pixel coordinates in 175–523, beside O(1) scores."""
    model = FOREIGN_MODELS["boxes"]()
    with torch.no_grad():
        out = model.module(torch.from_numpy(model.samples["pixel_values"]))
    assert list(out) == list(DICT_OUTPUTS["boxes"])
    boxes = out["boxes"]
    assert float(boxes.min()) >= 175 and float(boxes.max()) <= 523 and float(boxes.mean()) > 200, boxes
    assert float(out["scores"].abs().max()) < 20


def _flat(out: object) -> list:
    return list(out.values()) if isinstance(out, dict) else [out]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", list(FOREIGN_MODELS))
def test_foreign_bundle_gets_its_model_card_and_app_code(name: str, scheme: str, converted) -> None:
    """The bundle documents work on models nobody here wrote: written without error, listed, and the generated
    Swift / Kotlin parses in the real grammars (a document failing is recorded, never raised, so it is checked here)."""
    from test_app_code import syntax_errors

    bundle = converted(name, scheme)  # converted once for the cells above
    documents = bundle.manifest.documents
    assert set(documents) == {"model_card", "app_code"}, documents
    for document in documents.values():
        assert "error" not in document and document["files"], document
        assert all((bundle.path / f).is_file() for f in document["files"])
    sources = [f for f in documents["app_code"]["files"] if f.endswith((".swift", ".kt"))]
    verified = {e.format for e in bundle.manifest.artifacts if e.status == "verified"}
    wanted = {lang for lang, formats in (("swift", {"coreml"}), ("kotlin", {"onnx", "tflite"})) if formats & verified}
    assert wanted and {f.split("/")[1] for f in sources} == wanted, sources  # code for what verified, only
    for rel in sources:
        assert syntax_errors((bundle.path / rel).read_text(), Path(rel).suffix) == [], rel
    card = json.loads((bundle.path / "model_card.json").read_text())
    assert card and name in (bundle.path / "MODEL_CARD.md").read_text().lower() + json.dumps(card).lower()
