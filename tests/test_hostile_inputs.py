"""Hostile and careless inputs: every bad value is refused up front, in one line naming the flag, key or
file and what is allowed, before anything loads, trains, converts or is written; adb calls are bounded by
--timeout and the adb client dies with edgekit."""

from __future__ import annotations

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

from edgekit.cli import main
from edgekit.converters import CONVERTERS

QUICK_S = 10.0  # a refusal comes before any training or conversion: seconds, not minutes


def refused(capsys, argv: list[str], *fragments: str, cwd: Path | None = None) -> str:
    """Run the CLI in-process; assert exit 1, one `edgekit: error:` line holding ``fragments``, no traceback,
    nothing written to ``cwd``, and that it took seconds. Returns the line."""
    before = sorted(cwd.rglob("*")) if cwd else []
    start = time.monotonic()
    code = main(argv)
    took = time.monotonic() - start
    out, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if line.startswith("edgekit: error:")]
    assert code == 1, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Traceback" not in out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert took < QUICK_S, f"took {took:.1f} s: refused too late"
    if cwd:
        assert sorted(cwd.rglob("*")) == before, "something was written"
    return lines[0]


# ---- flags: refused while parsing, before the model (here a path that does not even exist) is read ----
FLAG_CASES = [
    (["bench", "M", "--threads", "0"], "--threads", ">= 1"),
    (["bench", "M", "--threads", "-1"], "--threads", ">= 1"),
    (["bench", "M", "--warmup", "-5"], "--warmup", ">= 0"),
    (["bench", "M", "--runs", "0"], "--runs", ">= 1"),
    (["bench", "M", "--runs", "many"], "--runs", "not an integer"),
    (["bench", "M", "--device", "adb", "--timeout", "0"], "--timeout", "> 0"),
    (["bench", "M", "--timeout", "nan"], "--timeout", "finite"),
    (["verify", "M", "--threads", "0"], "--threads", ">= 1"),
    (["convert", "M", "--to", ""], "--to", ", ".join(CONVERTERS.names())),
    (["convert", "M", "--to", "onnx,bogus"], "--to", "'bogus'"),
    (["convert", "M", "--threads", "-1"], "--threads", ">= 1"),
    (["convert", "M", "--qat", "-3"], "--qat", ">= 0"),
    (["convert", "M", "--calib-samples", "0"], "--calib-samples", ">= 1"),
    (["convert", "M", "--accuracy-budget", "inf"], "--accuracy-budget", "finite"),
    (["convert", "M", "--npu", "bogus"], "--npu", "VENDOR:SOC"),
    (["convert", "M", "--npu", "acme:SM8650"], "--npu", "'acme'", "qualcomm"),
    (["generate", "M", "--prompt", "a", "--top-k", "-5"], "--top-k", ">= 0"),
    (["generate", "M", "--prompt", "a", "--max-bytes", "-1"], "--max-bytes", ">= 0"),
    (["generate", "M", "--prompt", "a", "--temperature", "nan"], "--temperature", "finite"),
    (["generate", "M", "--prompt", "a", "--temperature", "-1"], "--temperature", ">= 0"),
    (["generate", "M", "--prompt", "a", "--threads", "0"], "--threads", ">= 1"),
    (["adapt", "M", "--domain", "d", "--alpha", "nan"], "--alpha", "finite", "> 0"),
    (["adapt", "M", "--domain", "d", "--alpha", "inf"], "--alpha", "> 0"),
    (["adapt", "M", "--domain", "d", "--rank", "0"], "--rank", ">= 1"),
    (["adapt", "M", "--domain", "d", "--steps", "0"], "--steps", ">= 1"),
    (["adapt", "M", "--domain", "d", "--examples", "-2"], "--examples", ">= 1"),
    (["adapt", "M", "--domain", "d", "--lr", "0"], "--lr", "> 0"),
    (["devices", "--timeout", "-1"], "--timeout", "> 0"),
]


@pytest.mark.parametrize("argv, fragments", [(c[0], c[1:]) for c in FLAG_CASES], ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_bad_flag_values_are_refused_while_parsing(capsys, tmp_path, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    refused(capsys, argv, *fragments, cwd=tmp_path)


# ---- recipes: refused on load, before the dataset is read or anything trains ----
RECIPE_CASES = [
    ("[bench]\nruns = 0", "bench.runs = 0", ">= 1"),
    ("[model]\nwidth = -1", "model.width = -1", "> 0"),
    ("[model]\nblocks = [[64, 0]]", "model.blocks[0][1] = 0", ">= 1"),
    ("[model]\ndropout = 1.5", "model.dropout", "< 1"),
    ("[train]\nmax_seconds = -5", "train.max_seconds = -5", ">= 0"),
    ("[train]\nbatch_size = 0", "train.batch_size = 0", ">= 1"),
    ("[train]\nlr = nan", "train.lr = nan", "finite"),
    ("[train]\nepochs = \"ten\"", "train.epochs", "expected an integer"),
    ("[export]\ncalib_samples = 0", "export.calib_samples = 0", ">= 1"),
    ("[adapt]\nrank = 0", "adapt.rank = 0", ">= 1"),
    ("[data]\ntest_fraction = 1.5", "data.test_fraction", "< 1"),
    ("seed = -3", "seed = -3", ">= 0"),
]


@pytest.mark.parametrize("body, fragments", [(c[0], c[1:]) for c in RECIPE_CASES], ids=[c[1] for c in RECIPE_CASES])
def test_bad_recipe_values_name_the_key_and_range(capsys, tmp_path, body, fragments):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'extends = "cnn_digits"\n{body}\n')
    refused(capsys, ["train", str(recipe), "--out", str(tmp_path / "out")], "bad.toml", *fragments, cwd=tmp_path)


@pytest.mark.parametrize("content, fragment", [(b"\xff\xfe\x00\x81garbage", "not a UTF-8 text file"),
                                               (b"", "missing the [data] table"),
                                               (b"[model\n", "not valid TOML")], ids=["binary", "empty", "broken"])
def test_unreadable_recipe_files_name_the_file(capsys, tmp_path, content, fragment):
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(content)
    refused(capsys, ["train", str(recipe), "--out", str(tmp_path / "out")], "r.toml", fragment, cwd=tmp_path)


# ---- labels and meta files, checked against the model before any conversion ----
def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


META_CASES = [
    ("--labels", "three.txt", "a\nb\nc\n", ["3 labels", "10 output classes", "three.txt"]),
    ("--labels", "bad.json", "[\"a\", ", ["--labels", "bad.json", "not valid JSON"]),
    ("--labels", "bin.txt", b"\xff\xfe\x00\x81", ["--labels", "bin.txt", "not UTF-8"]),
    ("--labels", "empty.txt", "", ["--labels", "empty.txt", "no class names"]),
    ("--meta", "five.json", "{\"labels\": 5}", ["--meta", "five.json", "labels", "list of class-name strings"]),
    ("--meta", "list.json", "[1, 2]", ["--meta", "list.json", "JSON object"]),
    ("--meta", "pre.json", "{\"preprocessing\": \"x\"}", ["--meta", "preprocessing", "JSON object"]),
    ("--meta", "bogus.json", "{\"colour\": 1}", ["--meta", "unknown key 'colour'"]),
]


@pytest.mark.parametrize("flag, name, content, fragments", META_CASES, ids=[c[1] for c in META_CASES])
def test_labels_and_meta_files(capsys, checkpoint, tmp_path, flag, name, content, fragments):
    given = _write(tmp_path / name, content)
    out = tmp_path / "bundle"
    refused(capsys, ["convert", str(checkpoint), "--to", "onnx", flag, str(given), "--out", str(out)], *fragments)
    assert not out.exists()


def test_a_folder_given_as_labels_file(capsys, checkpoint, tmp_path):
    refused(capsys, ["convert", str(checkpoint), "--to", "onnx", "--labels", str(tmp_path), "--out",
                     str(tmp_path / "b")], "--labels", str(tmp_path))


def test_npu_without_tflite_is_refused_before_converting(capsys, checkpoint, tmp_path):
    refused(capsys, ["convert", str(checkpoint), "--to", "onnx", "--npu", "qualcomm:SM8650", "--out",
                     str(tmp_path / "b")], "--npu", "add tflite to --to")
    assert not (tmp_path / "b").exists()


# ---- LoRA: the rank is bounded by the target layers' width, before any data is drawn ----
def test_rank_larger_than_the_narrowest_target_layer(capsys, checkpoint, tmp_path):
    line = refused(capsys, ["adapt", str(checkpoint), "--domain", "digits_mirrored_noisy", "--rank", "100000",
                            "--out", str(tmp_path / "a")], "--rank", "100000", "stem.0", "--rank <= 9")
    assert "width 9" in line  # the stem conv: 1 input channel x 3x3 kernel
    assert not (tmp_path / "a").exists()


def test_adapter_whose_meta_lacks_a_key(capsys, checkpoint, tmp_path):
    from safetensors.torch import save_file
    import torch

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({"x": torch.zeros(1)}, str(adapter / "adapter.safetensors"))
    _write(adapter / "adapter.json", json.dumps({"base_sha256": "0" * 64, "alpha": 16, "target_modules": []}))
    refused(capsys, ["convert", str(checkpoint), "--adapter", str(adapter), "--to", "onnx", "--out",
                     str(tmp_path / "b")], "adapter.json", "lacks 'rank'")


# ---- damaged checkpoints: name the file and the first wrong key or shape ----
def _damaged(checkpoint: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, copy)
    meta = json.loads((copy / "meta.json").read_text())
    change(meta)
    (copy / "meta.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("change, fragments", [
    (lambda m: m["config"].update(width=0.5), ["model.safetensors", "does not match", "shape"]),
    (lambda m: m.pop("weights_sha256"), ["meta.json", "'weights_sha256'", "missing"]),
    (lambda m: m.update(config=[1, 2]), ["meta.json", "'config'", "expected dict"]),
    (lambda m: m["config"].update(num_classes=-4), ["meta.json", "model.num_classes", ">= 1"]),
], ids=["shape", "no-sha256", "config-type", "config-range"])
def test_damaged_checkpoint_meta(capsys, checkpoint, tmp_path, change, fragments):
    ckpt = _damaged(checkpoint, tmp_path, change)
    refused(capsys, ["convert", str(ckpt), "--to", "onnx", "--out", str(tmp_path / "b")], *fragments)
    assert not (tmp_path / "b").exists()


def test_binary_garbage_as_checkpoint_meta(capsys, checkpoint, tmp_path):
    ckpt = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, ckpt)
    (ckpt / "meta.json").write_bytes(b"\x80\x81\xff" * 10)
    refused(capsys, ["adapt", str(ckpt), "--domain", "digits_mirrored_noisy"], "meta.json", "not valid JSON")


# ---- generate: top-k bounded by the vocabulary; a tiny temperature never gives nan ----
def test_generate_top_k_larger_than_the_vocabulary():
    from edgekit.errors import EdgekitError
    from edgekit.generate import StepSession, generate

    logits = np.linspace(-3, 3, 256, dtype=np.float32)[None]
    session = StepSession(lambda inputs: [logits], [], np.dtype(np.int32), "test", "table")
    with pytest.raises(EdgekitError, match=r"--top-k 1000 is larger than the vocabulary \(256"):
        list(generate(session, b"hi", 3, temperature=1.0, top_k=1000))
    assert list(generate(session, b"hi", 3, temperature=1e-300, top_k=5)) == [255, 255, 255]


# ---- adb: --timeout bounds a device binary that never exits; the adb client dies with edgekit ----
@pytest.fixture(scope="module")
def device(adb_server):
    from adb_emulator.testing import connected_device

    with connected_device() as dev:
        yield dev


def _sleeper(folder: Path) -> tuple[Path, Path]:
    from adb_emulator.testing import write_tiny_tflite

    binary = folder / "benchmark_model"
    binary.write_text("#!/bin/sh\n# NOT benchmark_model: a device binary that never exits\nexec sleep 1000\n")
    binary.chmod(0o755)
    return binary, write_tiny_tflite(folder / "tiny.tflite")


def test_adb_timeout_flag_stops_a_binary_that_never_exits(capsys, device, tmp_path):
    binary, model = _sleeper(tmp_path)
    start = time.monotonic()
    code = main(["bench", str(model), "--device", f"adb:{device.serial}", "--benchmark-binary", str(binary),
                 "--timeout", "2"])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("edgekit: error:")]
    assert len(lines) == 1, err
    assert "did not finish within 2 s" in lines[0] and device.serial in lines[0] and "--timeout" in lines[0]
    assert "benchmark_model" in lines[0] and took < 30


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append((int(entry.name), cmdline))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_killed_edgekit_leaves_no_adb_client(device, tmp_path):
    binary, model = _sleeper(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "bench", str(model), "--device",
                             f"adb:{device.serial}", "--benchmark-binary", str(binary), "--timeout", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        deadline, waiting = time.monotonic() + 40, []
        while time.monotonic() < deadline and not waiting:
            waiting = [pid for pid, cmd in _children(proc.pid) if "--graph=" in cmd]  # the run on the device
            time.sleep(0.1)
        assert waiting, "edgekit never started the device run"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in waiting):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in waiting), "the adb client outlived edgekit"
    finally:
        if proc.poll() is None:
            proc.kill()
