"""Placement on LiteRT and ONNX Runtime: which ops XNNPACK takes (observed in the interpreter), which execution
provider runs each ONNX node (profiled), and a phone delegate's coverage from a benchmark_model log."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("litert_torch")

import edgekit  # noqa: E402
from edgekit.converters.onnx.placement import TARGETS, ep_placement, onnx_placement  # noqa: E402
from edgekit.devices.adb_bench import DELEGATES, log_placement  # noqa: E402
from edgekit.devices.benchmark_log import parse_benchmark_log  # noqa: E402
from edgekit.placement import PlacementGateFailed, Where, check_required  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


class SmallConv(torch.nn.Module):
    """Conv, ReLU, global mean, linear: every op has an XNNPACK kernel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))  # (B, 4)


class RunningSum(torch.nn.Module):
    """A linear layer, then a cumulative sum over time: XNNPACK has no CUMSUM kernel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.proj(x), dim=1)  # (B, T, 8)


@pytest.fixture(scope="module")
def conv_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("placement") / "conv"
    return edgekit.convert(SmallConv().eval(), (torch.randn(1, 3, 8, 8),), to=["tflite", "onnx"], out=out,
                           name="conv")


@pytest.fixture(scope="module")
def cumsum_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("placement") / "cumsum"
    return edgekit.convert(RunningSum().eval(), (torch.randn(1, 5, 8),), to=["tflite"], out=out, name="cumsum")


def entry(bundle, fmt: str):
    (found,) = [e for e in bundle.written if e.format == fmt and e.file]
    return found


def test_small_conv_is_all_on_xnnpack(conv_bundle):
    report = entry(conv_bundle, "tflite").placement["xnnpack"]
    assert report["not_run"] is None and report["ops"] >= 3  # conv, mean, fully connected at least
    assert report["coverage"] == 1.0 and report["ops_on"] == report["ops"] and report["islands"] == 1
    assert {"CONV_2D", "FULLY_CONNECTED"} <= {o["op"] for o in report["per_op"]}
    assert report["flops_coverage"] == 1.0
    # LiteRT's CompiledModel, asked independently, agrees that the model is fully accelerated
    assert any("is_fully_accelerated() = True: agrees" in n for n in report["notes"])
    assert check_required([entry(conv_bundle, "tflite")], "xnnpack", 1.0)[0].endswith(
        "100.0% on xnnpack (XNNPACK delegate (LiteRT interpreter partitions))")


def test_cumsum_is_off_xnnpack_and_named(cumsum_bundle):
    report = entry(cumsum_bundle, "tflite").placement["xnnpack"]
    off = [o for o in report["per_op"] if o["where"] == Where.OFF.value]
    assert [o["op"] for o in off] == ["CUMSUM"]
    assert "cumulative-sum" in off[0]["reason"] and "matmul" in off[0]["fix"]
    assert 0.0 < report["coverage"] < 1.0 and report["op_types_off"] == {"CUMSUM": 1}
    assert any("is_fully_accelerated() = False: agrees" in n for n in report["notes"])


def test_gate_fails_naming_the_op_xnnpack_does_not_take(cumsum_bundle):
    with pytest.raises(PlacementGateFailed, match=r"of ops on xnnpack < 100%.*first offenders: CUMSUM at '#\d+ "):
        check_required([entry(cumsum_bundle, "tflite")], "xnnpack", 1.0)
    # a lower bar that the model's coverage meets passes
    assert check_required([entry(cumsum_bundle, "tflite")], "xnnpack", 0.5)


def test_litert_gpu_and_npu_are_not_run_here_with_why(conv_bundle):
    placement = entry(conv_bundle, "tflite").placement
    assert placement["gpu"]["coverage"] is None and "no longer checks GPU" in placement["gpu"]["not_run"]
    assert placement["npu"]["not_run"].startswith("needs a phone: edgekit bench") and "--delegate qnn" in \
        placement["npu"]["not_run"]
    with pytest.raises(PlacementGateFailed, match="coverage unknown"):
        check_required([entry(conv_bundle, "tflite")], "npu", 1.0)


def test_onnx_without_the_ep_is_not_run_and_names_the_providers(conv_bundle):
    ort = pytest.importorskip("onnxruntime")
    if "XnnpackExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has XNNPACK: the measured path applies")
    report = entry(conv_bundle, "onnx").placement["xnnpack"]
    assert report["coverage"] is None and "XnnpackExecutionProvider" in report["not_run"]
    assert all(p in report["not_run"] for p in ort.get_available_providers())
    # the CPU EP's share is still reported as a note, from a profiled run
    assert any(n.startswith("profiled here: CPUExecutionProvider ran ") and "Conv" in n for n in report["notes"])
    npu = onnx_placement(conv_bundle.path / entry(conv_bundle, "onnx").file, "npu")
    assert npu.coverage is None and "QNNExecutionProvider or NnapiExecutionProvider" in npu.not_run


def test_onnx_profile_attributes_each_node_to_its_provider(conv_bundle):
    """The measured path, with the CPU EP standing in for an accelerator's EP (the only one here)."""
    path = conv_bundle.path / entry(conv_bundle, "onnx").file
    report = ep_placement(path, "xnnpack", "CPUExecutionProvider", TARGETS.get("xnnpack"))
    assert report.coverage == 1.0 and "Conv" in {o.op for o in report.ops}
    assert len({o.name for o in report.ops}) == len(report.ops)  # one entry per executed node


def test_phone_qnn_log_with_zero_nodes_is_zero_npu_coverage():
    parsed = parse_benchmark_log((FIXTURES / "tf83344_qnn_zero_nodes.txt").read_text())
    report = log_placement(parsed, DELEGATES.get("qnn")).to_dict()
    assert (report["accelerator"], report["source"]) == ("npu", "QNN delegate log")
    assert (report["ops"], report["ops_on"], report["coverage"], report["islands"]) == (31, 0, 0.0, 0)


def test_phone_partial_xnnpack_line_gives_counts():
    parsed = parse_benchmark_log((FIXTURES / "litert7858_xnnpack_partial_line.txt").read_text())
    report = log_placement(parsed, DELEGATES.get("cpu")).to_dict()
    assert (report["accelerator"], report["ops"], report["ops_on"]) == ("xnnpack", 476, 470)
    assert report["offenders"][0]["count"] == 6


# CONSTRUCTED for this test (not a captured log): the QNN delegate's count line as in tf83344, and the
# op-profiling "Run Order" table in the layout of meta_tflite_riscv_count1_profiling.txt
QNN_PROFILED = """\
INFO: TfLiteQnnDelegate delegate: 5 nodes delegated out of 7 nodes with 2 partitions.
Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t       TfLiteQnnDelegate\t            0.000\t    1.000\t    1.000\t 40.000%\t 40.000%\t     0.000\t        1\t[conv_block]:7
\t               TOPK_V2\t            1.000\t    0.500\t    0.500\t 20.000%\t 60.000%\t     0.000\t        1\t[scores_topk]:8
\t                GATHER\t            1.500\t    0.500\t    0.500\t 20.000%\t 80.000%\t     0.000\t        1\t[pick]:9
\t       TfLiteQnnDelegate\t            2.000\t    0.500\t    0.500\t 20.000%\t100.000%\t     0.000\t        1\t[head]:10

"""


def test_phone_log_with_op_profiling_names_the_cpu_ops():
    report = log_placement(parse_benchmark_log(QNN_PROFILED), DELEGATES.get("qnn"))
    assert report.coverage == pytest.approx(5 / 7) and report.islands == 2
    assert [(o.op, o.name) for o in report.ops if o.where == Where.OFF] == [
        ("TOPK_V2", "[scores_topk]:8"), ("GATHER", "[pick]:9")]
    assert "int8" in report.ops[-1].fix or "int8" in report.offenders()[0]["fix"]
