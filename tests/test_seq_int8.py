"""Static int8 (W8A8) of the sequence families: what the annotation passes keep float (the SSM recurrence,
RMS-norm inputs), the LiteRT softplus lowering, and a tiny trained SSM classifier in every format, verified.

The byte-LM prefill + step graphs of both families are converted to int8 in every format by
tests/test_conformance.py; here are the parts it does not see.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit
from edgekit.artifact import load_manifest
from edgekit.converters import CONVERTERS
from edgekit.graph import ModelSource
from edgekit.models import create_model
from edgekit.quant.calibrate import calibrate
from edgekit.quant.pt2e import float_ops_left
from edgekit.quant.spec import QuantSpec

TINY_SSM = {"head": "byte_lm", "d_model": 32, "n_layers": 1, "head_dim": 16, "d_state": 8, "chunk": 8,
            "export_lengths": [16]}
SCAN = "edgekit.models.ssm.SelectiveScan"


def _source(graph) -> ModelSource:
    return ModelSource(graph.name, graph.module, graph.example_inputs, graph.input_names, graph.output_names,
                       "0" * 64, "test", "checkpoint", graph=graph.name)


def _is_q(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and "quantize_per_tensor" in str(node.target)


def _users_through_qdq(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The users of ``node``, looking through quantize → dequantize pairs."""
    found = []
    for user in node.users:
        found += _users_through_qdq(user) if "quantize" in str(user.target) else [user]
    return found


def _producers_through_qdq(node: torch.fx.Node) -> set[torch.fx.Node]:
    """``node`` and, when it is a quantize or dequantize, what it reads from."""
    found = {node}
    while "quantize" in str(node.target) and isinstance(node.args[0], torch.fx.Node):
        node = node.args[0]
        found.add(node)
    return found


def _in_scan(node: torch.fx.Node) -> bool:
    return any(SCAN in str(entry[1]) for entry in (node.meta.get("nn_module_stack") or {}).values())


@pytest.mark.parametrize("method", ["histogram", "nncf"])
def test_ssm_recurrence_and_norm_inputs_stay_float_projections_int8(method):
    """Every graph of a tiny SSM LM: no op of the selective scan reads or writes an int8 edge, no RMS norm
    takes an int8 input (x · rsqrt(mean(x²))), and every linear still has int8 weights; for both PT2E
    observers and NNCF (they share the quantizer's annotation passes)."""
    torch.manual_seed(0)
    model = create_model("ssm", TINY_SSM).eval()
    for graph in model.export_graphs():
        samples = [graph.example_inputs] * 4
        quant = calibrate(_source(graph), QuantSpec.parse("int8", calib_method=method), samples)
        gm = quant.converted(fold_quantize=False)
        scan_ops = [n for n in gm.graph.nodes if n.op == "call_function" and _in_scan(n) and not _is_q(n)]
        assert len(scan_ops) >= 5, graph.name  # the scan is found: its matmuls, products and decays
        touched = [n.name for n in scan_ops if any(_is_q(u) for u in n.users)
                   or any(isinstance(a, torch.fx.Node) and "dequantize" in str(a.target) for a in n.args)]
        assert not touched, (graph.name, touched)
        rsqrts = [n for n in gm.graph.nodes if n.target is torch.ops.aten.rsqrt.default]
        assert len(rsqrts) == 3, graph.name  # block norm, gated out norm, head norm
        for rsqrt in rsqrts:
            (mul,) = _users_through_qdq(rsqrt)
            x = next(a for a in mul.args if rsqrt not in _producers_through_qdq(a))
            assert "dequantize" not in str(x.target), (graph.name, mul.name)  # x · rsqrt(…) takes float x
            assert any(_is_q(u) for u in mul.users), (graph.name, mul.name)  # its output is int8 again
        # the linears are int8; only the depthwise conv1d stays float (annotations._keep_conv1d_float)
        assert [name for name in float_ops_left(gm) if not name.endswith(".conv")] == [], graph.name


def test_softplus_between_int8_ops_keeps_its_input_range_in_tflite(tmp_path):
    """LiteRT lowers softplus to select(x > 20, x, log1p(exp(x))) and used to give x the scale of softplus's
    output: an input in [-9, -1] became 0 and every output softplus(0) = 0.69 (the SSM's Δ). Softplus's input
    now gets its own scale, and the int8 TFLite model agrees with PyTorch."""

    class DeltaGate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj, self.gate = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
            self.bias = torch.nn.Parameter(torch.tensor([-7.0, -5.0, -4.0, -3.0]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.softplus(self.proj(x) + self.bias) * self.gate(x)

    torch.manual_seed(0)
    model = DeltaGate().eval()
    calib = [(torch.randn(1, 16, 8),) for _ in range(16)]
    source = ModelSource("gate", model, calib[0], ("x",), ("y",), "0" * 64, "m", "pt2")
    spec = QuantSpec.parse("int8")
    path = tmp_path / "gate_int8.tflite"
    tflite = CONVERTERS.get("tflite")
    tflite.export(source, path, spec, {}, prepared=calibrate(source, spec, calib))
    run = tflite.runner(path, 1)
    x = torch.randn(1, 16, 8)
    want = model(x).detach().numpy()
    got = run([x.numpy()])[0]
    assert np.abs(want).max() > 0.01  # a meaningful reference: softplus of [-9, -1] is not zero
    snr = 10 * np.log10((want ** 2).sum() / ((want - got) ** 2).sum())
    assert snr > 20, snr  # measured: -15 dB without the softplus pass


SSM_CLASSIFIER = """
extends = "ssm_motion"
name = "ssm_motion_tiny"
[data]
stride = 32
[model]
d_model = 16
n_layers = 1
d_state = 4
head_dim = 8
chunk = 16
[train]
epochs = 10
"""


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("seq_int8")
    (out / "ssm_motion_tiny.toml").write_text(SSM_CLASSIFIER)
    trained = edgekit.train(out / "ssm_motion_tiny.toml", out / "run")
    spec = QuantSpec.parse("int8", calib_samples=16)
    return edgekit.convert(trained.checkpoint, to=CONVERTERS.names(), quant=spec, out=out / "bundle").path


def test_tiny_ssm_classifier_int8_verifies_in_every_format_with_float_state(classifier_bundle):
    """Prefill and step of a trained SSM classifier in every format: verified (per-output criteria, accuracy
    drop ≤ 1 point); in TFLite the recurrent ssm_state stays float32 in and out, and the int8 conv_state goes
    out with the scale it came in with (an app feeds it back as is)."""
    manifest = load_manifest(classifier_bundle)
    entries = [e for e in manifest.to_dict()["artifacts"]]
    assert {(e["format"], e["graph"]) for e in entries} == {(f, g) for f in CONVERTERS.names()
                                                           for g in ("prefill_L100", "step")}
    for entry in entries:
        assert entry["status"] == "verified", f"{entry['format']} {entry['graph']}: {entry['error']}"
        check = entry["verification"]
        assert check["status"] == "passed" and check["inputs"] >= 16, check
        if entry["graph"] == "prefill_L100":
            assert check["accuracy"] > 0.5 and check["accuracy_drop"] <= 0.01, check
    step = next(e for e in entries if e["format"] == "tflite" and e["graph"] == "step")
    ins, outs = ({t["name"]: t for t in step[side]} for side in ("inputs", "outputs"))
    assert ins["ssm_state"]["dtype"] == outs["ssm_state_out"]["dtype"] == "float32"
    assert ins["conv_state"]["dtype"] == "int8"
    assert ins["conv_state"]["quantization"] == outs["conv_state_out"]["quantization"]
