"""The MIL reference evaluator reproduces PyTorch on real Core ML conversions (issue 8).

Every model here is converted with coremltools, saved as an .mlpackage, loaded back with
``load_program`` and evaluated in NumPy; PyTorch is the reference. Kernel-level tests build
tiny MIL programs directly with coremltools' builder, which needs no conversion.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx.experimental.optimization
import torch.nn.functional as F
from torch import nn

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra: coreml)")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from edgekit.converters.coreml.mil_reference import (  # noqa: E402
    MilEvaluationError,
    MilEvaluator,
    MissingKernel,
    evaluate,
    load_program,
)
from edgekit.errors import CannotVerify  # noqa: E402
from edgekit.models import create_model  # noqa: E402
from edgekit.verify import tolerance_for  # noqa: E402

warnings.filterwarnings("ignore", module="coremltools")
SAMPLES = 3  # inputs per model: enough for top-1 agreement, cheap on 2 cores


# --- small models of the three families ---------------------------------------------------


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block (SDPA, LayerNorm, GELU MLP) with a mean-pooled head."""

    def __init__(self, d: int = 32, heads: int = 4, features: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(features, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.embed(x)  # (B, T, d)
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, H, T, d/H)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, -1))
        h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))
        return self.head(h.mean(dim=1))  # (B, classes)


class MambaBlock(nn.Module):
    """Selective-SSM block in its parallel (cumsum) form: causal depthwise conv1d, softplus
    step sizes, exp decays, matmuls, SiLU gate, LayerNorm residual."""

    def __init__(self, d: int = 16, state: int = 8, kernel: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(d, 2 * d)
        self.conv = nn.Conv1d(d, d, kernel, groups=d, padding=kernel - 1)
        self.dt, self.B, self.C = nn.Linear(d, d), nn.Linear(d, state), nn.Linear(d, state)
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 4.0, d)))
        self.out, self.norm = nn.Linear(d, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        u, z = self.inp(x).chunk(2, dim=-1)  # (B, L, d) each
        u = F.silu(self.conv(u.transpose(1, 2))[..., :length].transpose(1, 2))  # causal conv
        dt = F.softplus(self.dt(u))  # (B, L, d)
        seg = torch.cumsum(dt * -torch.exp(self.A_log), dim=1)  # (B, L, d) log-decay so far
        diff = seg.unsqueeze(2) - seg.unsqueeze(1)  # (B, L, L, d): decay from step j to i
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool)).unsqueeze(-1)
        decay = torch.exp(diff.masked_fill(~causal, float("-inf")))
        w = torch.matmul(self.C(u), self.B(u).transpose(1, 2)).unsqueeze(-1) * decay
        y = (w * (dt * u).unsqueeze(1)).sum(dim=2) * F.silu(z)  # (B, L, d)
        return self.norm(self.out(y) + x)


@torch.no_grad()
def _cnn() -> nn.Module:
    """The edgekit CNN with BatchNorm statistics set from data, so activations are O(1)
    (an untrained network's default statistics make every logit equal its bias)."""
    torch.manual_seed(0)
    model = create_model("cnn", {"width": 0.5})
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
    model.train()
    for _ in range(3):
        model(torch.randn(8, 1, 32, 32))
    return model.eval()


def _family(name: str) -> tuple[nn.Module, str, list[torch.Tensor]]:
    """(model, input name, samples) of one family; each sample has batch 1. "cnn-fused" has
    BatchNorm folded into the convolutions in PyTorch, so its weights are the program's."""
    torch.manual_seed(1)
    if name in ("cnn", "cnn-fused"):
        model = _cnn() if name == "cnn" else torch.fx.experimental.optimization.fuse(_cnn())
        return model, "image", [torch.randn(1, 1, 32, 32) for _ in range(SAMPLES)]
    if name == "transformer":
        return EncoderBlock().eval(), "x", [torch.randn(1, 16, 8) for _ in range(SAMPLES)]
    return MambaBlock().eval(), "x", [torch.randn(1, 32, 16) for _ in range(SAMPLES)]


PRECISIONS = {"fp32": ("FLOAT32", "iOS16"), "fp16": ("FLOAT16", "iOS18")}


def _convert(model: nn.Module, sample: torch.Tensor, input_name: str, precision: str, path: Path) -> Path:
    """torch.export → coremltools ML program → saved .mlpackage."""
    compute, target = PRECISIONS[precision]
    exported = torch.export.export(model, (sample,)).run_decompositions({})
    mlmodel = ct.convert(
        exported,
        inputs=[ct.TensorType(name=input_name, shape=tuple(sample.shape))],
        convert_to="mlprogram",
        compute_precision=getattr(ct.precision, compute),
        minimum_deployment_target=getattr(ct.target, target),
    )
    mlmodel.save(str(path))
    return path


@torch.no_grad()
def _allowed(precision: str, model: nn.Module, samples: list[torch.Tensor]) -> float:
    """The max |Δ| ``precision``'s tolerance row allows for ``model``'s outputs (relative to their scale)."""
    scale = max(float(model(x).abs().max()) for x in samples)
    return tolerance_for(precision).criteria("output", "logits").max_abs_diff(scale)


@torch.no_grad()
def _parity(run: MilEvaluator, model: nn.Module, input_name: str, samples: list[torch.Tensor]) -> tuple[float, float]:
    """(max |Δ| over all samples, top-1 agreement) of the evaluator against PyTorch."""
    max_diff, agree = 0.0, 0
    for x in samples:
        expected = model(x).numpy()
        (got,) = run({input_name: x.numpy()}).values()
        max_diff = max(max_diff, float(np.abs(got.astype(np.float64) - expected).max()))
        agree += int(np.argmax(got.reshape(-1)) == np.argmax(expected.reshape(-1)))
    return max_diff, agree / len(samples)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each (family, precision) converted once per module, as (path, model, input, samples)."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("coreml")

    def get(family: str, precision: str) -> tuple[Path, nn.Module, str, list[torch.Tensor]]:
        if (family, precision) not in cache:
            model, name, samples = _family(family)
            path = _convert(model, samples[0], name, precision, root / f"{family}_{precision}.mlpackage")
            cache[family, precision] = (path, model, name, samples)
        return cache[family, precision]

    return get


# --- every family and precision against PyTorch ------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("family", ["cnn", "transformer", "ssm"])
def test_program_matches_pytorch(converted, family: str, precision: str) -> None:
    path, model, name, samples = converted(family, precision)
    run = MilEvaluator(load_program(path))
    assert run.precision == precision
    max_diff, top1 = _parity(run, model, name, samples)
    assert max_diff <= _allowed(precision, model, samples), f"{family} {precision}: max |Δ| {max_diff:.3g}"
    assert top1 >= tolerance_for(precision).min_top1_agreement
    if precision == "fp16":  # the fp16 program really is evaluated in fp16 ...
        out = run({name: samples[0].numpy()})
        assert all(v.dtype == np.float16 for v in out.values())
        wide = MilEvaluator(path, emulate_fp16=False)({name: samples[0].numpy()})
        (a,), (b,) = out.values(), wide.values()
        assert not np.array_equal(a.astype(np.float32), b), "fp16 rounding had no effect"
        assert max_diff > 1e-4  # ... and so differs from PyTorch by more than fp32 would


def test_fp16_rounding_happens_after_every_op() -> None:
    @mb.program(input_specs=[mb.TensorSpec(shape=(64,))], opset_version=ct.target.iOS16)
    def prog(x):
        h = mb.cast(x=x, dtype="fp16")
        h = mb.add(x=mb.mul(x=h, y=h), y=np.float16(1.0 / 3.0))
        return mb.cast(x=mb.exp(x=h), dtype="fp32")

    x = np.random.default_rng(0).normal(size=64).astype(np.float32)
    h = x.astype(np.float16)
    h = ((h.astype(np.float32) * h).astype(np.float16) + np.float16(1.0 / 3.0)).astype(np.float16)
    expected = np.exp(h.astype(np.float32)).astype(np.float16).astype(np.float32)
    (got,) = evaluate(prog, {"x": x}).values()
    np.testing.assert_array_equal(got, expected)


def test_fast_fp16_rounding_equals_numpy_cast() -> None:
    """round_fp16 (integer rounding, used for speed) equals astype(float16) bit for bit,
    including ties, subnormals, overflow to inf and NaN (exhaustive over all 2**32
    patterns when written; a sample here)."""
    from edgekit.converters.coreml.mil_reference.precision import round_fp16

    rng = np.random.default_rng(5)
    special = np.array([0.0, -0.0, 1 + 2**-11, 1 + 3 * 2**-11, 2**-14, 2**-24, 2**-25, 3 * 2**-25, 1e-45,
                        65504.0, 65519.99, 65520.0, -65520.0, 1e9, np.inf, -np.inf, np.nan], np.float32)
    patterns = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([special, patterns, rng.normal(size=50_000).astype(np.float32) * 1e3])
    with np.errstate(all="ignore"):
        expected = x.astype(np.float16).astype(np.float32)
    got = round_fp16(x)
    same = (got.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(got) & np.isnan(expected))
    assert same.all(), x[~same][:5]


# --- compressed weights --------------------------------------------------------------------


def _weights_by_consumer(run: MilEvaluator) -> dict[str, np.ndarray]:
    """Dense weight each conv/linear op uses, keyed by that op's name, in program order."""
    return {
        op.name: run.constant(op.inputs["weight"].name).astype(np.float32)
        for op in run.function.operations
        if op.op_type in ("conv", "linear")
    }


def _with_weights(model: nn.Module, weights: list[np.ndarray]) -> nn.Module:
    """A copy of ``model`` whose conv/linear weights (in forward order) are ``weights``."""
    import copy

    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    assert len(layers) == len(weights)
    with torch.no_grad():
        for layer, w in zip(layers, weights):
            assert tuple(layer.weight.shape) == w.shape
            layer.weight.copy_(torch.from_numpy(w))
    return model


def _compressed_ops(program) -> list:
    return [op for op in program.functions["main"].operations if op.op_type.startswith("constexpr_")]


COMPRESSIONS = {
    "int8-per-channel": ("fp32", "linear_quantize_weights", dict(mode="linear_symmetric", weight_threshold=0)),
    "int4-per-block": ("fp16", "linear_quantize_weights",
                       dict(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=8, weight_threshold=0)),
    "palettize-4bit": ("fp32", "palettize_weights", dict(nbits=4, mode="kmeans", weight_threshold=0)),
    "palettize-4bit-grouped": ("fp16", "palettize_weights",
                               dict(nbits=4, mode="kmeans", granularity="per_grouped_channel", group_size=8, weight_threshold=0)),
}


@pytest.mark.parametrize("scheme", list(COMPRESSIONS))
def test_compressed_weights_decode_exactly(converted, tmp_path: Path, scheme: str) -> None:
    """Decoding is bit-exact with coremltools, lossy but close to the dense weights, and the
    compressed program matches PyTorch run with the same decoded weights."""
    precision, verb, options = COMPRESSIONS[scheme]
    path, model, name, samples = converted("cnn-fused", precision)
    opt = ct.optimize.coreml
    config_cls = opt.OpLinearQuantizerConfig if verb == "linear_quantize_weights" else opt.OpPalettizerConfig
    compressed = getattr(opt, verb)(ct.models.MLModel(str(path), skip_model_load=True),
                                    opt.OptimizationConfig(global_config=config_cls(**options)))
    compressed.save(str(tmp_path / "q.mlpackage"))
    program = load_program(tmp_path / "q.mlpackage")
    ops = _compressed_ops(program)
    assert ops, f"{scheme}: coremltools compressed nothing"
    run = MilEvaluator(program)
    for op in ops:  # our decoding equals coremltools' own, bit for bit
        reference = op.materialized_val_inference()
        np.testing.assert_array_equal(run.constant(op.outputs[0].name), reference, err_msg=op.op_type)
    dense = _weights_by_consumer(MilEvaluator(path))
    decoded = _weights_by_consumer(run)
    step = max(float(np.abs(decoded[k] - dense[k]).max()) for k in dense)
    assert 0 < step < 0.25 * max(float(np.abs(w).max()) for w in dense.values())  # lossy, but close
    reference = _with_weights(model, list(decoded.values()))
    max_diff, top1 = _parity(run, reference, name, samples)
    assert max_diff <= _allowed(precision, reference, samples), f"{scheme}: max |Δ| {max_diff:.3g}"
    assert top1 >= tolerance_for(precision).min_top1_agreement


def test_palettized_weights_are_nearest_table_entries(converted, tmp_path: Path) -> None:
    path, *_ = converted("cnn-fused", "fp32")
    opt = ct.optimize.coreml
    config = opt.OptimizationConfig(global_config=opt.OpPalettizerConfig(nbits=2, mode="uniform", weight_threshold=0))
    opt.palettize_weights(ct.models.MLModel(str(path), skip_model_load=True), config).save(str(tmp_path / "p.mlpackage"))
    program = load_program(tmp_path / "p.mlpackage")
    dense, decoded = _weights_by_consumer(MilEvaluator(path)), _weights_by_consumer(MilEvaluator(program))
    ops = _compressed_ops(program)
    assert ops
    for op in ops:
        lut = np.asarray(op.inputs["lut"].val, np.float32).reshape(-1)
        consumer = next(c.name for c in op.outputs[0].child_ops)
        w, got = dense[consumer].reshape(-1), decoded[consumer].reshape(-1)
        assert set(np.unique(got)) <= set(lut)
        nearest = lut[np.argmin(np.abs(w[:, None] - lut[None, :]), axis=1)]
        np.testing.assert_array_equal(got, nearest)


# --- a program that is wrong must fail the check --------------------------------------------


def test_altered_weight_is_caught(converted, tmp_path: Path) -> None:
    """Reverse the classifier's rows inside weight.bin of a saved package: parity must fail."""
    import shutil

    path, model, name, samples = converted("cnn", "fp32")
    broken = Path(shutil.copytree(path, tmp_path / "broken.mlpackage"))
    weight = model.head[1].weight.detach().numpy().astype(np.float32)
    blob = broken / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = blob.read_bytes()
    offset = data.find(weight.tobytes())
    assert offset > 0, "classifier weight not found in weight.bin"
    blob.write_bytes(data[:offset] + weight[::-1].copy().tobytes() + data[offset + weight.nbytes:])
    good, _ = _parity(MilEvaluator(path), model, name, samples)
    bad, top1 = _parity(MilEvaluator(broken), model, name, samples)
    tol = _allowed("fp32", model, samples)
    assert good <= tol
    assert bad > 100 * tol, f"altered weight gave max |Δ| {bad:.3g} only"
    assert top1 < 1.0


def test_in_memory_program_edit_is_caught(converted) -> None:
    path, model, name, samples = converted("transformer", "fp32")
    program = load_program(path)
    ln = next(op for op in program.functions["main"].operations if op.op_type == "layer_norm")
    gamma = ln.inputs["gamma"]
    gamma.op.outputs[0]._sym_val.val = gamma.val * np.float32(1.5)
    bad, _ = _parity(MilEvaluator(program), model, name, samples)
    assert bad > 100 * _allowed("fp32", model, samples)


# --- multifunction ----------------------------------------------------------------------------


def test_multifunction_selects_the_function(converted, tmp_path: Path) -> None:
    path_a, model_a, name, samples = converted("cnn", "fp16")
    model_b = _cnn()
    with torch.no_grad():
        model_b.head[1].weight.mul_(-1.0)  # a second "adapter": same graph, other weights
    path_b = _convert(model_b, samples[0], name, "fp16", tmp_path / "b.mlpackage")
    desc = ct.utils.MultiFunctionDescriptor()
    desc.add_function(str(path_a), src_function_name="main", target_function_name="base")
    desc.add_function(str(path_b), src_function_name="main", target_function_name="flipped")
    desc.default_function_name = "base"
    ct.utils.save_multifunction(desc, str(tmp_path / "multi.mlpackage"))
    program = load_program(tmp_path / "multi.mlpackage")
    for function, model in (("base", model_a), ("flipped", model_b)):
        max_diff, top1 = _parity(MilEvaluator(program, function), model, name, samples)
        assert max_diff <= _allowed("fp16", model, samples) and top1 == 1.0, function
    with pytest.raises(MilEvaluationError, match="no function 'main'; it has: base, flipped"):
        evaluate(program, {name: samples[0].numpy()})


# --- clear errors ------------------------------------------------------------------------------


def test_op_without_kernel_cannot_verify_never_passes() -> None:
    """An op with no kernel is CannotVerify (the artifact is kept as "not run"), never a pass."""
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2, 4, 4))])
    def prog(x):
        return mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=2)

    with pytest.raises(MissingKernel, match=r"^the MIL reference evaluator has no kernel for upsample_nearest_neighbor \(") as err:
        evaluate(prog, {"x": np.zeros((1, 2, 4, 4), np.float32)})
    assert isinstance(err.value, CannotVerify) and isinstance(err.value, MilEvaluationError)
    assert "\n" not in str(err.value)


def test_artifact_needing_a_missing_kernel_is_kept_as_not_run(tmp_path: Path) -> None:
    """A conversion whose program has an op without a kernel (nearest upsampling, until one is written) is
    kept and reported "not run: <reason>", not deleted as failed."""
    from edgekit.artifact import Manifest
    from edgekit.conversion import convert_one
    from edgekit.converters import CONVERTERS, ModelSource
    from edgekit.quant import QuantSpec
    from edgekit.quant.plan import QuantPlan
    from edgekit.sources import reference_for

    class Upsample(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))

    source = ModelSource("up", Upsample().eval(), (torch.randn(1, 2, 4, 4),), ("x",), ("y",), "0" * 64, "test", "pt2")
    entry = convert_one(CONVERTERS.get("coreml"), source, tmp_path, Manifest("up", {}, None, None, {}),
                        reference_for(source), QuantPlan(QuantSpec.parse("fp32")), threads=1)
    status = entry.verification["status"]
    assert status.startswith("not run: ") and "no kernel for upsample_nearest_neighbor" in status, status
    assert entry.status != "failed" and (tmp_path / entry.file).is_dir()


def test_inputs_are_checked(converted) -> None:
    path, _, name, _ = converted("cnn", "fp32")
    run = MilEvaluator(path)
    with pytest.raises(MilEvaluationError, match=r"has shape \(4, 1, 32, 32\); the program takes image \(1, 1, 32, 32\)"):
        run({name: np.zeros((4, 1, 32, 32), np.float32)})
    with pytest.raises(MilEvaluationError, match=r"\['image'\] missing, \['pixels'\] unknown"):
        run({"pixels": np.zeros((1, 1, 32, 32), np.float32)})
    with pytest.raises(MilEvaluationError, match="not an .mlpackage"):
        load_program(path / "missing.mlpackage")


def test_integer_inputs_are_cast_to_the_declared_int32() -> None:
    """Core ML stores int64 token ids as int32: int64 arrays are accepted when they fit, refused when not."""
    table = np.arange(40, dtype=np.float32).reshape(10, 4) * 0.5

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3), dtype=types.int32)], opset_version=ct.target.iOS17)
    def prog(ids):
        return mb.gather(x=table, indices=ids, axis=0)

    ids = np.array([[7, 0, 3]], np.int64)
    np.testing.assert_array_equal(_eval_single(prog, ids=ids), table[ids])
    with pytest.raises(MilEvaluationError, match=r"input 'ids' holds values in \[0, 4294967296\]; the program stores it as int32"):
        evaluate(prog, {"ids": np.array([[0, 1, 2**32]], np.int64)})


# --- kernels against PyTorch, on programs built directly -----------------------------------


def _eval_single(prog, **inputs: np.ndarray) -> np.ndarray:
    (out,) = evaluate(prog, inputs).values()
    return out


@pytest.mark.parametrize(
    "groups, stride, dilation, pad_type, pad",
    [(1, 1, 1, "custom", [1, 2, 0, 1]), (2, 2, 1, "same", None), (6, 1, 2, "valid", None),
     (6, 2, 1, "same_lower", None), (3, 3, 1, "custom", [2, 2, 1, 1])],
)
def test_conv2d_kernel(groups: int, stride: int, dilation: int, pad_type: str, pad: list | None) -> None:
    rng = np.random.default_rng(groups + stride)
    x = rng.normal(size=(2, 6, 11, 9)).astype(np.float32)
    w = rng.normal(size=(12, 6 // groups, 3, 3)).astype(np.float32)
    b = rng.normal(size=12).astype(np.float32)
    extra = {"pad": pad} if pad else {}

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)])
    def prog(inp):
        return mb.conv(x=inp, weight=w, bias=b, strides=[stride] * 2, dilations=[dilation] * 2,
                       groups=groups, pad_type=pad_type, **extra)

    xt = torch.from_numpy(x)
    if pad_type == "custom":
        xt = F.pad(xt, (pad[2], pad[3], pad[0], pad[1]))
    elif pad_type != "valid":
        total = [max((-(-n // stride) - 1) * stride + 2 * dilation + 1 - n, 0) for n in x.shape[2:]]
        first = [t // 2 if pad_type == "same" else t - t // 2 for t in total]
        xt = F.pad(xt, (first[1], total[1] - first[1], first[0], total[0] - first[0]))
    expected = F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), stride, 0, dilation, groups).numpy()
    np.testing.assert_allclose(_eval_single(prog, inp=x), expected, rtol=1e-5, atol=1e-5)


def test_conv1d_and_pool_kernels() -> None:
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=(1, 4, 10)).astype(np.float32)
    w1 = rng.normal(size=(4, 1, 3)).astype(np.float32)
    x2 = rng.normal(size=(1, 3, 9, 7)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=x1.shape)])
    def conv1d(inp):
        return mb.conv(x=inp, weight=w1, groups=4, pad_type="custom", pad=[2, 0], dilations=[2])

    expected = F.conv1d(F.pad(torch.from_numpy(x1), (2, 0)), torch.from_numpy(w1), groups=4, dilation=2)
    np.testing.assert_allclose(_eval_single(conv1d, inp=x1), expected.numpy(), rtol=1e-5, atol=1e-6)

    for exclude in (True, False):
        @mb.program(input_specs=[mb.TensorSpec(shape=x2.shape)])
        def avg(inp):
            return mb.avg_pool(x=inp, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                               exclude_padding_from_average=exclude, ceil_mode=True)

        expected = F.avg_pool2d(torch.from_numpy(x2), 3, 2, 1, ceil_mode=True, count_include_pad=not exclude)
        np.testing.assert_allclose(_eval_single(avg, inp=x2), expected.numpy(), rtol=1e-5, atol=1e-6)

    @mb.program(input_specs=[mb.TensorSpec(shape=x2.shape)])
    def maxp(inp):
        return mb.max_pool(x=inp, kernel_sizes=[2, 3], strides=[2, 2], pad_type="valid", ceil_mode=True)

    expected = F.max_pool2d(torch.from_numpy(x2), (2, 3), 2, ceil_mode=True)
    np.testing.assert_array_equal(_eval_single(maxp, inp=x2), expected.numpy())


def _single_op_program(build, shape: tuple[int, ...]):
    def main(v):
        return build(v)

    return mb.program(input_specs=[mb.TensorSpec(shape=shape)])(main)


def test_activation_norm_and_scan_kernels() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 6)).astype(np.float32) * 3
    gamma, beta = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    xt = torch.from_numpy(x)
    cases = {
        "gelu_exact": (lambda v: mb.gelu(x=v, mode="EXACT"), F.gelu(xt)),
        "gelu_tanh": (lambda v: mb.gelu(x=v, mode="TANH_APPROXIMATION"), F.gelu(xt, approximate="tanh")),
        "silu": (lambda v: mb.silu(x=v), F.silu(xt)),
        "softplus": (lambda v: mb.softplus(x=v), F.softplus(xt)),
        "softmax": (lambda v: mb.softmax(x=v, axis=1), torch.softmax(xt, 1)),
        "layer_norm": (lambda v: mb.layer_norm(x=v, axes=[-1], gamma=gamma, beta=beta, epsilon=1e-5),
                       F.layer_norm(xt, (6,), torch.from_numpy(gamma), torch.from_numpy(beta))),
        "cumsum_rev_excl": (lambda v: mb.cumsum(x=v, axis=1, exclusive=True, reverse=True),
                            torch.flip(torch.cumsum(torch.flip(xt, [1]), 1), [1]) - xt),
        "clip": (lambda v: mb.clip(x=v, alpha=-1.0, beta=2.0), xt.clamp(-1, 2)),
    }
    for label, (build, expected) in cases.items():
        prog = _single_op_program(build, x.shape)
        np.testing.assert_allclose(_eval_single(prog, v=x), expected.numpy(), rtol=1e-5, atol=1e-5, err_msg=label)


def test_per_sample_evaluation_is_fast(converted) -> None:
    """A plan is built once; each sample of the CNN then runs in milliseconds (no timing
    assertion here: benchmarks measure, tests check that repeated runs agree)."""
    path, _, name, samples = converted("cnn", "fp32")
    run = MilEvaluator(path)
    first = run({name: samples[0].numpy()})
    again = run({name: samples[0].numpy()})
    np.testing.assert_array_equal(*first.values(), *again.values())
    assert set(run.op_counts()) == {"conv", "clip", "reduce_mean", "linear"}


def test_quantize_dequantize_kernels_match_pytorch() -> None:
    """W8A8 programs: per-tensor activation quantize → dequantize, per-channel along axis 1."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(1, 3, 4, 4)) * 4).astype(np.float32)
    scales = np.array([0.05, 0.1, 0.02], np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS17)
    def per_tensor(v):
        q = mb.quantize(input=v, scale=np.float32(0.03), zero_point=np.int8(-3), output_dtype="int8")
        return mb.dequantize(input=q, scale=np.float32(0.03), zero_point=np.int8(-3))

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS17)
    def per_channel(v):
        q = mb.quantize(input=v, scale=scales, axis=1, output_dtype="int8")
        return mb.dequantize(input=q, scale=scales, axis=1)

    xt = torch.from_numpy(x)
    expected = torch.fake_quantize_per_tensor_affine(xt, 0.03, -3, -128, 127)
    np.testing.assert_allclose(_eval_single(per_tensor, v=x), expected.numpy(), rtol=0, atol=1e-6)
    expected = torch.fake_quantize_per_channel_affine(xt, torch.from_numpy(scales), torch.zeros(3, dtype=torch.int32),
                                                      1, -128, 127)
    np.testing.assert_allclose(_eval_single(per_channel, v=x), expected.numpy(), rtol=0, atol=1e-6)


# --- gather_nd (token models: transformers' mask and position indexing) -----------------------------


def _gather_nd_loops(x: np.ndarray, indices: np.ndarray, batch_dims: int) -> np.ndarray:
    """gather_nd as the op definition states it, one output slice at a time."""
    out_shape = indices.shape[:-1] + x.shape[batch_dims + indices.shape[-1]:]
    out = np.empty(out_shape, x.dtype)
    for where in np.ndindex(*indices.shape[:-1]):
        address = tuple(int(i) % x.shape[batch_dims + k] for k, i in enumerate(indices[where]))
        out[where] = x[where[:batch_dims] + address]
    return out


@pytest.mark.parametrize("target, batch_dims, ix_shape, low", [
    ("iOS16", 0, (3, 2), -3),  # two of x's dims addressed; negative indices count from the end before iOS17
    ("iOS16", 0, (2, 2, 3), -2),  # all three dims: single elements
    ("iOS17", 1, (2, 3, 1), 0),  # one batch dim shared by x and indices
    ("iOS17", 0, (4, 1), 0),
])
def test_gather_nd_kernel(target: str, batch_dims: int, ix_shape: tuple[int, ...], low: int) -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 4, 5)).astype(np.float32)
    dims = x.shape[batch_dims:batch_dims + ix_shape[-1]]
    indices = np.stack([rng.integers(max(low, -d), d, size=ix_shape[:-1]) for d in dims], -1).astype(np.int32)
    if batch_dims:
        indices = indices.reshape(ix_shape)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape), mb.TensorSpec(shape=indices.shape, dtype=types.int32)],
                opset_version=getattr(ct.target, target))
    def prog(v, ix):
        return mb.gather_nd(x=v, indices=ix, batch_dims=batch_dims)

    got = _eval_single(prog, v=x, ix=indices)
    expected = _gather_nd_loops(x, indices, batch_dims)
    assert got.shape == expected.shape and len(np.unique(expected)) > 1
    np.testing.assert_array_equal(got, expected)
    if low < 0:
        assert (indices < 0).any(), "the case meant to test negative indices has none"


@pytest.mark.parametrize("target, bad", [("iOS17", -1), ("iOS16", 4), ("iOS16", -5)])
def test_gather_nd_out_of_bounds_is_an_error(target: str, bad: int) -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    indices = np.array([[0], [bad]], np.int32)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape), mb.TensorSpec(shape=indices.shape, dtype=types.int32)],
                opset_version=getattr(ct.target, target))
    def prog(v, ix):
        return mb.gather_nd(x=v, indices=ix)

    with pytest.raises(MilEvaluationError, match="gather_nd: an index is out of bounds for dims \\[4\\]"):
        _eval_single(prog, v=x, ix=indices)
