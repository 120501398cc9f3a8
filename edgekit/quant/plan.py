"""A QuantPlan: the spec plus what was prepared for it once (calibrated graph, mixed precision, QAT,
per-layer report), shared by every converter of a conversion."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.graph import ModelSource
from edgekit.quant.spec import QuantSpec
from edgekit.quant.pt2e import PT2E_SCHEMES, PreparedQuant

REPORT_SAMPLES = 32  # calibration samples used for the per-layer SQNR report


@dataclass
class QuantPlan:
    spec: QuantSpec
    prepared: PreparedQuant | None = None  # calibrated PT2E graph for int8 / int8-dynamic
    budget_points: float | None = None  # allowed accuracy drop (percentage points) when given
    calibration: str = ""  # where the calibration data came from
    layers: list = field(default_factory=list)  # LayerError rows (per-layer SQNR vs fp32)
    mixed: dict[str, Any] | None = None  # MixedResult.to_dict() when a budget was searched
    qat: dict[str, Any] | None = None  # QAT fine-tuning summary

    @property
    def tag(self) -> str:
        return self.spec.tag

    def summary(self) -> dict[str, Any]:
        """What the manifest records about the quantization of an artifact."""
        out: dict[str, Any] = {"spec": self.spec.to_dict(), "calibration": self.calibration}
        if self.budget_points is not None:
            out["accuracy_budget_points"] = self.budget_points
        if self.layers:
            out["layer_sqnr_db"] = [r.to_dict() for r in self.layers]
        if self.mixed:
            out["mixed_precision"] = self.mixed
        if self.qat:
            out["qat"] = self.qat
        return out


def plan_quantization(
    source: ModelSource, precision: str | QuantSpec | QuantPlan, *, calib: str | Path | np.ndarray | None = None,
    budget_points: float | None = None, qat_epochs: int = 0, progress: Callable[[str], None] = lambda _: None,
) -> QuantPlan:
    """Calibrate once (and search mixed precision / fine-tune with QAT when asked) for ``precision``."""
    if isinstance(precision, QuantPlan):
        return precision
    spec = QuantSpec.parse(precision)
    if qat_epochs and not spec.qat:
        spec = replace(spec, qat=True)
    spec.check_options(budget_points, qat_epochs)
    if spec.scheme not in PT2E_SCHEMES:
        return QuantPlan(spec, budget_points=budget_points)
    from edgekit.quant.calib import CalibrationData, calibration_for

    data = calibration_for(source, spec.calib_samples, calib) if spec.needs_calibration else CalibrationData((), "none (dynamic)")
    plan = QuantPlan(spec, budget_points=budget_points, calibration=data.description)
    if budget_points is not None:
        _search_mixed(plan, source, data, progress)
    elif spec.qat:
        from edgekit.quant.qat import qat_finetune

        plan.prepared, plan.qat = qat_finetune(source, spec, data, epochs=qat_epochs or 1, progress=progress)
    else:
        from edgekit.quant.pt2e import prepare_quant

        progress(f"calibrating on {data.description}")
        plan.prepared = prepare_quant(source, spec, data.samples, data.description)
    if spec.needs_calibration:
        from edgekit.quant.report import layer_report

        plan.layers = layer_report(plan.prepared, data.samples[:REPORT_SAMPLES])
    return plan


def _search_mixed(plan: QuantPlan, source: ModelSource, data, progress: Callable[[str], None]) -> None:
    from edgekit.quant.mixed import eval_set_for, search

    evaluation = eval_set_for(source, data)
    progress(f"searching mixed precision within {plan.budget_points} points on {evaluation.description}")
    result = search(source, plan.spec, list(data.samples), evaluation, plan.budget_points, description=data.description,
                    progress=progress)
    plan.prepared, plan.spec = result.quant, result.quant.spec
    plan.mixed = result.to_dict() | {"evaluated_on": evaluation.description}
