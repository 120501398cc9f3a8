"""Will it run on the accelerator? Per-op placement of an artifact, its coverage, and the ``--require`` gate.

Each format answers for the accelerators it can target (``Converter.accelerators``, ``Converter.placement``):
Core ML the Neural Engine (a written-rules lint anywhere, ``MLComputePlan`` on macOS), LiteRT XNNPACK / GPU /
a phone's NPU, ONNX Runtime's execution providers. All answers share one shape, ``Placement``."""

from edgekit.placement.report import ACCELERATORS, OpPlacement, Placement, Where, placement_cell
from edgekit.placement.gate import PlacementGateFailed, check_required

__all__ = ["ACCELERATORS", "OpPlacement", "Placement", "PlacementGateFailed", "Where", "check_required", "placement_cell"]
