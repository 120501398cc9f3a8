"""Static int8 of users' own models: calibration from an ``.npz`` keyed by input name (token ids and masks
kept as integers), bad calibration data refused before any model runs, and the PT2E graph of a loaded ``.pt2``
(eval mode without torchao's batch-norm rewrite, integer edges and embedding tables left float, ReLU6 fused)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit.errors import EdgekitError
from edgekit.graph import ModelSource
from edgekit.quant import QuantSpec, check_calibration
from edgekit.quant.calib import calibration_for
from edgekit.quant.mixed import EvalSet, search
from edgekit.quant.plan import plan_quantization
from edgekit.quant.pt2e import eval_mode, export_graph, float_ops_left
from edgekit.sources import load_source

VOCAB, SEQ, N = 40, 12, 24
QUANTIZE = "quantized_decomposed.quantize_per_tensor.default"  # registered when torchao loads


class MaskedClassifier(nn.Module):
    """Token embedding, masked mean pooling, two linear layers: takes int64 ids and an int64 0/1 mask."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.body = nn.Linear(16, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        pooled = (self.embed(input_ids) * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, 16)
        return self.head(torch.relu(self.body(pooled)))  # (B, 4)


class TwoInputs(nn.Module):
    """Two float inputs (an image and a feature vector) joined before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.side = nn.Linear(6, 8)
        self.head = nn.Linear(16, 5)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(image)).mean((2, 3))  # (B, 8)
        return self.head(torch.cat([pooled, torch.relu(self.side(features))], 1))  # (B, 5)


def token_samples(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids in [1, VOCAB) and masks of ones then trailing zeros (padded ids 0), keyed by input name."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(SEQ // 2, SEQ + 1, size=n)
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(1, VOCAB, size=(n, SEQ)), 0).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask}


def _seeded(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():  # O(1) logits with clear margins, like a trained model's
        nn.init.normal_(p, std=0.5)
    return module.eval()


@pytest.fixture(scope="module")
def text_pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The masked classifier saved as a user would (torch.export.save) and its samples .npz."""
    folder = tmp_path_factory.mktemp("text")
    samples = token_samples()
    model = _seeded(MaskedClassifier())
    example = tuple(torch.from_numpy(a[:1].copy()) for a in samples.values())
    torch.export.save(torch.export.export(model, example), folder / "text.pt2")
    np.savez(folder / "samples.npz", **samples)
    return folder / "text.pt2", folder / "samples.npz"


def two_input_source() -> ModelSource:
    model = _seeded(TwoInputs())
    example = (torch.randn(1, 3, 8, 8), torch.randn(1, 6))
    return ModelSource("two", model, example, ("image", "features"), ("logits",), "0" * 64, "<two>", "module")


def two_input_samples(path: Path, n: int = N) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, image=rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
             features=rng.standard_normal((n, 6)).astype(np.float32))
    return path


def test_npz_calibrates_token_ids_and_masks_as_integers(text_pt2):
    pt2, npz = text_pt2
    source = load_source(pt2)
    assert source.input_names == ("input_ids", "attention_mask")
    data = calibration_for(source, 16, npz)
    assert len(data) == 16 and data.description == f"{npz} (16)"
    ids, mask = data.samples[0]
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape == (1, SEQ)
    assert 1 <= int(ids[mask == 1].min()) and int(ids.max()) < VOCAB  # real token ids, not cast to float
    assert len({tuple(s[1].sum(1).tolist()) for s in data.samples}) > 1  # the masks' lengths vary

    plan = plan_quantization(source, QuantSpec.parse("int8", calib_source=str(npz), calib_samples=N))
    graph = plan.prepared.converted(fold_quantize=False)
    quantized = [n.args[0] for n in graph.graph.nodes if str(n.target) == QUANTIZE]
    assert quantized, "nothing was quantized"
    assert all(q.meta["val"].dtype.is_floating_point for q in quantized if "val" in q.meta)
    names = {str(q) for q in quantized}
    assert not names & {"input_ids", "attention_mask"}, names  # integer inputs are never quantized
    embedding = next(n for n in graph.graph.nodes if n.target is torch.ops.aten.embedding.default)
    assert embedding.args[0].op == "get_attr"  # the table stays float: no dequantize in front of it
    assert float_ops_left(graph) == []  # both linear layers have int8 weights
    rows = {r.layer: r for r in plan.layers}
    assert set(rows) == {"body", "head", "output"} and rows["output"].sqnr_db > 25, plan.layers


def test_int8_of_a_masked_text_pt2_verifies_in_onnx_and_coreml(text_pt2, tmp_path):
    pt2, npz = text_pt2
    spec = QuantSpec.parse("int8", calib_source=str(npz), calib_samples=N)
    bundle = edgekit.convert(pt2, to=["onnx", "coreml"], quant=spec, out=tmp_path / "b", sample_inputs=npz)
    assert [e.format for e in bundle.written] == ["onnx", "coreml"]
    for entry in bundle.written:
        check = entry.verification
        assert entry.status == "verified", entry.error
        assert check["inputs"] == N and check["top1_agreement"] >= 0.98, check
        assert check["quantization"]["calibration"] == f"{npz} ({N})"
    assert [i["dtype"] for i in bundle.written[0].inputs] == ["int64", "int64"]  # ONNX keeps the model's int64


def test_multi_input_models_calibrate_report_and_search(tmp_path):
    source = two_input_source()
    npz = two_input_samples(tmp_path / "two.npz")
    plan = plan_quantization(source, QuantSpec.parse("int8", calib_source=str(npz), calib_samples=N))
    assert [r.layer for r in plan.layers] == ["conv", "side", "head", "output"]
    assert all(r.sqnr_db > 20 for r in plan.layers), plan.layers
    samples = list(calibration_for(source, N, npz).samples)
    assert all(len(s) == 2 for s in samples)
    labels = tuple(source.module(*s).argmax(-1) for s in samples)
    result = search(source, QuantSpec.parse("int8"), samples, EvalSet(tuple(samples), labels, "npz"),
                    budget_points=-1.0, probe=4)  # an impossible budget: every layer is measured and tried
    assert set(result.sensitivity) == {"conv", "side", "head"}
    assert len(result.steps) == 4 and result.steps[-1]["float_layers"] == list(result.sensitivity)


def _refused(call, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(EdgekitError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - start < 5, "refused only after running the model"


def test_bad_calibration_data_is_refused_before_any_model_runs(text_pt2, tmp_path, monkeypatch):
    pt2, _ = text_pt2
    text = load_source(pt2)
    samples = token_samples()
    np.savez(tmp_path / "no_mask.npz", input_ids=samples["input_ids"])
    np.savez(tmp_path / "float_ids.npz", input_ids=samples["input_ids"].astype(np.float32),
             attention_mask=samples["attention_mask"])
    np.save(tmp_path / "ids.npy", samples["input_ids"])
    cases = [
        (text, "no_mask.npz", "no_mask.npz has no array 'attention_mask'; give one array per model input, "
                              "keyed input_ids, attention_mask"),
        (text, "float_ids.npz", "float_ids.npz: input_ids holds float32 values; the model's input is int64"),
        (text, "ids.npy", r"ids.npy holds one float input, but the model takes 2 inputs \(input_ids, "
                          r"attention_mask\); give an .npz keyed by input name.*input_ids=..., attention_mask=..."),
    ]
    lm = ModelSource("lm", nn.Embedding(VOCAB, 4), (torch.zeros(1, SEQ, dtype=torch.int64),), ("input_ids",),
                     ("logits",), "0" * 64, "<lm>", "module")
    cases.append((lm, "ids.npy", r"ids.npy holds one float input, but the model's input 'input_ids' is int64, "
                                 r"not float; give an .npz.*numpy.savez\('calib.npz', input_ids=...\)"))
    two = two_input_source()
    np.save(tmp_path / "image.npy", np.zeros((4, 3, 8, 8), np.float32))
    cases.append((two, "image.npy", r"the model takes 2 inputs \(image, features\)"))
    for source, name, message in cases:
        spec = QuantSpec.parse("int8", calib_source=str(tmp_path / name))
        _refused(lambda: check_calibration(source, spec), message)
    _refused(lambda: check_calibration(two, QuantSpec.parse("int8"), np.zeros((4, 3, 8, 8), np.float32)),
             r"the calibration array holds one float input, but the model takes 2 inputs")
    _refused(lambda: check_calibration(two, QuantSpec.parse("int8")), "has no recipe dataset to calibrate on")

    def no_model_runs(*_args, **_kwargs):
        raise AssertionError("a reference run started before the calibration data was checked")

    monkeypatch.setattr("edgekit.sources.reference_for", no_model_runs)
    out = tmp_path / "bundle"
    for name, message in [("no_mask.npz", "has no array 'attention_mask'"), ("ids.npy", "takes 2 inputs")]:
        spec = QuantSpec.parse("int8", calib_source=str(tmp_path / name))
        _refused(lambda: edgekit.convert(pt2, to=["onnx"], quant=spec, out=out), message)
    assert not out.exists()


def test_single_float_inputs_still_take_npy_and_arrays(tmp_path):
    source = ModelSource("img", _seeded(nn.Conv2d(3, 4, 3)), (torch.randn(1, 3, 8, 8),), ("image",), ("y",),
                         "0" * 64, "<img>", "module")
    array = np.random.default_rng(0).standard_normal((6, 3, 8, 8))  # float64: cast to the model's float32
    np.save(tmp_path / "x.npy", array)
    for given in (array, tmp_path / "x.npy"):
        data = calibration_for(source, 4, given)
        assert len(data) == 4 and data.samples[0][0].dtype == torch.float32
    check_calibration(source, QuantSpec.parse("int8", calib_source=str(tmp_path / "x.npy")))
    check_calibration(source, QuantSpec.parse("int8-weight"))  # nothing to calibrate: nothing asked
    with pytest.raises(EdgekitError, match="calibration data .*missing.npz does not exist"):
        calibration_for(source, 4, tmp_path / "missing.npz")


class ConvBn(nn.Module):
    """conv → batch norm (eps 0.1, small variances) → ReLU6 → dropout → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8, eps=0.1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 3)
        self.bn.running_var.uniform_(0.01, 0.05)
        self.bn.running_mean.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.nn.functional.relu6(self.bn(self.conv(x))).mean((2, 3))))


def test_a_loaded_pt2_goes_to_eval_mode_with_its_own_batch_norm_eps(tmp_path):
    torch.manual_seed(0)
    model = ConvBn()
    x = torch.randn(1, 3, 8, 8)
    expected = model.eval()(x)
    model.train()
    program = torch.export.export(model, (x,))  # exported in training mode: batch statistics, live dropout
    torch.export.save(program, tmp_path / "train.pt2")
    source = load_source(tmp_path / "train.pt2")
    with pytest.raises(NotImplementedError):
        source.module.eval()  # why eval_mode exists
    switched = eval_mode(source.module)
    torch.testing.assert_close(switched(x), expected)  # eps 0.1 kept (torchao's rewrite resets it to 1e-5)
    graph = export_graph(source)
    assert not [n for n in graph.graph.nodes if "dropout" in str(n.target)]
    torch.testing.assert_close(graph(x), expected)
    trained_again = load_source(tmp_path / "train.pt2").module  # the source's own module is left as it was
    assert any(n.target is torch.ops.aten.batch_norm.default and n.args[5] is True for n in trained_again.graph.nodes)


def test_relu6_after_a_conv_is_quantized_after_the_clamp():
    torch.manual_seed(0)
    model = ConvBn().eval()
    source = ModelSource("cb", model, (torch.randn(1, 3, 8, 8),), ("x",), ("y",), "0" * 64, "<cb>", "module")
    samples = [(torch.randn(1, 3, 8, 8),) for _ in range(8)]
    plan = plan_quantization(source, QuantSpec.parse("int8"), np.concatenate([s[0].numpy() for s in samples]))
    graph = plan.prepared.converted(fold_quantize=False)
    conv = next(n for n in graph.graph.nodes if n.target is torch.ops.aten.conv2d.default)
    (clamp,) = conv.users
    assert clamp.target is torch.ops.aten.relu6.default  # no quantize between the conv and its ReLU6
    (after,) = clamp.users
    assert str(after.target) == QUANTIZE and after.args[1] <= 6.0 / 255 * 1.01  # the grid spans [0, 6] at most


def test_quantizing_a_loaded_pt2_prints_nothing(text_pt2):
    pt2, npz = text_pt2
    script = ("import edgekit; from edgekit.sources import load_source; from edgekit.quant.plan import "
              "plan_quantization; s = load_source(%r); p = plan_quantization(s, edgekit.QuantSpec.parse('int8', "
              "calib_source=%r, calib_samples=8)); p.prepared.converted(True); print(len(p.layers))") % (
        str(pt2), str(npz))
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_VERBOSE"}  # that one lets libraries speak
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "3" and run.stderr == "", run.stderr[-2000:]
