"""Latency statistics from repeated timed runs."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model in one runtime, in milliseconds."""

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    warmup: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray, *, warmup: int, threads: int) -> "LatencyStats":
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError("no latency samples")
        return cls(
            median_ms=float(np.median(s)),
            p90_ms=float(np.percentile(s, 90)),
            min_ms=float(s.min()),
            mean_ms=float(s.mean()),
            runs=int(s.size),
            warmup=warmup,
            threads=threads,
        )


def time_calls(fn: Callable[[], object], *, warmup: int, runs: int, threads: int) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed with perf_counter_ns."""
    for _ in range(warmup):
        fn()
    samples = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return LatencyStats.from_samples(samples, warmup=warmup, threads=threads)
