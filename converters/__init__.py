"""Export formats. Each module registers one converter; `CONVERTERS.get(name)` finds it."""

from edgekit.converters import coreml, onnx, tflite  # noqa: F401  (register the formats)
from edgekit.converters.base import (
    CONVERTERS, PRECISIONS, ArtifactInfo, Converter, ModelSource, Runner, RunnerUnavailable, TensorInfo,
    register_converter,
)

__all__ = [
    "CONVERTERS", "PRECISIONS", "ArtifactInfo", "Converter", "ModelSource", "Runner", "RunnerUnavailable",
    "TensorInfo", "register_converter",
]
