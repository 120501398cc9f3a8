"""Benchmarks: latency statistics, host runners, result rows."""

from edgekit.bench.host import bench_artifact, bench_bundle, bench_torch
from edgekit.bench.result import BenchResult
from edgekit.bench.stats import LatencyStats, time_calls

__all__ = ["BenchResult", "LatencyStats", "bench_artifact", "bench_bundle", "bench_torch", "time_calls"]
