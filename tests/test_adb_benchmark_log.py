"""The benchmark_model log parser, on real logs from public sources (tests/fixtures/benchmark_model,
each file cites where it came from on its first line)."""

from pathlib import Path

import pytest

from edgekit.devices.adb_bench import DELEGATES, check_coverage
from edgekit.devices.benchmark_log import delegate_coverage, parse_benchmark_log, parse_stat
from edgekit.errors import EdgekitError

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


def load(name: str) -> dict:
    return parse_benchmark_log((FIXTURES / name).read_text())


def test_every_fixture_cites_its_source():
    files = sorted(FIXTURES.glob("*.txt"))
    assert len(files) >= 10
    for f in files:
        first = f.read_text().splitlines()[0]
        assert first.startswith("# source: "), f.name
        assert "github.com" in first or "@" in first, f.name  # an issue URL or repo path @ commit


def test_current_summary_and_stat_lines():
    log = load("tf43541_gpu_full_delegation.txt")
    assert log["timings_format"] == "inference_timings"
    assert log["timings_us"] == {"init": 870557.0, "first_inference": 130565.0, "warmup_avg": 122373.0,
                                 "inference_avg": 119375.0}
    assert log["warmup"]["count"] == 4 and log["warmup"]["min_iterations"] == 1
    inf = log["inference"]
    assert (inf["count"], inf["min"], inf["max"], inf["avg"], inf["std"]) == (50, 113737, 124776, 119375, 1948)
    assert log["complete"] is True


def test_older_average_inference_timings_format():
    log = load("yuenshome77_average_inference_timings.txt")
    assert log["timings_format"] == "average_inference_timings"
    assert log["timings_us"] == {"warmup_avg": 76605.9, "init": 9933.0, "inference_avg": 66767.6}
    assert log["warmup"]["count"] == 7 and log["inference"]["count"] == 15
    assert log["inference"]["min_iterations"] == 10


def test_percentiles_scientific_notation_and_count_curr_only():
    log = load("ti_am62x_cpu_percentiles_scientific.txt")
    warm, inf = log["warmup"], log["inference"]
    assert warm["count"] == 1 and warm["all_same"] and warm["min"] == warm["max"] == warm["avg"] == 1357602
    assert warm["median"] == 1357602 and warm["std"] == 0.0
    assert inf["avg"] == pytest.approx(1.24027e6) and inf["median"] == 1239807 and inf["p95"] == 1247415
    assert inf["p5"] == 1238753
    assert log["timings_us"]["warmup_avg"] == pytest.approx(1.3576e6)
    assert log["memory"] == {"delta_init_mb": 6.36328, "delta_overall_mb": 109.832}


def test_profiling_tables_do_not_pass_for_run_timings():
    """'Timings (microseconds): count=50 …' in the op-profiling tables is not the inference stat."""
    log = load("meta_tflite_riscv_count1_profiling.txt")
    assert log["warmup"]["count"] == 1 and log["warmup"]["curr"] == 3512391
    assert log["inference"]["first"] == 2990275  # not 2989660 from the profiling summary
    assert log["inference"]["avg"] == pytest.approx(2.95034e6)
    assert log["memory"]["delta_overall_mb"] == 46.0859


def test_peak_memory_line():
    assert load("tf42507_peak_memory.txt")["memory"] == {"peak_init_mb": 0.0, "peak_overall_mb": 12.8672}
    assert load("xnnpack999_rpi_memory_delta.txt")["memory"] == {"delta_init_mb": 8.97656,
                                                                  "delta_overall_mb": 18.7227}


def test_logcat_prefixes_are_ignored():
    log = load("tf56301_nnapi_partial_logcat.txt")
    assert log["inference"]["count"] == 75 and log["inference"]["avg"] == 12167.6
    assert log["delegate_application"] == [{"delegate": "NNAPI", "execution": "partial", "delegate_kernels": 44}]


def test_qnn_zero_nodes_is_an_error_for_the_qnn_delegate():
    log = load("tf83344_qnn_zero_nodes.txt")
    assert log["delegates"] == [{"delegate": "TfLiteQnnDelegate", "delegated_nodes": 0, "total_nodes": 31,
                                 "partitions": 0, "subgraph": None}]
    cov = delegate_coverage(log, DELEGATES.get("qnn").log_names)
    assert cov["percent"] == 0.0 and cov["execution"] == "none"
    with pytest.raises(EdgekitError, match=r"qnn delegate was requested but took no part.*0 of 31 nodes"):
        check_coverage(log, DELEGATES.get("qnn"))
    assert delegate_coverage(log, DELEGATES.get("gpu").log_names) is None


def test_not_executed_by_delegate_is_zero_coverage():
    log = load("tf56301_nnapi_not_executed_logcat.txt")
    with pytest.raises(EdgekitError, match="nnapi delegate was requested but took no part"):
        check_coverage(log, DELEGATES.get("nnapi"))


def test_partial_coverage_as_percentage():
    log = load("litert7858_xnnpack_partial_line.txt")
    cov = check_coverage(log, DELEGATES.get("cpu"))
    assert cov["percent"] == 98.74 and (cov["delegated_nodes"], cov["total_nodes"]) == (470, 476)
    assert cov["execution"] == "partial"


def test_full_gpu_delegation_is_100_percent():
    cov = check_coverage(load("tf43541_gpu_full_delegation.txt"), DELEGATES.get("gpu"))
    assert cov["percent"] == 100.0 and cov["execution"] == "complete"


def test_old_replacing_line_without_total_gives_no_percentage():
    log = load("tflite_unity214_xnnpack_no_total.txt")
    assert log["delegates"][0]["delegated_nodes"] == 269 and log["delegates"][0]["total_nodes"] is None
    assert delegate_coverage(log, ["xnnpack"]) is None


def test_partial_without_counts_reports_unknown_percentage():
    cov = check_coverage(load("ti_am62x_xnnpack_partial.txt"), DELEGATES.get("xnnpack"))
    assert cov["percent"] is None and cov["execution"] == "partial" and cov["delegate_kernels"] == 1


def test_nodes_summed_over_subgraphs():
    # SYNTHETIC: two subgraph lines in the current wording, written for this test (not from a real log).
    text = ("INFO: Replacing 10 out of 12 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 2 "
            "partitions for subgraph 0.\nINFO: Replacing 3 out of 8 node(s) with delegate "
            "(TfLiteXNNPackDelegate) node, yielding 1 partitions for subgraph 1.\n")
    cov = delegate_coverage(parse_benchmark_log(text), ["xnnpack"])
    assert (cov["delegated_nodes"], cov["total_nodes"], cov["percent"]) == (13, 20, 65.0)


def test_truncated_log_is_incomplete():
    text = (FIXTURES / "tf42507_peak_memory.txt").read_text().split("Running benchmark for at least 50")[0]
    log = parse_benchmark_log(text)
    assert log["complete"] is False and log["inference"] is None and log["warmup"]["count"] == 15


def test_parse_stat_handles_all_same_suffix():
    stat = parse_stat("Timings (microseconds): count=3 curr=1356(all same)")
    assert stat["count"] == 3 and stat["min"] == stat["max"] == 1356 and stat["all_same"]
