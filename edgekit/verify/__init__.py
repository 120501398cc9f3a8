"""Verification: parity of every artifact with PyTorch, within one tolerance table."""

from edgekit.verify.parity import MIL_REFERENCE, ReferenceData, compare, reference_from_model
from edgekit.verify.tolerances import TOLERANCES, Tolerance, tolerance_for

__all__ = ["MIL_REFERENCE", "TOLERANCES", "ReferenceData", "Tolerance", "compare", "reference_from_model", "tolerance_for"]
