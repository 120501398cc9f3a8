"""Core ML Neural Engine placement (issue 22): the written-rules lint on saved ML Programs and the ``--require``
gate on it. Each model is a few ops, converted by coremltools and saved; the lint reads the saved package."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra: coreml)")

from edgekit import CONVERTERS  # noqa: E402
from edgekit.artifact import ArtifactEntry  # noqa: E402
from edgekit.converters.coreml.ane_rules import ANE_RULES  # noqa: E402
from edgekit.converters.coreml.placement import compute_plan_unavailable, lint_package  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.placement import Where, check_required  # noqa: E402
from edgekit.quiet import quiet  # noqa: E402


def save(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, precision: str = "fp16") -> Path:
    """Convert ``model`` to an ML program (iOS 16) at ``precision`` and save it as ``path``."""
    torch.manual_seed(0)
    program = torch.export.export(model.eval(), inputs).run_decompositions({})
    types = [ct.TensorType(name=f"in{i}", shape=tuple(x.shape), dtype=x.numpy().dtype) for i, x in enumerate(inputs)]
    with quiet():
        mlmodel = ct.convert(program, inputs=types, convert_to="mlprogram", skip_model_load=True,
                             compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                             minimum_deployment_target=ct.target.iOS16)
        mlmodel.save(str(path))
    return path


class ConvNet(nn.Module):
    """Two 3x3 convs (stride 2, then 1) on 64x64: every tensor's last dim is 32, 64-byte aligned in fp16."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


@pytest.fixture(scope="module")
def convnet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ane")
    x = (torch.randn(1, 1, 64, 64),)
    return {p: save(ConvNet(), x, root / f"conv_{p}.mlpackage", p) for p in ("fp16", "fp32")}


def test_fp16_conv_model_is_ane_clean(convnet):
    report = lint_package(convnet["fp16"])
    assert report.source == "lint" and report.coverage == 1.0 and report.islands == 1, report.to_dict()["per_op"]
    convs = [o for o in report.ops if o.op == "conv"]
    assert len(convs) == 2 and all(o.where == Where.ON for o in convs), convs
    # 2 · outputs · (C_in · k · k): 32·32·32 outputs of 1·3·3, then of 32·3·3
    assert [o.flops for o in convs] == [2 * 32 * 32 * 32 * 9, 2 * 32 * 32 * 32 * 32 * 9]
    assert report.flops_coverage == 1.0 and report.offenders() == []


def test_fp32_program_is_off_with_the_fp32_rule_and_its_fix(convnet):
    report = lint_package(convnet["fp32"])
    assert report.coverage == 0.0 and report.islands == 0
    conv = next(o for o in report.ops if o.op == "conv")
    assert conv.where == Where.OFF and conv.reason.startswith("fp32:") and "--precision fp16" in conv.fix
    assert report.offenders()[0]["fix"].startswith("export with --precision fp16")


class Lookup(nn.Module):
    """An embedding lookup (gather) between two ANE-friendly ops."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.proj = nn.Embedding(16, 64), nn.Linear(64, 64)

    def forward(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(tokens) + torch.relu(x))


@pytest.fixture(scope="module")
def lookup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inputs = (torch.randint(0, 16, (1, 8), dtype=torch.int32), torch.randn(1, 8, 64))
    return save(Lookup(), inputs, tmp_path_factory.mktemp("ane") / "lookup.mlpackage")


def test_gather_is_off_at_that_op_and_named(lookup):
    report = lint_package(lookup)
    gathers = [o for o in report.ops if o.op == "gather"]
    assert len(gathers) == 1 and gathers[0].where == Where.OFF and "gather-ops" in gathers[0].reason
    assert [o.op for o in report.ops if o.where == Where.OFF] == ["gather"], report.to_dict()["per_op"]
    assert report.offenders()[0]["first"] == gathers[0].name and 0 < report.coverage < 1


def test_islands_count_each_run_between_fallbacks(lookup):
    report = lint_package(lookup)
    runs = "".join("x" if o.where == Where.OFF else "o" for o in report.ops)
    assert report.islands == len([r for r in runs.split("x") if r]) and report.islands >= 1
    assert report.to_dict()["islands"] == report.islands and runs.count("x") == 1


class Masked(nn.Module):
    """Attention scores masked twice: an additive -inf buffer (a weight-file constant) and masked_fill(-inf) with a
    computed mask (an immediate scalar; a constant mask would be folded into the buffer)."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        causal = torch.triu(torch.ones(32, 32, dtype=torch.bool), diagonal=1)
        self.register_buffer("additive", torch.zeros(32, 32).masked_fill(causal, fill))
        self.fill = fill

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-1, -2)  # (1, 32, 32)
        a = torch.softmax(scores + self.additive, dim=-1)
        b = torch.softmax(scores.masked_fill(k[..., :1].transpose(-1, -2) > 0, self.fill), dim=-1)
        return a + b


@pytest.mark.parametrize("fill", [float("-inf"), -1e4])
def test_inf_mask_constants_are_found_and_finite_ones_are_not(tmp_path, fill):
    q = (torch.randn(1, 32, 32), torch.randn(1, 32, 32))
    report = lint_package(save(Masked(fill), q, tmp_path / "masked.mlpackage"))
    flagged = {o.op for o in report.ops if "inf-constant" in o.reason}
    if fill == -1e4:
        assert flagged == set() and report.coverage == 1.0
    else:  # both forms: the immediate scalar of masked_fill (select) and the additive buffer (add)
        assert flagged == {"add", "select"}, report.to_dict()["per_op"]
        assert all(o.where == Where.OFF and "-1e4" in o.fix for o in report.ops if "inf-constant" in o.reason)
    matmul = next(o for o in report.ops if o.op == "matmul")
    assert matmul.where == Where.PENALTY and "activation-matmul" in matmul.reason and matmul.flops == 2 * 32 * 32 * 32


def test_flexible_input_shape_is_off(tmp_path):
    traced = torch.jit.trace(nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU()).eval(), torch.randn(1, 1, 64, 64))
    shape = ct.Shape((1, 1, ct.RangeDim(16, 128, 64), 64))
    with quiet():
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], convert_to="mlprogram",
                             skip_model_load=True, minimum_deployment_target=ct.target.iOS16)
        mlmodel.save(str(tmp_path / "flexible.mlpackage"))
    report = lint_package(tmp_path / "flexible.mlpackage")
    conv = next(o for o in report.ops if o.op == "conv")
    assert conv.where == Where.OFF and "flexible-shape" in conv.reason and report.coverage == 0.0


def test_gate_fails_naming_the_offending_op_and_passes_a_clean_model(lookup, convnet):
    offender = ArtifactEntry("coreml", "fp16", "verified", file="lookup.mlpackage",
                             placement={"ane": lint_package(lookup).to_dict()})
    with pytest.raises(EdgekitError, match=r"lookup\.mlpackage: .*gather at '[^']+'"):
        check_required([offender], "ane", 1.0)
    clean = ArtifactEntry("coreml", "fp16", "verified", file="conv.mlpackage",
                          placement={"ane": lint_package(convnet["fp16"]).to_dict()})
    assert check_required([clean], "ane", 1.0) == ["conv.mlpackage: 100.0% on ane (lint)"]


def test_converter_answers_for_the_ane_only(convnet):
    conv = CONVERTERS.get("coreml")
    assert conv.accelerators == ("ane",)
    report = conv.placement(convnet["fp16"], "ane")
    assert report.coverage == 1.0 and report.source == ("MLComputePlan" if sys.platform == "darwin" else "lint")
    with pytest.raises(EdgekitError, match="answers for: ane"):
        conv.placement(convnet["fp16"], "npu")


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the compute plan may be available")
def test_compute_plan_is_not_run_off_macos_and_says_why(convnet):
    assert "needs macOS" in compute_plan_unavailable()
    notes = CONVERTERS.get("coreml").placement(convnet["fp16"], "ane").notes
    assert any(n.startswith("MLComputePlan not run: MLComputePlan needs macOS") for n in notes)


def test_every_rule_cites_a_public_source_and_gives_a_fix():
    assert len(ANE_RULES.names()) >= 12
    for name in ANE_RULES.names():
        rule = ANE_RULES.get(name)
        assert "https://github.com/" in rule.source and rule.fix and rule.reason, name
