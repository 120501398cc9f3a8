"""Core ML stateful step graph (iOS 18 ``ct.StateType``): converts, declares its states, and streams.

Tiny untrained models on real bytes (the recipe's test split); parity is arithmetic, so training adds
nothing. The SSM goes through `edgekit convert`; the Transformer through the converter's extra graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools")

from edgekit.artifact import load_manifest  # noqa: E402
from edgekit.checkpoint import save_checkpoint  # noqa: E402
from edgekit.cli import main  # noqa: E402
from edgekit.converters.coreml.mil_reference import MilEvaluationError, MilEvaluator, evaluate  # noqa: E402
from edgekit.verify import tolerance_for  # noqa: E402

LENGTH = 16  # prefill length: the stateful graph is verified over this many consecutive steps
DATA = {"source": "python_stdlib_bytes", "seq_len": 32, "train_bytes": 4096, "eval_bytes": 2048}
SSM = {"head": "byte_lm", "d_model": 32, "n_layers": 2, "head_dim": 16, "d_state": 8, "chunk": 16,
       "export_lengths": [LENGTH]}
TRANSFORMER = {"head": "byte_lm", "d_model": 32, "n_layers": 2, "n_heads": 2, "max_context": 32,
               "export_lengths": [LENGTH]}


def _fp16_allowed(scale: float) -> float:
    """The max |Δ| the fp16 row allows next-token logits whose largest |PyTorch value| is ``scale``."""
    return tolerance_for("fp16").criteria("logits", "tokens").max_abs_diff(scale)


def _checkpoint(out: Path, family: str, config: dict) -> Path:
    from edgekit.models import create_model

    torch.manual_seed(0)
    meta = {"recipe": {"name": f"{family}_tiny", "seed": 0, "data": DATA}}
    return save_checkpoint(create_model(family, config), out / "checkpoint", meta)


@pytest.fixture(scope="module")
def ssm_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("ssm_stateful")
    checkpoint = _checkpoint(out, "ssm", SSM)
    assert main(["convert", str(checkpoint), "--to", "coreml", "--out", str(out / "bundle")]) == 0
    return checkpoint, out / "bundle"


def _bytes(text: bytes) -> torch.Tensor:
    """Real bytes as a (1, L) int32 token window."""
    return torch.from_numpy(np.frombuffer(text, dtype=np.uint8).astype(np.int32))[None]


def _stream(model, window: torch.Tensor, evaluator: MilEvaluator, explicit: tuple[str, ...]) -> tuple[list[float], float]:
    """Max |Δ| per step of the stateful program (one MilState) vs PyTorch's step with explicit states, and
    the largest |PyTorch logit| over the steps (the scale the tolerance is relative to)."""
    state, states, diffs, scale = evaluator.make_state(), model.init_state(1), [], 0.0
    names = model.state_names
    with torch.no_grad():
        for t in range(window.shape[-1]):
            x_t = model.head.step_slice(window, t)
            feed = {model.head.input_name: x_t.numpy()} | {n: s.numpy() for n, s in zip(names, states) if n in explicit}
            got = evaluator.run(feed, state)[model.head.output_name]
            out, *states = model.step(x_t, *states)
            diffs.append(float(np.abs(got.astype(np.float64) - out.numpy()).max()))
            scale = max(scale, float(out.abs().max()))
    return diffs, scale


def test_ssm_convert_writes_a_verified_stateful_step(ssm_bundle) -> None:
    _, bundle = ssm_bundle
    entry = {a.file: a for a in load_manifest(bundle).artifacts}["ssm_tiny_step_stateful_fp16.mlpackage"]
    assert entry.status == "verified" and entry.graph == "step_stateful" and entry.precision == "fp16", entry.error
    v = entry.verification
    assert v["method"] == "mil-reference" and v["inputs"] == LENGTH and "consecutive steps" in v["input_source"]
    assert v["status"] == "passed" and v["top1_agreement"] == 1.0
    assert all(o["max_abs_diff"] <= _fp16_allowed(o["scale"]) for o in v["outputs"])
    assert [t["name"] for t in entry.inputs] == ["tokens"] and [t["name"] for t in entry.outputs] == ["logits"]
    assert [(s["name"], s["dtype"]) for s in entry.states] == [("conv_state", "float16"), ("ssm_state", "float16")]
    assert entry.states[0]["shape"] == [1, 2, 32 * 2 + 2 * 8, 3] and entry.states[1]["shape"] == [1, 2, 4, 16, 8]
    assert "makeState" in entry.usage and "iOS 18" in entry.usage
    assert (bundle / "golden_step_stateful.npz").is_file()
    from edgekit.converters import CONVERTERS

    metadata = json.loads(CONVERTERS.get("coreml").inspect(bundle / entry.file).metadata["edgekit"])
    assert metadata["graph"] == "step_stateful" and metadata["precision"] == "fp16"
    others = {a.file for a in load_manifest(bundle).artifacts}
    assert others == {"ssm_tiny_prefill_L16_fp32.mlpackage", "ssm_tiny_step_fp32.mlpackage", entry.file}


def test_ssm_stateful_program_streams_like_pytorch_step(ssm_bundle) -> None:
    from edgekit.checkpoint import load_checkpoint

    checkpoint, bundle = ssm_bundle
    model = load_checkpoint(checkpoint).model
    evaluator = MilEvaluator(bundle / "ssm_tiny_step_stateful_fp16.mlpackage")
    assert {n: s.shape for n, s in evaluator.states.items()} == {
        n: tuple(s.shape) for n, s in zip(model.state_names, model.init_state(1))}
    window = _bytes(b"def stream(self, x):\n    return x")
    diffs, scale = _stream(model, window, evaluator, explicit=())
    assert len(diffs) >= 8 and max(diffs) <= _fp16_allowed(scale), diffs
    with pytest.raises(MilEvaluationError, match="stateful"):
        evaluator.run({"tokens": window[:, :1].numpy()})  # no state given


def test_edgekit_verify_rechecks_the_stateful_artifact(ssm_bundle, capsys) -> None:
    _, bundle = ssm_bundle
    assert main(["verify", str(bundle)]) == 0
    assert "step_stateful" in capsys.readouterr().out


def test_transformer_stateful_step_keeps_int32_position_explicit(tmp_path: Path) -> None:
    """Core ML states are fp16 only: the caches are held, the int32 position stays an input/output."""
    from edgekit.conversion import convert_one
    from edgekit.artifact import Manifest
    from edgekit.converters import CONVERTERS
    from edgekit.quant import QuantSpec
    from edgekit.quant.plan import QuantPlan
    from edgekit.sources import graph_sources, load_source, reference_for

    sources = graph_sources(load_source(_checkpoint(tmp_path, "transformer", TRANSFORMER)))
    prefill = next(s for s in sources if s.graph.startswith("prefill"))
    coreml = CONVERTERS.get("coreml")
    graphs = [(prefill, reference_for(prefill))] + [(s, None) for s in sources if s.graph == "step"]
    (extra,) = coreml.extra_graphs(graphs, QuantSpec.parse("fp32"))
    assert extra.source.states == ("k_cache", "v_cache") and extra.source.input_names == ("tokens", "position")
    manifest = Manifest("transformer_tiny", {}, None, None, {})
    fp16 = QuantPlan(QuantSpec.parse("fp16"))
    entry = convert_one(coreml, extra.source, tmp_path, manifest, extra.reference, fp16, threads=1)
    assert entry.status == "verified", entry.error
    assert [s["name"] for s in entry.states] == ["k_cache", "v_cache"]
    assert [(t["name"], t["dtype"]) for t in entry.inputs] == [("tokens", "int32"), ("position", "int32")]
    assert [t["name"] for t in entry.outputs] == ["logits", "position_out"]
    assert "position stays an explicit input" in entry.usage
    evaluator = MilEvaluator(tmp_path / entry.file)
    window = _bytes(b"for i in range(10):")
    diffs, scale = _stream(extra.source.module.model, window, evaluator, explicit=("position",))
    assert len(diffs) >= 8 and max(diffs) <= _fp16_allowed(scale), diffs


def test_quantized_runs_offer_no_stateful_graph() -> None:
    from edgekit.converters import CONVERTERS
    from edgekit.quant import QuantSpec

    assert CONVERTERS.get("coreml").extra_graphs([], QuantSpec.parse("int8")) == []
    assert CONVERTERS.get("onnx").extra_graphs([], QuantSpec.parse("fp32")) == []


def test_state_kernels_carry_state_across_calls() -> None:
    """A hand-written accumulator: read_state → add → coreml_update_state, fp16 state, three calls."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(4,), dtype=types.fp16),
                             mb.StateTensorSpec(shape=(4,), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def prog(x, acc):
        total = mb.add(x=mb.read_state(input=acc), y=x)
        return mb.mul(x=mb.coreml_update_state(state=acc, value=total), y=np.float16(2.0))

    evaluator = MilEvaluator(prog)
    assert list(evaluator.states) == ["acc"] and list(evaluator.inputs) == ["x"]
    state, x = evaluator.make_state(), np.array([1.0, 2.0, 3.0, 1e-4], np.float16)
    for k in (1, 2, 3):
        (out,) = evaluator.run({"x": x}, state).values()
    np.testing.assert_array_equal(state["acc"], ((x + x) + x).astype(np.float16))
    np.testing.assert_array_equal(out, (state["acc"] * np.float16(2.0)).astype(np.float16))
    state["acc"] = np.zeros(4)  # an app may set a state (e.g. from a prefill) before streaming
    (out,) = evaluate(prog, {"x": x}, state=state).values()
    np.testing.assert_array_equal(out, x * np.float16(2.0))
