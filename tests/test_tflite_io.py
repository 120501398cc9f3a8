"""TFLite inputs and outputs as an app sees them: token (int64) inputs stored and fed as int32, the model's
own I/O names in signatures, tensors and metadata, and conversion errors that name where the converter failed."""

from __future__ import annotations

import json
import traceback

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("litert_torch")

from edgekit.converters.base import CONVERTERS, conversion_error  # noqa: E402
from edgekit.errors import EdgekitError, UnsupportedOpError  # noqa: E402
from edgekit.graph import ModelSource, NamedGraph  # noqa: E402

VOCAB, DIM, CLASSES, LENGTH = 50, 16, 3, 8
IN_NAMES, OUT_NAMES = ("input_ids", "attention_mask"), ("logits", "pooled")


class TokenClassifier(torch.nn.Module):
    """Embedding, masked mean pooling, a linear head: int64 token ids and mask in, two named outputs."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(VOCAB, DIM)
        self.head = torch.nn.Linear(DIM, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = attention_mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        pooled = (self.embed(input_ids) * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, D)
        return self.head(pooled), pooled


def token_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (1, LENGTH), generator=gen)
    mask = torch.ones(1, LENGTH, dtype=torch.long)
    mask[0, LENGTH - 1 - seed % 3:] = 0
    return ids, mask


def token_source(seed: int = 0) -> ModelSource:
    module = TokenClassifier(seed).eval()
    example = token_inputs(0)
    return ModelSource(name="tokens", module=module, example_inputs=example, input_names=IN_NAMES,
                       output_names=OUT_NAMES, sha256="", origin="test", kind="pt2",
                       exported=torch.export.export(module, example), input_ranges=((0, VOCAB), (0, 2)))


def reference(source: ModelSource, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        return [y.numpy() for y in source.module(*inputs)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    source = token_source()
    path = tmp_path_factory.mktemp("tflite_io") / "tokens.tflite"
    metadata = {"inputs": [{"name": n, "dtype": "int64"} for n in IN_NAMES],
                "outputs": [{"name": n, "dtype": "float32"} for n in OUT_NAMES]}
    CONVERTERS.get("tflite").export(source, path, "fp32", metadata)
    return source, path


def test_token_model_runs_on_int64_inputs_and_matches_pytorch(converted):
    source, path = converted
    run = CONVERTERS.get("tflite").runner(path, 1)
    outputs = []
    for seed in range(3):
        inputs = token_inputs(seed)
        got = run([x.numpy() for x in inputs])  # int64, as PyTorch takes them
        want = reference(source, inputs)
        assert [g.shape for g in got] == [w.shape for w in want] == [(1, CLASSES), (1, DIM)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        outputs.append(got[0])
    assert not np.allclose(outputs[0], outputs[1])  # the inputs matter: the comparison is not vacuous


def test_inspect_reports_the_model_names_in_order_and_int32(converted):
    _, path = converted
    info = CONVERTERS.get("tflite").inspect(path)
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [(n, "int32", (1, LENGTH)) for n in IN_NAMES]
    assert [(t.name, t.shape) for t in info.outputs] == [("logits", (1, CLASSES)), ("pooled", (1, DIM))]
    embedded = json.loads(info.metadata["edgekit"])
    assert [(e["name"], e["dtype"]) for e in embedded["inputs"]] == [(n, "int32") for n in IN_NAMES]
    assert [e["name"] for e in embedded["outputs"]] == list(OUT_NAMES)


def test_signature_keys_are_the_model_names(converted):
    from ai_edge_litert.interpreter import Interpreter

    _, path = converted
    signatures = Interpreter(model_path=str(path)).get_signature_list()
    assert len(signatures) == 1
    (keys,) = signatures.values()
    assert sorted(keys["inputs"]) == sorted(IN_NAMES) and sorted(keys["outputs"]) == sorted(OUT_NAMES)


def test_a_value_outside_int32_is_refused_in_one_line(converted):
    _, path = converted
    run = CONVERTERS.get("tflite").runner(path, 1)
    ids, mask = (x.numpy() for x in token_inputs(0))
    ids[0, 2] = 2**40
    with pytest.raises(EdgekitError) as err:
        run([ids, mask])
    message = str(err.value)
    assert "\n" not in message and "input_ids" in message and str(2**40) in message and "int32" in message


def test_two_signature_artifact_runs_each_graph_with_int_inputs(tmp_path):
    conv = CONVERTERS.get("tflite")
    graphs = [NamedGraph("base", token_source(0)), NamedGraph("other", token_source(1))]
    path = tmp_path / "two.tflite"
    written = conv.export_many(graphs, path, "fp32", {"inputs": [], "outputs": []})
    assert written.select == {"base": {"signature": "base"}, "other": {"signature": "other"}}
    inputs = token_inputs(2)
    results = {}
    for graph in graphs:
        got = conv.runner(path, 1, graph.name)([x.numpy() for x in inputs])
        for g, w in zip(got, reference(graph.source, inputs)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        results[graph.name] = got[0]
    assert not np.allclose(results["base"], results["other"])  # each signature runs its own weights
    switch = conv.switcher(path, 1)
    np.testing.assert_array_equal(switch("other", [x.numpy() for x in inputs])[0], results["other"])


def test_saved_pt2_with_dict_output_converts_and_verifies(tmp_path):
    import edgekit

    class Named(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = TokenClassifier(0)

        def forward(self, input_ids, attention_mask):
            logits, pooled = self.inner(input_ids, attention_mask)
            return {"logits": logits, "pooled": pooled}

    pt2 = tmp_path / "tokens.pt2"
    torch.export.save(torch.export.export(Named().eval(), token_inputs(0)), str(pt2))
    bundle = edgekit.convert(str(pt2), to=["tflite"], out=tmp_path / "bundle")
    (entry,) = bundle.artifacts
    assert entry["status"] == "verified", entry.get("error")
    assert [(i["name"], i["dtype"]) for i in entry["inputs"]] == [(n, "int32") for n in IN_NAMES]
    assert [o["name"] for o in entry["outputs"]] == list(OUT_NAMES)


class ResidualPad(torch.nn.Module):
    """A conv output used both by a float ``pad`` and by a residual ``add`` (transformers' MobileNetV2 with TF
    padding): its int8 graph keeps one dequantize shared by both, which litert-torch's layout pass lost."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(x)
        return self.c2(F.pad(h, (1, 1, 1, 1))) + h


@pytest.fixture(scope="module")
def residual_pad():
    from edgekit.quant.pt2e import prepare_quant
    from edgekit.quant.spec import QuantSpec

    module = ResidualPad().eval()
    example = (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),)
    source = ModelSource(name="residual_pad", module=module, example_inputs=example, input_names=("x",),
                         output_names=("y",), sha256="", origin="test", kind="pt2")
    gen = torch.Generator().manual_seed(1)
    samples = [(torch.randn(1, 3, 16, 16, generator=gen),) for _ in range(8)]
    # the residual add stays float here (as every add did before edgekit quantized residual adds, and as an add with
    # a float input still does), so one dequantize feeds both the pad and the add: the case the rewrite is for
    import edgekit.quant.pt2e as pt2e
    from edgekit.quant.annotations import _quantize_residual_adds

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pt2e, "ANNOTATION_PASSES", tuple(p for p in pt2e.ANNOTATION_PASSES
                                                       if p is not _quantize_residual_adds))
        return source, prepare_quant(source, QuantSpec.parse("int8"), samples)


def test_static_int8_with_a_shared_dequantize_converts(residual_pad, tmp_path):
    source, prepared = residual_pad
    conv = CONVERTERS.get("tflite")
    path = tmp_path / "residual_pad_int8.tflite"
    changes = conv.export(source, path, "int8", {"inputs": [], "outputs": []}, prepared=prepared)
    assert len(changes) == 1 and "dequantize" in changes[0] and "(1 copy;" in changes[0]
    got = conv.runner(path, 1)([source.example_inputs[0].numpy()])[0]
    want = reference(source, source.example_inputs)[0]
    assert np.abs(want).max() > 0.1  # not a near-zero output that any int8 graph would match
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_failure_inside_a_pass_names_the_op_and_the_library_message(residual_pad, tmp_path, monkeypatch):
    """Without the rewrite the layout pass fails while at the ``add``: the error names it, the pass and the
    assertion, and is no "cannot handle operator" (aten.add has a lowering)."""
    import edgekit.converters.tflite.export as tflite_export

    monkeypatch.setattr(tflite_export, "private_dequantize", lambda gm: [])
    source, prepared = residual_pad
    try:
        CONVERTERS.get("tflite").export(source, tmp_path / "x.tflite", "int8", {}, prepared=prepared)
    except EdgekitError as exc:
        error = exc
    else:  # a litert-torch that keeps the node's metadata: rewrites.private_dequantize may be dropped
        pytest.skip("litert-torch's layout pass no longer fails on a shared dequantize")
    message = str(error)
    assert not isinstance(error, UnsupportedOpError) and "\n" not in message
    assert message.startswith("tflite conversion failed at aten.add.Tensor (in OptimizeLayoutTransposesPass): ")
    assert "AssertionError: Attempting to convert non-NHWC compatible node to NHWC" in message


def _raised_at(node: torch.fx.Node, exc: Exception) -> Exception:
    """``exc`` as a converter raises it while processing ``node`` (a frame with a local named ``node``)."""

    def lower(node: torch.fx.Node) -> None:
        raise exc

    try:
        lower(node)
    except Exception as raised:  # noqa: BLE001
        assert traceback.extract_tb(raised.__traceback__)[-1].name == "lower"
        return raised
    raise AssertionError("not raised")


def _add_node() -> torch.fx.Node:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    return graph.call_function(torch.ops.aten.add.Tensor, (x, x))


def test_conversion_error_blames_an_op_only_when_it_has_no_conversion():
    node = _add_node()
    failed = conversion_error("tflite", _raised_at(node, ValueError("bad layout\nmore")), convertible=lambda t: True)
    assert type(failed) is EdgekitError
    assert str(failed) == "tflite conversion failed at aten.add.Tensor (in lower): ValueError: bad layout"
    missing = conversion_error("tflite", _raised_at(node, ValueError("x")), convertible=lambda t: False)
    assert isinstance(missing, UnsupportedOpError) and missing.op == "aten.add.Tensor"
    said = conversion_error("tflite", RuntimeError("Lowering not found: aten.frob.default"))
    assert isinstance(said, UnsupportedOpError) and said.op == "aten.frob.default"
    assert "RuntimeError: Lowering not found" in str(said)


def test_conversion_error_without_an_op_asks_for_one_the_model_lacks():
    asked = []
    blamed = conversion_error("tflite", AssertionError("tokens differ"),
                              unconvertible=lambda: asked.append(1) or "aten.linalg_inv_ex.default")
    assert isinstance(blamed, UnsupportedOpError) and blamed.op == "aten.linalg_inv_ex.default"
    assert "AssertionError: tokens differ" in str(blamed) and asked == [1]
    plain = conversion_error("onnx", KeyError("k"), unconvertible=lambda: None)
    assert str(plain) == "onnx conversion failed: KeyError: 'k'"
