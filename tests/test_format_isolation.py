"""One format's failure is that format's recorded ❌ row, never the run's: for each converter × each stage
(export, inspect, verify) a plain RuntimeError is injected into that converter's method, and the conversion
to every format still returns, with the manifest, the other formats' verified artifacts, and the failing
format's entry failed with a one-line reason naming the stage, and no file of that format left behind.

The model is a tiny conv net saved as a ``.pt2`` at test time; the formats are every registered converter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

import edgekit
from edgekit import CONVERTERS, RunnerUnavailable

STAGES = ("export", "inspect", "verify")
# words an error names each stage by ("verif" covers verify and verification)
STAGE_WORDS = {"export": "export", "inspect": "inspect", "verify": "verif"}


class TinyConv(nn.Module):
    """3×16×16 image → 4 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(pixel_values)).mean((2, 3)))  # (B, 4)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch on one thread while this module runs (a shared 2-core machine thrashes with two per process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyConv().eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 16, 16),)), path)
    return path


def injected(stage: str) -> str:
    return f"injected {stage} failure"


def _raiser(stage: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(injected(stage))

    return fail


def inject(monkeypatch: pytest.MonkeyPatch, fmt: str, stage: str) -> None:
    """Make converter ``fmt`` raise a plain RuntimeError at ``stage``. At verify, whatever would run the
    artifact raises: its runtime's runner where it runs here, else its reference evaluator (Core ML on Linux)."""
    conv = CONVERTERS.get(fmt)
    if stage != "verify":
        monkeypatch.setattr(conv, stage, _raiser(stage))
        return
    real_runner = conv.runner

    def runner(path: Path, threads: int, variant: str | None = None) -> Any:
        found = real_runner(path, threads, variant)
        if isinstance(found, RunnerUnavailable):  # the reference evaluator will be asked instead
            return found
        raise RuntimeError(injected(stage))

    monkeypatch.setattr(conv, "runner", runner)
    monkeypatch.setattr(conv, "reference_runner", _raiser(stage))


def manifest_entries(bundle: Path) -> dict[str, dict]:
    """format → its entry, read from the manifest.json on disk."""
    manifest = bundle / "manifest.json"
    assert manifest.is_file(), f"no manifest.json in {bundle}: {sorted(p.name for p in bundle.iterdir())}"
    return {e["format"]: e for e in json.loads(manifest.read_text())["artifacts"]}


def check_failed(bundle: Path, entry: dict, fmt: str, stage: str) -> None:
    """The failing format: failed, one line naming the stage and the injected message, nothing left behind."""
    error = entry["error"] or ""
    assert entry["status"] == "failed" and entry["file"] is None, entry
    assert "\n" not in error, f"not one line: {error!r}"
    assert injected(stage) in error, error
    assert STAGE_WORDS[stage] in error.replace(injected(stage), "").lower(), f"does not name the {stage} stage: {error}"
    suffix = CONVERTERS.get(fmt).suffix
    left = [p.relative_to(bundle) for p in bundle.rglob("*") if suffix in p.name]
    assert not left, f"{fmt} failed at {stage} but left {left}"


def check_verified(bundle: Path, entry: dict) -> None:
    """Another format: its artifact is in the bundle and verified."""
    assert entry["status"] == "verified", f"{entry['format']}: {entry['status']}: {entry['error']}"
    assert entry["file"] and (bundle / entry["file"]).exists(), entry


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt", CONVERTERS.names())
def test_a_failing_format_is_a_recorded_row(fmt: str, stage: str, tiny_pt2: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    inject(monkeypatch, fmt, stage)
    out = tmp_path / "bundle"
    bundle = edgekit.convert(tiny_pt2, to=CONVERTERS.names(), out=out, threads=1)  # must not raise
    entries = manifest_entries(out)
    assert sorted(entries) == sorted(CONVERTERS.names()), entries
    check_failed(out, entries[fmt], fmt, stage)
    for other in CONVERTERS.names():
        if other != fmt:
            check_verified(out, entries[other])
    returned = {e.format: e.status for e in bundle.written}
    assert returned == {f: e["status"] for f, e in entries.items()}, returned


def test_a_later_failure_keeps_the_earlier_artifact_and_the_manifest(tiny_pt2: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX is written first; TFLite then fails at verification (after its file was staged); Core ML follows."""
    order = ["onnx", "tflite", "coreml"]
    if not set(order) <= set(CONVERTERS.names()):
        pytest.skip(f"needs the formats {order}; registered: {CONVERTERS.names()}")
    inject(monkeypatch, "tflite", "verify")
    out = tmp_path / "bundle"
    edgekit.convert(tiny_pt2, to=order, out=out, threads=1)
    entries = manifest_entries(out)
    check_verified(out, entries["onnx"])
    check_failed(out, entries["tflite"], "tflite", "verify")
    check_verified(out, entries["coreml"])
