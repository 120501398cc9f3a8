"""Verification: parity of every artifact with PyTorch, within one tolerance table."""

from edgekit.verify.parity import MIL_REFERENCE, ReferenceData, compare, failure_text, reference_from_model
from edgekit.verify.tolerances import (KINDS, TOLERANCES, OutputTolerance, Tolerance, check_output_names,
                                       parse_tolerances, tolerance_for)

__all__ = ["KINDS", "MIL_REFERENCE", "TOLERANCES", "OutputTolerance", "ReferenceData", "Tolerance",
           "check_output_names", "compare", "failure_text", "parse_tolerances", "reference_from_model",
           "tolerance_for"]
