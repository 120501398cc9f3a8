"""Planning a quantization: what a QuantSpec needs prepared once (calibrated PT2E graph, mixed-precision
search, QAT, per-layer report) before every converter of a conversion uses it. The QuantPlan is the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import ModelSource
from edgekit.quant.calib import CalibrationData, calibration_for
from edgekit.quant.mixed import eval_set_for, search
from edgekit.quant.calibrate import calibrate
from edgekit.quant.pt2e import PT2E_SCHEMES, QuantGraph
from edgekit.quant.qat import qat_finetune
from edgekit.quant.report import LayerError, layer_report
from edgekit.quant.spec import QuantSpec

REPORT_SAMPLES = 32  # calibration samples used for the per-layer SQNR report


@dataclass
class QuantPlan:
    """What :func:`plan_quantization` prepared for ``spec``, shared by every converter of one conversion."""

    spec: QuantSpec  # as asked (the manifest records it; `edgekit verify` rebuilds the tolerance from it)
    prepared: QuantGraph | None = None  # calibrated graph for int8 / int8-dynamic (its spec: the layers chosen)
    calibration: str = ""  # where the calibration data came from
    layers: list[LayerError] = field(default_factory=list)  # per-layer SQNR vs fp32
    mixed: dict[str, Any] | None = None  # MixedResult.to_dict() when a budget was searched
    qat: dict[str, Any] | None = None  # QAT fine-tuning summary

    @property
    def tag(self) -> str:
        """The spec's short name (``int8``)."""
        return self.spec.tag

    def summary(self) -> dict[str, Any]:
        """What the manifest records about the quantization of an artifact: the whole spec and what was done."""
        out: dict[str, Any] = {"spec": self.spec.to_dict()}
        if self.calibration:
            out["calibration"] = self.calibration
        if self.layers:
            out["layer_sqnr_db"] = [r.to_dict() for r in self.layers]
        if self.mixed:
            out["mixed_precision"] = self.mixed
        if self.qat:
            out["qat"] = self.qat
        return out


def plan_quantization(source: ModelSource, spec: QuantSpec, calib_array: np.ndarray | None = None, *,
                      progress: Callable[[str], None] = lambda _: None) -> QuantPlan:
    """Calibrate once with ``spec.calib_method`` (and search mixed precision / fine-tune with QAT when ``spec``
    asks) for ``spec``; the mixed-precision search and the per-layer report use the same method.

    Calibration data: ``calib_array`` (samples given from Python) when given, else ``spec.calib_source``,
    else the recipe's training split."""
    if calib_array is not None and spec.calib_source is not None:
        raise EdgekitError(f"calibration data given twice: the spec's calib_source {spec.calib_source!r} and an "
                           "array; give one")
    if spec.scheme not in PT2E_SCHEMES:
        return QuantPlan(spec)
    data = (calibration_for(source, spec.calib_samples, spec.calib_source if calib_array is None else calib_array)
            if spec.needs_calibration else CalibrationData((), "none (dynamic)"))
    plan = QuantPlan(spec, calibration=data.description)
    if spec.budget_points is not None or spec.min_sqnr_db is not None:
        _search_mixed(plan, source, data, progress)
    elif spec.qat:
        plan.prepared, plan.qat = qat_finetune(source, spec, data, epochs=spec.qat_epochs, progress=progress)
    else:
        plan.prepared = calibrate(source, spec, data.samples, data.description, progress)
    if spec.needs_calibration:
        plan.layers = layer_report(plan.prepared, data.samples[:REPORT_SAMPLES])
    return plan


def _search_mixed(plan: QuantPlan, source: ModelSource, data: CalibrationData, progress: Callable[[str], None]) -> None:
    """The fewest float layers within the spec's budget and/or reaching its output SQNR goal; the plan keeps the
    spec as asked."""
    evaluation = eval_set_for(source, data)
    spec = plan.spec
    goals = [f"within {spec.budget_points} points"] * (spec.budget_points is not None) + [
        f"to {spec.min_sqnr_db} dB output SQNR"] * (spec.min_sqnr_db is not None)
    progress(f"searching mixed precision {' and '.join(goals)} on {evaluation.description}")
    result = search(source, spec, list(data.samples), evaluation, spec.budget_points, min_sqnr_db=spec.min_sqnr_db,
                    description=data.description, progress=progress)
    plan.prepared = result.quant
    plan.mixed = result.to_dict() | {"evaluated_on": evaluation.description}
