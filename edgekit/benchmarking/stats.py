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


def time_calls(fn: Callable[[], object], *, warmup: int, runs: int, threads: int,
               budget_s: float | None = None, min_runs: int = 5) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed with perf_counter_ns. With ``budget_s``,
    timing stops once that many seconds of timed calls are spent and at least ``min_runs`` were made (a sweep
    point of a slow graph); the stats record how many runs were made."""
    for _ in range(warmup):
        fn()
    samples = np.empty(runs, dtype=np.float64)
    spent_ns, limit_ns = 0, None if budget_s is None else budget_s * 1e9
    for i in range(runs):
        start = time.perf_counter_ns()
        fn()
        took = time.perf_counter_ns() - start
        samples[i], spent_ns = took / 1e6, spent_ns + took
        if limit_ns is not None and spent_ns >= limit_ns and i + 1 >= min_runs:
            samples = samples[:i + 1]
            break
    return LatencyStats.from_samples(samples, warmup=warmup, threads=threads)


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int, runs: int, threads: int,
                     block: int = 20, settle: int = 5) -> dict[str, LatencyStats]:
    """Time several functions round-robin, ``block`` timed calls of each per round, so that a change in
    machine load during the measurement reaches every function alike: the fair way to compare artifacts
    on a shared host. Each block starts with ``settle`` untimed calls: runtimes' worker threads keep
    spinning for a while after a call (ONNX Runtime, OpenMP) and would slow down the next runtime."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(s) < runs for s in samples.values()):
        for name, fn in fns.items():
            for _ in range(settle):
                fn()
            for _ in range(min(block, runs - len(samples[name]))):
                start = time.perf_counter_ns()
                fn()
                samples[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: LatencyStats.from_samples(s, warmup=warmup, threads=threads) for name, s in samples.items()}
