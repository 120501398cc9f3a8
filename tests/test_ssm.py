"""SSM family without export: SSD form vs the sequential reference, step vs prefill, heads, data, tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekit.data import load_dataset
from edgekit.errors import EdgekitError
from edgekit.models import create_model
from edgekit.models.ssm import ssd_chunked, ssm_scan_reference
from edgekit.training.tasks import TASKS

TINY = {"d_model": 32, "n_layers": 2, "head_dim": 16, "d_state": 8, "chunk": 16, "export_lengths": [40]}


def _scan_inputs(b: int, length: int, heads: int = 3, p: int = 4, n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, heads, p, generator=g)
    dt = F.softplus(torch.randn(b, length, heads, generator=g) - 1)
    A = -torch.rand(heads, generator=g) * 4 - 0.1
    B, C = torch.randn(b, length, n, generator=g) * 0.5, torch.randn(b, length, n, generator=g) * 0.5
    h0 = torch.randn(b, heads, p, n, generator=g)
    return x, dt, A, B, C, h0


@pytest.mark.parametrize("length,chunk", [(64, 16), (50, 16), (7, 16), (130, 64)])
def test_ssd_chunked_equals_reference_scan(length, chunk):
    x, dt, A, B, C, h0 = _scan_inputs(2, length)
    y_ref, h_ref = ssm_scan_reference(x, dt, A, B, C, h0)
    y, h = ssd_chunked(x, dt, A, B, C, h0, chunk=chunk)
    assert y.shape == y_ref.shape and h.shape == h_ref.shape
    assert (y - y_ref).abs().max() <= 1e-5 and (h - h_ref).abs().max() <= 1e-5


@pytest.mark.parametrize("head,extra", [("byte_lm", {}), ("classify", {"in_channels": 6, "num_classes": 4})])
def test_model_ssd_matches_reference_and_step_reproduces_prefill(head, extra):
    torch.manual_seed(0)
    model = create_model("ssm", {"head": head, **TINY, **extra}).eval()
    inputs = model.head.example_inputs(40)
    with torch.no_grad():
        out, *states = model.prefill(inputs)
        ref, *ref_states = model.prefill(inputs, scan=ssm_scan_reference)
        assert (out - ref).abs().max() <= 1e-5
        step_state, per_step = model.init_state(1), []
        for t in range(40):
            o, *step_state = model.step(model.head.step_slice(inputs, t), *step_state)
            per_step.append(o)
    if head == "byte_lm":  # logits at every position
        assert (torch.stack(per_step, 1) - out).abs().max() <= 1e-5
    else:  # the running classification after the last step
        assert (per_step[-1] - out).abs().max() <= 1e-5
    for got, want in zip(step_state, states):
        assert (got - want).abs().max() <= 1e-5


def test_graphs_of_ssm_and_cnn():
    lm = create_model("ssm", {"head": "byte_lm", **TINY})
    graphs = lm.export_graphs((32, 64))
    assert [g.name for g in graphs] == ["prefill_L32", "prefill_L64", "step"]
    step = graphs[-1]
    assert step.input_names == ("tokens", "conv_state", "ssm_state")
    assert step.output_names == ("logits", "conv_state_out", "ssm_state_out")
    assert step.example_inputs[0].dtype == torch.int32 and step.example_inputs[0].shape == (1, 1)
    assert graphs[0].example_inputs[0].shape == (1, 32)
    cnn = create_model("cnn").export_graphs()
    assert [g.name for g in cnn] == [""] and cnn[0].labelled


def test_step_samples_are_real_states_after_prefixes():
    model = create_model("ssm", {"head": "byte_lm", **TINY}).eval()
    tokens = torch.arange(400).remainder(256).reshape(5, 80)
    samples = model.export_graphs()[-1].samples(tokens)
    assert 1 < len(samples) <= 32
    tok, conv, ssm = samples[3]
    assert tok.shape == (1, 1) and tok.dtype == torch.int32 and ssm.abs().sum() > 0


def test_config_errors_are_one_line():
    with pytest.raises(EdgekitError, match="not a multiple of head_dim"):
        create_model("ssm", {"d_model": 40, "head_dim": 32})
    with pytest.raises(EdgekitError, match="unknown sequence head 'seq2seq'.*byte_lm.*classify"):
        create_model("ssm", {"head": "seq2seq"})


def test_bits_per_byte_is_cross_entropy_in_bits():
    model = create_model("ssm", {"head": "byte_lm", **TINY}).eval()
    data = load_dataset("python_stdlib_bytes", seq_len=32, train_bytes=4096, eval_bytes=2048)
    metrics = TASKS.get("byte_lm").evaluate(model, data.test)
    with torch.no_grad():
        ce = F.cross_entropy(model(data.test.inputs).flatten(0, 1), data.test.labels.flatten())
    assert metrics["bits_per_byte"] == pytest.approx(float(ce) / math.log(2), rel=1e-5)
    assert 7.0 < metrics["bits_per_byte"] < 9.0  # untrained: about log2(256) = 8


def test_stdlib_corpus_is_deterministic_and_split_by_file():
    from edgekit.data.bytes_corpus import split_files, stdlib_files

    _, files = stdlib_files()
    parts = split_files(files, seed=0, held_out_fraction=0.05)
    assert not set(parts["train"]) & set(parts["test"]) and not set(parts["val"]) & set(parts["test"])
    assert sum(len(v) for v in parts.values()) == len(files)
    a = load_dataset("python_stdlib_bytes", seq_len=64, train_bytes=8192, eval_bytes=1024)
    b = load_dataset("python_stdlib_bytes", seq_len=64, train_bytes=8192, eval_bytes=1024)
    assert a.meta["sha256"] == b.meta["sha256"] and a.task == "byte_lm"
    assert a.train.inputs.shape == (127, 64) and torch.equal(a.train.inputs[0, 1:], a.train.labels[0, :-1])


def test_basic_motions_keeps_the_official_test_split():
    pytest.importorskip("sktime")
    data = load_dataset("basic_motions", window=64, stride=12)
    assert data.labels == ["badminton", "running", "standing", "walking"]
    assert data.test.inputs.shape == (40, 6, 100) and data.val.inputs.shape == (8, 6, 100)
    assert data.train.inputs.shape[1:] == (6, 64) and len(data.train) == 32 * 4
    assert abs(float(data.train.inputs.mean())) < 0.2 and np.allclose(np.bincount(data.test.labels), 10)


def test_lm_training_lowers_bits_per_byte(tmp_path):
    from edgekit.recipe import TrainSpec
    from edgekit.training.loop import train_model

    data = load_dataset("python_stdlib_bytes", seq_len=32, train_bytes=16384, eval_bytes=2048)
    model = create_model("ssm", {"head": "byte_lm", **TINY})
    before = TASKS.get("byte_lm").evaluate(model, data.test)["bits_per_byte"]
    result = train_model(model, data, TrainSpec(epochs=1, batch_size=16, lr=0.01, grad_clip=1.0), seed=0)
    assert result.metrics["test_bits_per_byte"] < before - 1.0
    assert {"val_bits_per_byte", "test_bits_per_byte", "test_loss"} <= set(result.metrics)
