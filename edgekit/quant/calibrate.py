"""Calibrate with the method a QuantSpec names: one call for the plan, the mixed-precision search and the tests.

The calibrators are registered in ``edgekit.quant.pt2e.CALIBRATORS`` by the modules that implement them: the PT2E
observers (``histogram``, ``minmax``) in ``pt2e``, NNCF's algorithms in ``nncf_ptq`` (imported here to register)."""

from __future__ import annotations

from typing import Sequence

from edgekit.graph import ModelSource
from edgekit.quant import nncf_ptq  # noqa: F401 - registers the NNCF methods
from edgekit.quant.pt2e import CALIBRATORS, Progress, QuantGraph, Sample
from edgekit.quant.spec import QuantSpec


def calibrate(source: ModelSource, spec: QuantSpec, samples: Sequence[Sample], description: str = "",
              progress: Progress = lambda _: None) -> QuantGraph:
    """The calibrated graph of ``source`` for ``spec`` (its ``calib_method``) on ``samples``."""
    return CALIBRATORS.get(spec.calib_method.value)(source, spec, samples, description, progress)
