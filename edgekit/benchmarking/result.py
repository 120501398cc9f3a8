"""One benchmark result row: which artifact, where it ran, and how fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.benchmarking.stats import LatencyStats


@dataclass
class BenchResult:
    """Latency of one artifact on one target. ``latency`` is None when the run did not happen."""

    artifact: str  # file name inside the bundle, or "pytorch" for the eager baseline
    format: str  # "pytorch", "onnx", "tflite", "coreml", ...
    runtime: str  # "torch-eager", "onnxruntime", "litert-xnnpack", "benchmark_model", ...
    target: str  # "host" or a device id such as "adb:SERIAL"
    latency: LatencyStats | None = None
    status: str = "ok"  # "ok", "not run: <reason>" or "failed: <reason>"
    extra: dict[str, Any] = field(default_factory=dict)  # runtime-specific facts (device info, logs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency"] = self.latency.to_dict() if self.latency else None
        return d
