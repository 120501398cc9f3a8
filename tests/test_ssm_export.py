"""SSM export: prefill + step graphs in ONNX, TFLite and Core ML, verified; streaming through artifacts.

One tiny byte LM is trained (a few seconds) and converted once; every test reads that bundle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.artifact import load_manifest
from edgekit.cli import main
from edgekit.converters import CONVERTERS

from support import train_and_convert

LENGTH = 48  # the static prefill length exported here (not a multiple of the chunk: padding is exercised)
RECIPE = f"""
name = "ssm_lm_tiny"
[data]
source = "python_stdlib_bytes"
seq_len = 32
train_bytes = 8192
eval_bytes = 2048
[model]
family = "ssm"
head = "byte_lm"
d_model = 32
n_layers = 2
head_dim = 16
d_state = 8
chunk = 32
export_lengths = [{LENGTH}]
[train]
epochs = 1
batch_size = 16
lr = 0.01
"""


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_and_convert(tmp_path_factory.mktemp("ssm"), RECIPE, "ssm_lm_tiny")


def test_every_graph_in_every_format_is_verified(lm_bundle):
    _, bundle = lm_bundle
    manifest = load_manifest(bundle)
    files = {a.file: a for a in manifest.artifacts}
    for graph in (f"prefill_L{LENGTH}", "step"):
        for fmt, suffix in (("onnx", ".onnx"), ("tflite", ".tflite")):
            entry = files[f"ssm_lm_tiny_{graph}_fp32{suffix}"]
            assert entry.graph == graph and entry.status == "verified", entry.error
            v = entry.verification
            assert v["max_abs_diff"] <= 1e-4 and v["inputs"] >= 16 and "test split" in v["input_source"]
        coreml = files[f"ssm_lm_tiny_{graph}_fp32.mlpackage"]
        assert coreml.status == "verified" and coreml.verification["method"] == "mil-reference"
        assert coreml.verification["max_abs_diff"] <= 1e-4
        assert coreml.inputs[0]["dtype"] == "int32"
        assert (bundle / f"golden_{graph}.npz").is_file()
    step = files["ssm_lm_tiny_step_fp32.onnx"]
    assert [t["name"] for t in step.inputs] == ["tokens", "conv_state", "ssm_state"]
    assert [t["name"] for t in step.outputs] == ["logits", "conv_state_out", "ssm_state_out"]
    assert manifest.to_dict()["artifacts"][0]["graph"]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_step_artifact_token_by_token_reproduces_prefill_artifact(lm_bundle, fmt):
    _, bundle = lm_bundle
    manifest = load_manifest(bundle)
    prefill = manifest.entry(fmt, f"prefill_L{LENGTH}")
    step = manifest.entry(fmt, "step")
    run_prefill = CONVERTERS.get(fmt).runner(bundle / prefill.file, 2)
    run_step = CONVERTERS.get(fmt).runner(bundle / step.file, 2)
    tokens = np.frombuffer(b"def main(argv=None):\n    return parse(argv)  # ok"[:LENGTH], dtype=np.uint8)
    tokens = tokens.astype(np.int32)[None]  # (1, L)
    logits, conv, ssm = run_prefill([tokens])
    states = [np.zeros(t["shape"], np.float32) for t in step.inputs[1:]]
    per_step = []
    for t in range(LENGTH):
        out = run_step([tokens[:, t:t + 1], *states])
        per_step.append(out[0])
        states = out[1:]
    assert np.abs(np.stack(per_step, 1) - logits).max() <= 1e-4
    assert np.abs(states[0] - conv).max() <= 1e-4 and np.abs(states[1] - ssm).max() <= 1e-4


def test_generate_streams_the_same_bytes_in_every_runtime(lm_bundle, capsys):
    checkpoint, bundle = lm_bundle
    texts = {}
    for target, fmt in ((checkpoint, None), (bundle, "onnx"), (bundle, "tflite")):
        args = [str(target), "--prompt", "import os\n", "--max-bytes", "24", "--json"]
        assert main(["generate", *args, *(["--format", fmt] if fmt else [])]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["bytes"] == 24
        texts[result["runtime"]] = result["text"]
    assert set(texts) == {"torch-eager", "onnxruntime", "litert-interpreter"}
    assert len(set(texts.values())) == 1, texts


def test_generate_errors_are_one_line(lm_bundle, tmp_path, capsys):
    checkpoint, bundle = lm_bundle
    assert main(["generate", str(bundle), "--prompt", "x", "--format", "coreml"]) == 1
    assert "Core ML prediction needs macOS" in capsys.readouterr().err
    assert main(["generate", str(checkpoint), "--prompt", "x", "--format", "onnx"]) == 1
    assert "needs a bundle" in capsys.readouterr().err


def test_verify_bundle_reruns_every_graph(lm_bundle, capsys):
    _, bundle = lm_bundle
    assert main(["verify", str(bundle), "--json"]) == 0
    out = capsys.readouterr().out
    assert "prefill_L48" in out and "step" in out


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS: the artifact is timed there")
def test_bench_graph_records_a_runtime_that_cannot_run_here_as_not_run():
    torch.manual_seed(0)
    model = edgekit.create_model("ssm", head="byte_lm", d_model=16, n_layers=1, head_dim=8, d_state=4, chunk=8,
                                 export_lengths=[8]).eval()
    coreml = edgekit.bench_graph(model, "step", formats=["coreml"], threads=1, warmup=0, runs=1)["coreml"]
    assert "error" not in coreml, coreml
    assert coreml["status"].startswith("not run: ") and "macOS" in coreml["status"]
    assert coreml["size_bytes"] > 0 and "median_ms" not in coreml
