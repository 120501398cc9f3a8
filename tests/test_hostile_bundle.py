"""A bundle is untrusted input: `verify` and `bench` load no model it names unless the user passes it
(--source) or it is the recorded model outside the bundle with its sha256 checked BEFORE loading; no file
name in manifest.json leads outside the bundle; an artifact that changed is never benchmarked; damaged
manifest fields are a one-line error. Each case asserts the exit code, the message and that nothing
outside the bundle was opened (an audit hook records every `open` and every subprocess started).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.io import sha256_path

_EVENTS: list[tuple[str, object]] | None = None  # recording only inside `watched()`


def _audit(event: str, args: tuple) -> None:
    if _EVENTS is not None and event in ("open", "subprocess.Popen"):
        _EVENTS.append((event, args[0] if event == "open" else args[1]))


sys.addaudithook(_audit)


@pytest.fixture
def events():
    """Every file opened and every subprocess started while the test runs (``.clear()`` after setup)."""
    global _EVENTS
    _EVENTS = []
    yield _EVENTS
    _EVENTS = None


def opened(events, target: Path) -> list[str]:
    """Opened paths that are, or lie inside, ``target`` (symlinks resolved)."""
    target, hits = target.resolve(), []
    for kind, arg in events:
        if kind == "open" and isinstance(arg, (str, os.PathLike)):
            path = Path(arg).resolve()
            if path == target or path.is_relative_to(target):
                hits.append(str(arg))
    return hits


def subprocesses(events) -> list[object]:
    return [arg for kind, arg in events if kind == "subprocess.Popen"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("edgekit: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    """A private copy of the session bundle (never the fixture itself)."""
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def edit(bundle: Path, change) -> None:
    """Apply ``change`` to the parsed manifest.json (a list it returns replaces it) and write it back."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    returned = change(data)
    data = returned if isinstance(returned, list) else data
    path.write_text(json.dumps(data))


def entry_of(data: dict, fmt: str) -> dict:
    return next(a for a in data["artifacts"] if a["format"] == fmt)


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every model path `edgekit.sources.load_source` is asked to load (also where verify.bundle imported it)."""
    import edgekit.sources
    import edgekit.verify.bundle

    seen, real = [], edgekit.sources.load_source
    for module in (edgekit.sources, edgekit.verify.bundle):
        monkeypatch.setattr(module, "load_source", lambda path, **kw: seen.append(str(path)) or real(path, **kw))
    return seen


def stray_exit(report: dict, shipped: str) -> int:
    """Every artifact passed; a model shipped inside the bundle is reported as a stray file (exit 1)."""
    rows = report["results"]
    assert {r["status"] for r in rows if r["format"] != "bundle"} == {"passed"}, rows
    stray = [r for r in rows if r["format"] == "bundle"]
    if Path(shipped).parts[0] == "..":
        assert stray == []
        return 0
    assert len(stray) == 1 and shipped in stray[0]["reason"], stray
    return 1


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class _Payload:
    """Pickled, it would create ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def hostile_pt2(path: Path, marker: Path) -> Path:
    """A real torch.export archive whose sample-inputs entry is a pickle that would create ``marker``."""
    import torch

    plain = path.parent.parent / "plain.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),)), plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            hostile = "sample_inputs" in item.filename
            dst.writestr(item, pickle.dumps(_Payload(marker), protocol=2) if hostile else src.read(item.filename))
    plain.unlink()
    return path


# --- a model named by the manifest -------------------------------------------------------------------


CRAFTED = {  # where the named checkpoint lies, whether it differs from the real source, what manifest.json records
    "in the bundle, sha256 made to match": ("model", True, "shipped", "inside the bundle"),
    "in the bundle, an exact copy": ("model", False, "source", "inside the bundle"),
    "beside the bundle, changed": ("../model", True, "source", "sha256 differs"),
}


@pytest.mark.parametrize("case", CRAFTED, ids=list(CRAFTED))
def test_crafted_checkpoint_named_by_the_manifest_is_not_loaded(capsys, copy, checkpoint, loads, case):
    where, changed, recorded, reason = CRAFTED[case]
    shipped = Path(shutil.copytree(checkpoint, copy / where))
    if changed:
        flip_byte(shipped / "model.safetensors")
    sha = sha256_path(shipped / "model.safetensors") if recorded == "shipped" else None
    edit(copy, lambda d: d["source"].update(path=where, **({"sha256": sha} if sha else {})))
    code, out, _ = run_cli(capsys, "verify", copy, "--json")
    report = json.loads(out)
    assert loads == []  # the named model never loaded: every artifact verified against golden.npz instead
    assert "golden.npz" in report["reference"] and reason in report["reference"]
    assert code == stray_exit(report, where)


def test_pt2_shipped_in_the_bundle_never_runs(capsys, copy, tmp_path, loads):
    marker = tmp_path / "PWNED"
    evil = hostile_pt2(copy / "evil.pt2", marker)
    edit(copy, lambda d: d["source"].update(kind="pt2", path="evil.pt2", sha256=sha256_path(evil)))
    code, out, _ = run_cli(capsys, "verify", copy, "--json")
    report = json.loads(out)
    assert "inside the bundle" in report["reference"] and code == stray_exit(report, "evil.pt2")
    code, out, err = run_cli(capsys, "bench", copy, "--runs", "1", "--warmup", "0", "--json")
    err = " ".join(err.split())  # the console may wrap the line
    assert code == 0 and "PyTorch baseline not run" in err and "inside the bundle" in err
    assert "pytorch" not in {r["format"] for r in json.loads(out)}
    assert not marker.exists() and loads == []


def test_relative_source_path_is_read_from_the_bundle_not_the_cwd(capsys, copy, checkpoint, tmp_path, loads,
                                                                  monkeypatch):
    cwd = tmp_path / "cwd"
    shutil.copytree(checkpoint, cwd / "ckpt")  # where a cwd-relative reading would find it
    monkeypatch.chdir(cwd)
    edit(copy, lambda d: d["source"].update(path="ckpt"))
    code, out, _ = run_cli(capsys, "verify", copy, "--json")
    assert code == 0 and loads == [] and "ckpt is not there" in json.loads(out)["reference"]
    shutil.copytree(checkpoint, tmp_path / "ckpt")  # beside the bundle: ../ckpt from the bundle folder
    edit(copy, lambda d: d["source"].update(path="../ckpt"))
    code, out, _ = run_cli(capsys, "verify", copy, "--json")
    assert code == 0 and loads == [str(copy / "../ckpt")]
    assert "golden" not in json.loads(out)["reference"]  # the source's own test split


def test_source_flag_right_and_wrong(capsys, copy, checkpoint, tmp_path, loads):
    edit(copy, lambda d: d["source"].update(path="/nonexistent/ckpt"))
    code, out, _ = run_cli(capsys, "verify", copy, "--source", checkpoint, "--json")
    assert code == 0 and loads == [str(checkpoint)] and "golden" not in json.loads(out)["reference"]
    wrong = Path(shutil.copytree(checkpoint, tmp_path / "other"))
    flip_byte(wrong / "model.safetensors")
    recorded = json.loads((copy / "manifest.json").read_text())["source"]["sha256"]
    for command in (["verify"], ["bench", "--runs", "1"]):
        code, _, err = run_cli(capsys, *command, copy, "--source", wrong)
        assert code == 1
        one_line_error(err, "--source", sha256_path(wrong / "model.safetensors"), recorded)
    assert loads == [str(checkpoint)]  # the wrong model was hashed, never loaded


# --- file names in the manifest ----------------------------------------------------------------------


@pytest.fixture
def outside(bundle, tmp_path) -> Path:
    """A real, runnable artifact outside the bundle: following the manifest to it would 'work'."""
    target = tmp_path / "outside" / "secret.tflite"
    target.parent.mkdir()
    shutil.copy(next(bundle.glob("*.tflite")), target)
    return target


def point_tflite_at(copy: Path, outside: Path, how: str) -> None:
    name = {"absolute": str(outside), "dotdot": "../outside/secret.tflite", "symlink": "link.tflite"}[how]
    if how == "symlink":
        (copy / name).symlink_to(outside)
    edit(copy, lambda d: entry_of(d, "tflite").update(file=name, sha256=sha256_path(outside)))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
@pytest.mark.parametrize("command", [["verify"], ["bench", "--runs", "1", "--warmup", "0"], ["bench", "--device", "adb"]],
                         ids=["verify", "bench", "bench-adb"])
def test_artifact_file_outside_the_bundle_is_refused(capsys, copy, outside, events, how, command):
    point_tflite_at(copy, outside, how)
    events.clear()  # only what edgekit does from here on
    code, _, err = run_cli(capsys, command[0], copy, *command[1:])
    assert code == 1
    one_line_error(err, "manifest.json", "artifact file", "is outside the bundle")
    assert opened(events, outside.parent) == [] and subprocesses(events) == []  # not hashed, run nor pushed


def test_golden_file_linked_outside_is_refused(capsys, copy, tmp_path, events):
    secret = tmp_path / "secret.npz"
    shutil.move(copy / "golden.npz", secret)
    (copy / "golden.npz").symlink_to(secret)
    edit(copy, lambda d: d["source"].update(path="/nonexistent/ckpt"))  # so verify needs the golden file
    events.clear()
    code, _, err = run_cli(capsys, "verify", copy)
    assert code == 1
    one_line_error(err, "golden file 'golden.npz' is outside the bundle")
    assert opened(events, secret) == []


def test_damaged_golden_file_is_a_one_line_error(capsys, copy):
    (copy / "golden.npz").write_bytes(b"\x80\x04junk")  # what a pickle would start with
    edit(copy, lambda d: d["source"].update(path="/nonexistent/ckpt"))
    code, _, err = run_cli(capsys, "verify", copy)
    assert code == 1
    one_line_error(err, "golden.npz is damaged: not an .npz archive of plain arrays")


def test_adapter_file_outside_the_bundle_is_refused(capsys, copy, tmp_path, events):
    secret = tmp_path / "secret.onnx_adapter"
    secret.write_bytes(b"not yours")
    variants = [{"name": "base", "select": {"adapter_file": None}},
                {"name": "x", "select": {"adapter_file": "../secret.onnx_adapter"}}]
    edit(copy, lambda d: entry_of(d, "onnx").update(variants=variants))
    events.clear()
    code, out, _ = run_cli(capsys, "verify", copy, "--json")
    onnx = next(r for r in json.loads(out)["results"] if r["format"] == "onnx")
    assert code == 1 and onnx["status"] == "failed"
    assert "adapter file '../secret.onnx_adapter' is outside" in onnx["reason"]
    code, _, err = run_cli(capsys, "bench", copy, "--runs", "1", "--warmup", "0")
    assert code == 1
    one_line_error(err, "adapter file '../secret.onnx_adapter' is outside the bundle")
    assert opened(events, secret) == []


# --- an artifact that changed since conversion -------------------------------------------------------


def test_bench_refuses_a_changed_artifact_on_host(capsys, copy):
    onnx = next(copy.glob("*.onnx"))
    flip_byte(onnx)
    code, out, _ = run_cli(capsys, "bench", copy, "--runs", "1", "--warmup", "0", "--json")
    rows = {r["format"]: r for r in json.loads(out)}
    assert code == 1 and rows["onnx"]["status"] == "failed" and rows["onnx"]["mark"] == "❌"
    assert "changed since conversion" in rows["onnx"]["note"] and rows["onnx"]["median_ms"] is None
    assert rows["tflite"]["status"] == "verified" and rows["tflite"]["runs"] == 1
    code, out, _ = run_cli(capsys, "bench", onnx, "--runs", "1", "--warmup", "0", "--json")  # the file alone
    row = next(r for r in json.loads(out) if r["format"] == "onnx")
    assert code == 1 and row["status"] == "failed" and "changed since conversion" in row["note"]


def test_bench_refuses_a_changed_artifact_before_any_adb_push(capsys, copy, events):
    flip_byte(next(copy.glob("*.tflite")))
    events.clear()
    code, out, _ = run_cli(capsys, "bench", copy, "--device", "adb", "--json")
    (row,) = [r for r in json.loads(out) if r["format"] == "tflite"]
    assert code == 1 and row["status"] == "failed" and "changed since conversion" in row["note"]
    assert subprocesses(events) == []  # no adb command at all: nothing pushed


# --- damaged manifest fields -------------------------------------------------------------------------


DAMAGE = {
    "artifacts not a list": (lambda d: d.update(artifacts={"a": 1}), "manifest.artifacts is"),
    "file is a number": (lambda d: d["artifacts"][0].update(file=5), "artifacts[0].file is 5 (int)"),
    "format missing": (lambda d: d["artifacts"][1].__delitem__("format"), "artifacts[1] has no 'format'"),
    "source not an object": (lambda d: d.update(source="x"), "manifest.source is 'x' (str)"),
    "source path a number": (lambda d: d["source"].update(path=7), "source.path is 7"),
    "variant not an object": (lambda d: d["artifacts"][0].update(variants=[3]), "artifacts[0].variants[0] is 3"),
    "not an object": (lambda d: [d], "it holds a list"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_manifest_fields_are_one_line_errors(capsys, copy, damage):
    change, words = DAMAGE[damage]
    edit(copy, change)
    for command in (["verify"], ["bench", "--runs", "1"], ["bench", "--device", "adb"]):
        code, _, err = run_cli(capsys, command[0], copy, *command[1:])
        assert code == 1
        one_line_error(err, "manifest.json is damaged:", words)
