"""Core ML runtime check on macOS ("coreml-runtime"): Apple's own kernels against PyTorch
and against the MIL reference evaluator ("mil-reference") that Linux CI relies on.

Skips with the reason on any machine where Core ML cannot predict (not macOS, or a
coremltools build without its native runtime bindings).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

if sys.platform != "darwin":
    pytest.skip(f"Core ML prediction needs macOS; this is {sys.platform}", allow_module_level=True)

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra: coreml)")


def _runtime_missing() -> str | None:
    """Why coremltools cannot call Core ML here, or None when it can."""
    try:
        from coremltools.models import model as ct_model
    except ImportError as exc:  # pragma: no cover - depends on the coremltools build
        return f"coremltools.models cannot be imported: {exc}"
    if getattr(ct_model, "_MLModelProxy", None) is None:
        return "coremltools has no native Core ML bindings (libcoremlpython); reinstall the macOS wheel"
    return None


if (_reason := _runtime_missing()) is not None:
    pytest.skip(_reason, allow_module_level=True)

from edgekit.converters.coreml.mil_reference import MilEvaluator, load_program  # noqa: E402
from edgekit.models import create_model  # noqa: E402
from edgekit.verify import tolerance_for  # noqa: E402

SAMPLES = 5


@torch.no_grad()
def _cnn() -> nn.Module:
    """edgekit's CNN with BatchNorm statistics from data, so logits are not all bias."""
    torch.manual_seed(0)
    model = create_model("cnn", {"width": 0.5})
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
    model.train()
    for _ in range(3):
        model(torch.randn(8, 1, 32, 32))
    return model.eval()


def _convert(model: nn.Module, sample: torch.Tensor, precision: str, path: Path) -> "ct.models.MLModel":
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    exported = torch.export.export(model, (sample,)).run_decompositions({})
    mlmodel = ct.convert(
        exported,
        inputs=[ct.TensorType(name="image", shape=tuple(sample.shape))],
        convert_to="mlprogram",
        compute_precision=compute,
        minimum_deployment_target=ct.target.iOS16,
        compute_units=ct.ComputeUnit.CPU_ONLY,  # deterministic: no ANE/GPU placement
    )
    mlmodel.save(str(path))
    return ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_coreml_runtime_matches_pytorch_and_mil_reference(tmp_path: Path, precision: str) -> None:
    model = _cnn()
    torch.manual_seed(1)
    samples = [torch.randn(1, 1, 32, 32) for _ in range(SAMPLES)]
    path = tmp_path / f"cnn_{precision}.mlpackage"
    mlmodel = _convert(model, samples[0], precision, path)
    reference = MilEvaluator(load_program(path))
    tol = tolerance_for(precision)
    runtime_vs_torch, runtime_vs_mil, agree = 0.0, 0.0, 0
    for x in samples:
        with torch.no_grad():
            expected = model(x).numpy()
        got = np.asarray(next(iter(mlmodel.predict({"image": x.numpy()}).values())), dtype=np.float64)
        mil = next(iter(reference({"image": x.numpy()}).values())).astype(np.float64)
        runtime_vs_torch = max(runtime_vs_torch, float(np.abs(got - expected).max()))
        runtime_vs_mil = max(runtime_vs_mil, float(np.abs(got - mil).max()))
        agree += int(np.argmax(got) == np.argmax(expected))
    assert runtime_vs_torch <= tol.max_abs_diff, f"Core ML vs PyTorch: max |Δ| {runtime_vs_torch:.3g}"
    assert agree / SAMPLES >= tol.min_top1_agreement
    # Apple's kernels and the reference agree to the program's own precision
    assert runtime_vs_mil <= tol.max_abs_diff, f"Core ML vs MIL reference: max |Δ| {runtime_vs_mil:.3g}"


def test_compute_plan_reports_the_neural_engine_beside_the_lint(tmp_path: Path) -> None:
    """Issue 22: on a Mac, ``placement(path, "ane")`` is Core ML's own compute plan (preferred device per op),
    with the written-rules lint's prediction in its notes; both describe the same ops by name."""
    from edgekit import CONVERTERS
    from edgekit.converters.coreml.placement import compute_plan_unavailable, lint_package

    if (why := compute_plan_unavailable()) is not None:
        pytest.skip(why)
    path = tmp_path / "cnn_fp16.mlpackage"
    _convert(_cnn(), torch.randn(1, 1, 32, 32), "fp16", path)
    report = CONVERTERS.get("coreml").placement(path, "ane")
    lint = lint_package(path)
    assert report.source == "MLComputePlan" and report.known, report.not_run
    assert any(n.startswith("lint predicted: ane ") for n in report.notes), report.notes
    measured, predicted = {o.name for o in report.ops}, {o.name for o in lint.ops}
    assert len(measured & predicted) >= 0.9 * len(measured), (sorted(measured - predicted), sorted(predicted))
    assert "conv" in {o.op for o in report.ops}
    # what Core ML planned, for the record (the ANE share depends on the chip and the OS)
    print(f"MLComputePlan: {report.summary()}; {report.to_dict()['op_types_off']}; lint: {lint.summary()}")


SELFTEST_MAIN = """import CoreML
import Foundation
let bundle = URL(fileURLWithPath: CommandLine.arguments[1])
let compiled = try MLModel.compileModel(at: bundle.appendingPathComponent(%(cls)s.modelFile))
let model = try %(cls)s(compiledModelURL: compiled, computeUnits: .cpuOnly)
let failures = try model.selfTest(goldenFolder: bundle.appendingPathComponent("app/golden"))
let top = try model.topK([Array(repeating: Float(0), count: %(count)d)], k: 2)
print(failures.isEmpty ? "SELFTEST PASSED top=\\(top.map { $0.label })" : failures.joined(separator: "\\n"))
exit(failures.isEmpty ? 0 : 1)
"""


def test_generated_swift_compiles_and_its_golden_self_test_passes(tmp_path: Path) -> None:
    """Issue 23: the Swift edgekit writes into a bundle (app/swift) compiles with ``swiftc`` beside a main that
    loads the .mlpackage, and its self-test (golden inputs vs PyTorch's outputs at the bundle's tolerance) passes."""
    import shutil
    import subprocess

    import edgekit
    from edgekit.appcode.common import app_artifacts

    if shutil.which("swiftc") is None:
        pytest.skip("swiftc is not installed (Xcode or the Command Line Tools provide it)")
    bundle = edgekit.convert(_cnn(), (torch.randn(1, 1, 32, 32),), to=["coreml"], out=tmp_path / "bundle",
                             name="cnn").path
    artifact = app_artifacts(edgekit.Bundle.load(bundle).manifest, ("coreml",))[0]
    swift = bundle / "app" / "swift"
    main = tmp_path / "main.swift"
    main.write_text(SELFTEST_MAIN % {"cls": artifact.class_name, "count": artifact.inputs[0].count})
    exe = tmp_path / "selftest"
    build = subprocess.run(["swiftc", "-O", str(main), str(swift / f"{artifact.class_name}.swift"),
                            str(swift / "EdgekitGolden.swift"), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe), str(bundle)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "SELFTEST PASSED" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
