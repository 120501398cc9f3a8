"""Hostile and careless writes: no user data is deleted or overwritten silently, and writes are
crash-proof (issue 18, items 3 and 5). Each test checks the exit code, the message and what is on disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 256), torch.nn.Linear(256, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt2"
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(1, 64),)), str(path))
    return path


@pytest.fixture(scope="module")
def tiny_bundle(tiny_pt2, tmp_path_factory) -> Path:
    """One real ONNX conversion of the tiny model; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("tb") / "bundle"
    assert main(["convert", str(tiny_pt2), "--to", "onnx", "--out", str(out)]) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_folder(path: Path) -> Path:
    (path / "photos").mkdir(parents=True)
    (path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 my cat")
    (path / "notes.txt").write_text("mine")
    return path


def error_of(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("edgekit: error: "), err
    return err[-1]


def copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "b"))


def documents(bundle: Path) -> list[str]:
    """The top-level names of the documents (model card, app code) the bundle's manifest records."""
    docs = json.loads((bundle / "manifest.json").read_text())["documents"].values()
    return sorted({Path(f).parts[0] for d in docs for f in d["files"]})


def convert(model: Path, out: Path, *extra: str) -> int:
    return main(["convert", str(model), "--to", "onnx", "--out", str(out), *extra])


def tiny_checkpoint(path: Path) -> Path:
    from edgekit.checkpoint import save_checkpoint
    from edgekit.models import create_model

    return save_checkpoint(create_model("cnn", {"blocks": [[8, 1]], "num_classes": 3}), path, {"labels": None})


# --- existing folders that edgekit did not create ---------------------------------------------

def test_bench_out_never_replaces_a_folder(tiny_bundle, tmp_path, capsys):
    d = user_folder(tmp_path / "my_results")
    before = snapshot(d)
    for extra in ([], ["--overwrite"]):
        assert main(["bench", str(tiny_bundle / "tiny_fp32.onnx"), "--out", str(d), *extra]) == 1
        line = error_of(capsys)
        assert str(d) in line and "is a folder" in line and "not even with --overwrite" in line
    assert snapshot(d) == before


def test_bench_out_foreign_file_needs_overwrite(tiny_bundle, tmp_path, capsys):
    f = tmp_path / "results.json"
    f.write_text('{"mine": 1}')
    assert main(["bench", str(tiny_bundle / "tiny_fp32.onnx"), "--runs", "1", "--warmup", "0", "--out", str(f)]) == 1
    assert "--overwrite" in error_of(capsys) and f.read_text() == '{"mine": 1}'
    assert main(["bench", str(tiny_bundle / "tiny_fp32.onnx"), "--runs", "1", "--warmup", "0", "--out", str(f),
                 "--overwrite"]) == 0
    assert "rows" in json.loads(f.read_text())


def test_adapt_out_user_folder_refused_before_training(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    d = user_folder(tmp_path / "existing")
    before = snapshot(d)
    start = time.perf_counter()
    assert main(["adapt", str(ckpt), "--domain", "digits_mirrored_noisy", "--out", str(d)]) == 1
    line = error_of(capsys)
    assert str(d) in line and "did not create" in line and "--overwrite" in line
    assert time.perf_counter() - start < 20 and snapshot(d) == before


def test_train_out_user_folder_refused_before_training(tmp_path, capsys):
    d = user_folder(tmp_path / "D")
    before = snapshot(d)
    assert main(["train", "cnn_digits", "--out", str(d)]) == 1
    assert str(d) in error_of(capsys)
    (d2 := tmp_path / "D2").mkdir()
    (d2 / "report.json").write_text('{"rows": [], "bench": []}')  # an edgekit run folder ...
    user_folder(d2 / "checkpoint")  # ... whose checkpoint/ the user replaced with unrelated files
    before2 = snapshot(d2)
    assert main(["train", "cnn_digits", "--out", str(d2)]) == 1
    line = error_of(capsys)
    assert str(d2 / "checkpoint") in line and "--overwrite" in line
    assert snapshot(d) == before and snapshot(d2) == before2


def test_run_out_user_folder_refused_before_training(tmp_path, capsys):
    d = user_folder(tmp_path / "R")
    before = snapshot(d)
    start = time.perf_counter()
    assert main(["run", "cnn_digits", "--out", str(d)]) == 1
    line = error_of(capsys)
    assert str(d) in line and "did not create" in line and "--overwrite" in line
    assert time.perf_counter() - start < 20 and snapshot(d) == before


def test_convert_into_user_folder_only_with_overwrite_and_keeps_its_files(tiny_pt2, tmp_path, capsys):
    d = user_folder(tmp_path / "mine")
    before = snapshot(d)
    assert convert(tiny_pt2, d) == 1
    line = error_of(capsys)
    assert str(d) in line and "did not create" in line and "--overwrite" in line and snapshot(d) == before
    assert convert(tiny_pt2, d, "--overwrite") == 0
    after = snapshot(d)
    assert {k: after[k] for k in before} == before  # every user file untouched, byte for byte
    added = {Path(k).parts[0] for k in set(after) - set(before)}
    assert "MODEL_CARD.md" in documents(d)  # the bundle's documents are listed in its manifest, nothing else added
    assert added == {"manifest.json", "golden.npz", "tiny_fp32.onnx", *documents(d)}


def test_library_writer_keeps_user_files(tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.io import check_output_dir

    refused = user_folder(tmp_path / "refused")
    before = snapshot(refused)
    with pytest.raises(EdgekitError, match="did not create"):
        tiny_checkpoint(refused)
    assert snapshot(refused) == before
    allowed = user_folder(tmp_path / "allowed")
    check_output_dir(allowed, "checkpoint", overwrite=True)
    tiny_checkpoint(allowed)
    after = snapshot(allowed)
    assert {k: after[k] for k in before} == before and {"model.safetensors", "meta.json"} <= set(after)


def test_out_is_a_file(tiny_pt2, tmp_path, capsys):
    f = tmp_path / "bundle.txt"
    f.write_text("not a folder")
    assert convert(tiny_pt2, f, "--overwrite") == 1
    line = error_of(capsys)
    assert str(f) in line and "is a file" in line and f.read_text() == "not a folder"


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


def test_read_only_out_fails_first(tiny_pt2, tmp_path, capsys):
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "ro,size=64k")
    try:
        start = time.perf_counter()
        assert convert(tiny_pt2, ro / "b") == 1
        line = error_of(capsys)
        assert str(ro / "b") in line and "read-only file system" in line
        assert time.perf_counter() - start < 5 and list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


# --- manifests and concurrent writers --------------------------------------------------------

def test_corrupt_manifest_refused_not_replaced(tiny_pt2, tiny_bundle, tmp_path, capsys):
    b = copy(tiny_bundle, tmp_path)
    (b / "manifest.json").write_text('{"name": "tiny", "artif')
    before = snapshot(b)
    assert convert(tiny_pt2, b) == 1
    line = error_of(capsys)
    assert "manifest.json is damaged" in line and "move it away or use --overwrite" in line
    assert snapshot(b) == before
    assert convert(tiny_pt2, b, "--overwrite") == 0
    assert json.loads((b / "manifest.json").read_text())["artifacts"][0]["status"] == "verified"


def test_manifest_of_another_model_refused(tiny_pt2, tiny_bundle, tmp_path, capsys):
    b = copy(tiny_bundle, tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["source"].update(sha256="f" * 64, path="/elsewhere/other.pt2")
    (b / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(b)
    assert convert(tiny_pt2, b) == 1
    line = error_of(capsys)
    assert "another model" in line and "--overwrite" in line and snapshot(b) == before


def test_sequential_converts_keep_every_entry(tiny_pt2, tiny_bundle, tmp_path):
    b = copy(tiny_bundle, tmp_path)
    assert convert(tiny_pt2, b, "--quant", "int8-weight") == 0
    entries = json.loads((b / "manifest.json").read_text())["artifacts"]
    assert sorted((e["precision"], e["status"]) for e in entries) == [("fp32", "verified"), ("int8-weight", "verified")]
    assert all((b / e["file"]).is_file() for e in entries)
    assert sorted(p.name for p in b.iterdir()) == sorted(["golden.npz", "manifest.json", *(e["file"] for e in entries),
                                                          *documents(b)])


def test_second_writer_fails_clearly_while_the_bundle_is_locked(tiny_pt2, tiny_bundle, tmp_path, capsys):
    from edgekit.artifact import bundle_lock

    b = copy(tiny_bundle, tmp_path)
    before = snapshot(b)
    with bundle_lock(b):
        assert convert(tiny_pt2, b) == 1
    line = error_of(capsys)
    assert f"bundle {b} is being written by another edgekit process (pid {os.getpid()})" in line
    assert snapshot(b) == before  # the lock file is gone again too


# --- debris after crashes ----------------------------------------------------------------------

def test_verify_reports_stray_files_and_next_convert_removes_staging(tiny_pt2, tiny_bundle, tmp_path, capsys):
    b = copy(tiny_bundle, tmp_path)
    (b / ".tiny_fp32.onnx.k1ll3d.partial").mkdir()
    (b / ".tiny_fp32.onnx.k1ll3d.partial" / "tiny_fp32.onnx").write_bytes(b"half")
    (b / "notes.txt").write_text("mine")
    assert main(["verify", str(b), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)["results"]
    stray = [r for r in rows if r["format"] == "bundle"]
    assert len(stray) == 1 and "stray files" in stray[0]["reason"]
    assert ".tiny_fp32.onnx.k1ll3d.partial" in stray[0]["reason"] and "notes.txt" in stray[0]["reason"]
    assert convert(tiny_pt2, b) == 0
    assert sorted(p.name for p in b.iterdir()) == sorted(["golden.npz", "manifest.json", "notes.txt", "tiny_fp32.onnx",
                                                          *documents(b)])
    assert (b / "notes.txt").read_text() == "mine"


def test_injected_enospc_during_onnx_export(tiny_pt2, tmp_path, capsys, monkeypatch):
    from edgekit.converters import CONVERTERS

    def full_disk(source, path, *args, **kwargs):
        Path(path).write_bytes(b"half an onnx")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(CONVERTERS.get("onnx"), "export", full_disk)
    b = tmp_path / "b"
    assert convert(tiny_pt2, b) == 1
    line = error_of(capsys)
    assert "no space left on device while writing" in line and "tiny_fp32.onnx" in line
    assert sorted(p.name for p in b.iterdir()) == ["golden.npz", "manifest.json"]
    (entry,) = json.loads((b / "manifest.json").read_text())["artifacts"]
    assert entry["status"] == "failed" and "no space left" in entry["error"]


def test_ctrl_c_mid_convert_leaves_no_staging_and_no_unrecorded_artifact(tiny_pt2, tiny_bundle, tmp_path, capsys,
                                                                         monkeypatch):
    from edgekit.converters import CONVERTERS

    def interrupted(source, path, *args, **kwargs):
        Path(path).write_bytes(b"half an onnx")
        raise KeyboardInterrupt

    b = copy(tiny_bundle, tmp_path)
    before = snapshot(b)
    monkeypatch.setattr(CONVERTERS.get("onnx"), "export", interrupted)
    assert convert(tiny_pt2, b, "--quant", "int8-weight") == 130
    assert "interrupted" in capsys.readouterr().err
    assert snapshot(b).keys() == before.keys()  # no staging, no lock, no new artifact
    files = {e["file"] for e in json.loads((b / "manifest.json").read_text())["artifacts"]}
    assert files == {"tiny_fp32.onnx"}


def test_full_disk_during_tflite_export_says_so_and_leaves_no_debris(tiny_pt2, tmp_path):
    full = tmp_path / "full"
    _mount_tmpfs(full, "size=48k")  # the tiny model's flatbuffer is ~70 kB
    try:
        done = subprocess.run([sys.executable, "-m", "edgekit.cli", "convert", str(tiny_pt2), "--to", "tflite,onnx",
                               "--out", str(full / "b")], capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, done.stderr[-2000:]
        # LiteRT's flatbuffer is serialized in memory and written from Python, so the full disk is one failed
        # artifact (named, in the manifest) and the next format still runs, instead of LLVM's _exit(1)
        for name in ("tiny_fp32.tflite", "tiny_fp32.onnx"):
            assert f"edgekit: error: no space left on device while writing {full / 'b' / name}" in lines, lines[-4:]
        assert sorted(p.name for p in (full / "b").iterdir()) == ["golden.npz", "manifest.json"]
        entries = json.loads((full / "b" / "manifest.json").read_text())["artifacts"]
        assert [(e["format"], e["status"], e["file"]) for e in entries] == [("tflite", "failed", None),
                                                                            ("onnx", "failed", None)]
        assert all("no space left on device" in e["error"] for e in entries)
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_sigkill_mid_convert_then_next_convert_succeeds_without_debris(tiny_pt2, tmp_path, capsys):
    b = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "convert", str(tiny_pt2), "--to", "onnx",
                             "--out", str(b)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (b.is_dir() and any(p.name.endswith(".partial") for p in b.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "convert ended before it was killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert convert(tiny_pt2, b) == 0
    assert sorted(p.name for p in b.iterdir()) == sorted(["golden.npz", "manifest.json", "tiny_fp32.onnx",
                                                          *documents(b)])
    assert main(["verify", str(b)]) == 0


@pytest.mark.parametrize("make, words", [
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "allow_pickle=False"),
    (lambda p: np.save(p, np.zeros((4, 1, 3), np.float32)), "sample 0 has shape [1, 1, 3]; the model takes [1, 64]"),
])
def test_bad_calibration_data_fails_before_a_bundle_is_started(tiny_pt2, tmp_path, capsys, make, words):
    calib = tmp_path / "calib.npy"
    make(calib)
    out = tmp_path / "b"
    assert main(["convert", str(tiny_pt2), "--to", "onnx", "--quant", "int8", "--calib", str(calib),
                 "--out", str(out)]) == 1
    assert words in capsys.readouterr().err
    assert not out.exists()  # no empty manifest or golden file left behind
