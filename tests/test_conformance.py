"""Conformance: every registered converter × every registered model family × fp32 and int8, through the
public API. The family's tiniest trained checkpoint is converted (``edgekit.convert``; once per family and
precision, to every format that writes it) and re-verified (``Bundle.verify``); each cell checks its format's
artifacts, their verification, and edgekit's metadata read back out of each artifact (``Converter.inspect``).

The cells come from the registries themselves (``CONVERTERS.names()`` × ``FAMILIES.names()``), so a new format
or family is tested by registering it; a family also needs its tiniest recipe in ``TINY`` (its cells fail, saying
so, until it has one). A precision a converter cannot write is skipped by asking the converter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest


import edgekit
from edgekit import CONVERTERS, FAMILIES, EdgekitError, QuantSpec

PRECISIONS = ("fp32", "int8")
CALIB_SAMPLES = 16  # int8: calibration inputs drawn from the recipe's training split (every graph's own inputs)
BYTES = '[data]\nsource = "python_stdlib_bytes"\nseq_len = 16\ntrain_bytes = 4096\neval_bytes = 1024\n'
ONE_EPOCH = "[train]\nepochs = 1\nbatch_size = 32\nlr = 0.01\nthreads = 1\n"

# family → its tiniest recipe (real bundled data; a model of a few thousand weights, trained in about a second).
# The CNN trains long enough that int8 keeps >= 99.5% of its top-1 answers (98% required; a barely trained
# one has near ties that int8 flips); byte LMs are judged by the KL rule, so one epoch is enough.
TINY: dict[str, str] = {
    "cnn": '[data]\nsource = "digits"\nimage_size = 8\n[model]\nfamily = "cnn"\nimage_size = 8\nstem_channels = 16\n'
           'blocks = [[32, 2], [32, 1]]\nactivation = "relu"\n'
           '[train]\nepochs = 15\nbatch_size = 32\nlr = 0.01\nthreads = 1\n',
    "ssm": BYTES + '[model]\nfamily = "ssm"\nhead = "byte_lm"\nd_model = 16\nn_layers = 1\nhead_dim = 8\n'
                   'd_state = 4\nchunk = 8\nexport_lengths = [8]\n' + ONE_EPOCH,
    "transformer": BYTES + '[model]\nfamily = "transformer"\nhead = "byte_lm"\nd_model = 16\nn_layers = 1\n'
                           'n_heads = 2\nmlp_ratio = 1\nmax_context = 16\nexport_lengths = [8]\n' + ONE_EPOCH,
}

# (format, family, precision) → a failure known and reported, not a declared limitation: strict, so a fix shows
KNOWN_FAILURES: dict[tuple[str, str, str], str] = {}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family → its tiny checkpoint, trained on first use and shared by the module's cells."""
    root, trained = tmp_path_factory.mktemp("tiny"), {}

    def get(family: str) -> Path:
        if family not in TINY:
            pytest.fail(f"model family {family!r} has no tiny recipe: add one to TINY in {Path(__file__).name}")
        if family not in trained:
            recipe = root / f"tiny_{family}.toml"
            recipe.write_text(f'name = "tiny_{family}"\n{TINY[family]}')
            trained[family] = edgekit.train(recipe, root / family).checkpoint
        return trained[family]

    return get


def spec_for(fmt: str, precision: str) -> QuantSpec | None:
    """The precision as a QuantSpec with a tiny calibration, or None when ``fmt`` says it cannot write it."""
    spec = QuantSpec.parse(precision, **({"calib_samples": CALIB_SAMPLES} if precision == "int8" else {}))
    try:
        CONVERTERS.get(fmt).check_precision(spec)
    except EdgekitError:
        return None
    return spec


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory) -> Callable[[str, str], tuple[edgekit.Bundle, Any]]:
    """(family, precision) → the bundle of every format that writes it and its ``Bundle.verify()`` report, made
    once (one calibration, one reference) and shared by that family's and precision's cells."""
    made: dict[tuple[str, str], tuple[edgekit.Bundle, Any]] = {}

    def get(family: str, precision: str) -> tuple[edgekit.Bundle, Any]:
        if (family, precision) not in made:
            formats = [fmt for fmt in CONVERTERS.names() if spec_for(fmt, precision) is not None]
            out = tmp_path_factory.mktemp(f"{family}_{precision}") / "bundle"
            spec = spec_for(formats[0], precision)
            bundle = edgekit.convert(tiny_checkpoint(family), to=formats, quant=spec, out=out)
            made[family, precision] = bundle, bundle.verify()
        return made[family, precision]

    return get


def check_metadata(fmt: str, path: Path, entry: dict, manifest: dict, names: dict[str, tuple]) -> None:
    """edgekit's JSON, read back out of the artifact, names what the manifest entry records: name, precision,
    graph, source and I/O shapes; its I/O names are the model graph's (``names``: graph → (inputs, outputs);
    the artifact's own tensor names, which the manifest records, may be the format's, e.g. TFLite's)."""
    meta = json.loads(CONVERTERS.get(fmt).inspect(path).metadata["edgekit"])
    assert (meta["name"], meta["format"], meta["precision"]) == (manifest["name"], fmt, entry["precision"])
    assert meta["graph"] == entry["graph"] and meta["source"]["sha256"] == manifest["source"]["sha256"]
    assert meta["labels"] == manifest["labels"]
    for side, model_names in zip(("inputs", "outputs"), names.get(entry["graph"], (None, None))):
        assert [t["shape"] for t in meta[side]] == [t["shape"] for t in entry[side]], (side, meta[side], entry[side])
        if model_names is not None:  # a graph the model ships (a format's extra graph has its own names)
            assert tuple(t["name"] for t in meta[side]) == model_names, (side, meta[side])


def cells() -> list:
    """Every (format, family, precision) of the registries; a known failure is marked as such."""
    return [pytest.param(fmt, family, precision, marks=[pytest.mark.xfail(reason=KNOWN_FAILURES[key], strict=True)]
                         if (key := (fmt, family, precision)) in KNOWN_FAILURES else [])
            for fmt in CONVERTERS.names() for family in FAMILIES.names() for precision in PRECISIONS]


@pytest.mark.parametrize("fmt, family, precision", cells())
def test_converter_family_precision(fmt, family, precision, tiny_checkpoint, converted):
    if spec_for(fmt, precision) is None:  # asked of the converter (check_precision), never listed here
        pytest.skip(f"the {fmt} converter declares {precision} unsupported")
    bundle, report = converted(family, precision)
    entries = [e for e in bundle.artifacts if e["format"] == fmt]
    names = {g.name: (g.input_names, g.output_names) for g in edgekit.load(tiny_checkpoint(family)).export_graphs()}
    assert [e["graph"] for e in entries if e["graph"] in names] == list(names)  # every graph the model ships, once
    manifest = bundle.manifest.to_dict()
    for entry in entries:
        assert entry["status"] in ("verified", "exported"), f"{entry['graph']}: {entry['error']}"
        if entry["status"] == "exported":  # not verified here: only where the manifest says why
            assert entry["verification"]["status"].startswith("not run: "), entry["verification"]
        check_metadata(fmt, bundle.path / entry["file"], entry, manifest, names)

    # Bundle.verify re-ran every artifact: each as the manifest records it ("not run" stays so, never "passed")
    recorded = {e["file"]: "passed" if e["status"] == "verified" else e["verification"]["status"] for e in entries}
    assert {r["file"]: r["status"] for r in report.results if r["format"] == fmt} == recorded, report.results
    assert not [r for r in report.results if r["format"] not in CONVERTERS], report.results  # no stray files
