"""Verification: parity of every artifact with PyTorch, within one tolerance table."""

from edgekit.verify.parity import ReferenceData, compare, reference_from_model
from edgekit.verify.tolerances import TOLERANCES, Tolerance, tolerance_for

__all__ = ["TOLERANCES", "ReferenceData", "Tolerance", "compare", "reference_from_model", "tolerance_for"]
