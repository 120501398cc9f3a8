"""Transformer family: step vs prefill (PyTorch), the sliding KV-cache window, ViT, config errors, and
the exported prefill + step graphs in ONNX, TFLite and Core ML, verified; streaming through artifacts.

One tiny byte LM and one tiny ViT are trained (a few seconds) and converted once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.artifact import load_manifest
from edgekit.cli import main
from edgekit.converters import CONVERTERS
from edgekit.errors import EdgekitError
from edgekit.models import create_model

from support import train_and_convert

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_context": 48, "export_lengths": [40]}
LENGTH = 40  # the static prefill length exported here (< max_context: the cache is padded)
LM_RECIPE = """
name = "tf_lm_tiny"
[data]
source = "python_stdlib_bytes"
seq_len = 32
train_bytes = 8192
eval_bytes = 2048
[model]
family = "transformer"
head = "byte_lm"
d_model = 32
n_layers = 2
n_heads = 4
max_context = 48
export_lengths = [40]
[train]
epochs = 1
batch_size = 16
lr = 0.01
"""
VIT_RECIPE = """
name = "vit_tiny"
[data]
source = "digits"
image_size = 8
[model]
family = "transformer"
head = "image"
in_channels = 1
num_classes = 10
d_model = 16
n_layers = 1
n_heads = 2
[train]
epochs = 1
"""


@pytest.mark.parametrize("head,extra", [("byte_lm", {}), ("classify", {"in_channels": 6, "num_classes": 4})])
def test_step_reproduces_prefill(head, extra):
    torch.manual_seed(0)
    model = create_model("transformer", {"head": head, **TINY, **extra}).eval()
    inputs = model.head.example_inputs(LENGTH)
    with torch.no_grad():
        out, *states = model.prefill(inputs)
        step_state, per_step = model.init_state(1), []
        for t in range(LENGTH):
            o, *step_state = model.step(model.head.step_slice(inputs, t), *step_state)
            per_step.append(o)
        _, *resumed = model.prefill(inputs[..., :17])  # a prompt's prefill, then steps
        for t in range(17, LENGTH):
            o_resumed, *resumed = model.step(model.head.step_slice(inputs, t), *resumed)
    if head == "byte_lm":  # logits at every position
        assert (torch.stack(per_step, 1) - out).abs().max() <= 1e-5
    else:  # the running classification (causal attention, running mean pool) after the last step
        assert (per_step[-1] - out).abs().max() <= 1e-5
    assert (o_resumed - per_step[-1]).abs().max() <= 1e-5
    for got, again, want in zip(step_state, resumed, states):
        assert (got - want).abs().max() <= 1e-5 and (again - want).abs().max() <= 1e-5
    assert states[2].dtype == torch.int32 and states[2].tolist() == [[LENGTH]]


def test_step_past_max_context_slides_the_window():
    """With one layer a key depends only on its token and position, so after S + 6 steps the ring buffer
    holds exactly the last S tokens, and RoPE (relative) makes the logits those of a prefill over them."""
    torch.manual_seed(0)
    model = create_model("transformer", {**TINY, "n_layers": 1, "max_context": 16, "export_lengths": [16]}).eval()
    tokens = model.head.example_inputs(22)
    with torch.no_grad():
        states = model.init_state(1)
        for t in range(22):
            logits, *states = model.step(tokens[:, t:t + 1], *states)
        window = model.prefill(tokens[:, 6:])[0][:, -1]
    assert (logits - window).abs().max() <= 1e-4
    assert states[2].tolist() == [[22]]


def test_vit_shapes_and_single_graph():
    vit = create_model("transformer", {"head": "image", "in_channels": 1, "num_classes": 10, "image_size": 8,
                                       "patch_size": 2, "d_model": 32, "n_layers": 2}).eval()
    assert vit.head.embed(torch.randn(3, 1, 8, 8)).shape == (3, 16, 32)  # 4x4 patches of 2x2 pixels
    assert vit(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    graphs = vit.export_graphs()
    assert [g.name for g in graphs] == [""] and graphs[0].labelled
    assert graphs[0].input_names == ("image",) and graphs[0].example_inputs[0].shape == (1, 1, 8, 8)


def test_step_graph_follows_the_convention():
    graphs = create_model("transformer", {"head": "byte_lm", **TINY}).export_graphs((24, 40))
    assert [g.name for g in graphs] == ["prefill_L24", "prefill_L40", "step"]
    step = graphs[-1]
    assert step.input_names == ("tokens", "k_cache", "v_cache", "position")
    assert step.output_names == ("logits", "k_cache_out", "v_cache_out", "position_out")
    token, k_cache, _, position = step.example_inputs
    assert token.dtype == torch.int32 and position.dtype == torch.int32 and position.shape == (1, 1)
    assert k_cache.shape == (1, 2, 4, 48, 8)  # (B, layers, heads, max_context, head_dim)
    tokens = torch.arange(400).remainder(256).reshape(5, 80)
    tok, k, _, pos = step.samples(tokens)[3]
    assert tok.shape == (1, 1) and k.abs().sum() > 0 and 1 <= int(pos) < LENGTH


def test_config_errors_are_one_line():
    with pytest.raises(EdgekitError, match="d_model = 30 is not divisible by n_heads = 4"):
        create_model("transformer", {"d_model": 30, "n_heads": 4})
    with pytest.raises(EdgekitError, match="unknown head 'seq2seq'.*byte_lm, classify, image"):
        create_model("transformer", {"head": "seq2seq"})
    with pytest.raises(EdgekitError, match="image_size = 8 is not a multiple of patch_size = 3"):
        create_model("transformer", {"head": "image", "image_size": 8, "patch_size": 3})
    with pytest.raises(EdgekitError, match="export length 64 is longer than max_context = 48"):
        create_model("transformer", {**TINY, "export_lengths": [64]})
    model = create_model("transformer", TINY)
    with pytest.raises(EdgekitError, match="61 steps is longer than max_context = 48"):
        model.prefill(model.head.example_inputs(61))
    with pytest.raises(EdgekitError, match="prefill length 64 is longer than max_context = 48"):
        model.export_graphs((64,))


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_and_convert(tmp_path_factory.mktemp("transformer_lm"), LM_RECIPE, "tf_lm_tiny")


def test_every_lm_graph_in_every_format_is_verified(lm_bundle):
    _, bundle = lm_bundle
    files = {a.file: a for a in load_manifest(bundle).artifacts}
    for graph in (f"prefill_L{LENGTH}", "step"):
        for suffix in (".onnx", ".tflite", ".mlpackage"):
            entry = files[f"tf_lm_tiny_{graph}_fp32{suffix}"]
            assert entry.graph == graph and entry.status == "verified", entry.error
            assert entry.verification["max_abs_diff"] <= 1e-4 and entry.verification["inputs"] >= 16
        assert files[f"tf_lm_tiny_{graph}_fp32.mlpackage"].verification["method"] == "mil-reference"
    step = files["tf_lm_tiny_step_fp32.onnx"]
    assert [t["name"] for t in step.inputs] == ["tokens", "k_cache", "v_cache", "position"]
    assert [t["name"] for t in step.outputs] == ["logits", "k_cache_out", "v_cache_out", "position_out"]
    for fmt in (".onnx", ".tflite", ".mlpackage"):  # tokens and position stay int32 in every format
        assert [t["dtype"] for t in files[f"tf_lm_tiny_step_fp32{fmt}"].inputs][::3] == ["int32", "int32"]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_step_artifact_token_by_token_reproduces_full_sequence_logits(lm_bundle, fmt):
    from edgekit.checkpoint import load_checkpoint

    checkpoint, bundle = lm_bundle
    manifest = load_manifest(bundle)
    step = manifest.entry(fmt, "step")
    run_step = CONVERTERS.get(fmt).runner(bundle / step.file, 2)
    run_prefill = CONVERTERS.get(fmt).runner(bundle / manifest.entry(fmt, f"prefill_L{LENGTH}").file, 2)
    tokens = np.frombuffer(b"def main(argv=None):\n    return parse(argv)"[:LENGTH], dtype=np.uint8)
    tokens = tokens.astype(np.int32)[None]  # (1, L)
    with torch.no_grad():
        torch_logits = load_checkpoint(checkpoint).model(torch.from_numpy(tokens)).numpy()  # (1, L, 256)
    prefill_logits, k_cache, v_cache, position = run_prefill([tokens])
    states = [np.zeros(t["shape"], t["dtype"]) for t in step.inputs[1:]]  # what `edgekit generate` starts from
    per_step = []
    for t in range(LENGTH):
        out = run_step([tokens[:, t:t + 1], *states])
        per_step.append(out[0])
        states = out[1:]
    assert np.abs(np.stack(per_step, 1) - torch_logits).max() <= 1e-4
    assert np.abs(prefill_logits - torch_logits).max() <= 1e-4
    assert np.abs(states[0] - k_cache).max() <= 1e-4 and np.abs(states[1] - v_cache).max() <= 1e-4
    assert states[2].item() == position.item() == LENGTH


def test_generate_streams_the_same_bytes_in_every_runtime_past_max_context(lm_bundle, capsys):
    checkpoint, bundle = lm_bundle
    texts = {}
    for target, fmt in ((checkpoint, None), (bundle, "onnx"), (bundle, "tflite")):
        args = [str(target), "--prompt", "import os\n", "--max-bytes", "60", "--json"]  # 70 bytes > 48 slots
        assert main(["generate", *args, *(["--format", fmt] if fmt else [])]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["bytes"] == 60
        texts[result["runtime"]] = result["text"]
    assert set(texts) == {"torch-eager", "onnxruntime", "litert-interpreter"}
    assert len(set(texts.values())) == 1, texts


def test_vit_converts_to_every_format_verified(tmp_path):
    _, bundle = train_and_convert(tmp_path, VIT_RECIPE, "vit_tiny")
    manifest = load_manifest(bundle)
    assert sorted(a.format for a in manifest.artifacts) == CONVERTERS.names()
    assert {"onnx", "tflite", "coreml"} <= {a.format for a in manifest.artifacts}  # the built-ins, at least
    for entry in manifest.artifacts:
        assert entry.status == "verified", entry.error
        assert entry.verification["max_abs_diff"] <= 1e-4 and entry.verification["inputs"] == 594
