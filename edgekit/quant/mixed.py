"""Mixed precision within an accuracy budget or to an output SQNR goal: keep the most sensitive layers in float
until it holds.

Sensitivity of a layer = SQNR (dB) of the model output when only that layer is quantized (lower =
more sensitive). Layers go back to float, most sensitive first, until the accuracy drop against
the float model is within the budget (in percentage points), measured on labelled held-out data
(the recipe's validation split) or, without labels, as top-1 disagreement with the float model, and/or
until the output SQNR against the float model on the same evaluation set reaches the goal (dB). With both
given, both must hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from edgekit.graph import ModelSource
from edgekit.quant.calib import CalibrationData, Sample, recipe_split
from edgekit.quant.calibrate import calibrate
from edgekit.quant.pt2e import QuantGraph, export_graph, layer_nodes
from edgekit.quant.report import sqnr_db
from edgekit.quant.spec import QuantSpec


@dataclass(frozen=True)
class EvalSet:
    """Held-out inputs with labels (or the float model's own top-1 when there are none). A sample's label is
    one class, or one per row of the first output's last axis (a sequence model's positions)."""

    samples: tuple[Sample, ...]
    labels: tuple[int | torch.Tensor, ...]
    description: str


@dataclass
class MixedResult:
    quant: QuantGraph  # calibrated (spec.calib_method) with the chosen float layers
    float_accuracy: float
    accuracy: float  # of the chosen quantized graph
    budget_points: float | None  # None: no accuracy criterion
    float_layers: tuple[str, ...]
    min_sqnr_db: float | None = None  # output SQNR goal (dB); None: no SQNR criterion
    sqnr_db: float = math.inf  # output SQNR (dB) of the chosen quantized graph vs float on the evaluation set
    sensitivity: dict[str, float] = field(default_factory=dict)  # layer → output SQNR dB, quantized alone
    steps: list[dict[str, Any]] = field(default_factory=list)  # accuracy and SQNR after each layer went float

    @property
    def drop_points(self) -> float:
        return 100 * (self.float_accuracy - self.accuracy)

    @property
    def within_budget(self) -> bool | None:
        """Whether the accuracy drop is within the budget (None without a budget)."""
        return None if self.budget_points is None else self.drop_points <= self.budget_points + 1e-9

    @property
    def sqnr_met(self) -> bool | None:
        """Whether the output SQNR reaches the goal (None without a goal)."""
        return None if self.min_sqnr_db is None else self.sqnr_db >= self.min_sqnr_db

    @property
    def met(self) -> bool:
        """Whether every criterion given holds."""
        return self.within_budget is not False and self.sqnr_met is not False

    def record(self, quant: QuantGraph, floats: Sequence[str], accuracy: float, sqnr: float) -> None:
        """Take ``quant`` (``floats`` kept in float) as the current choice and log it as a step."""
        self.quant, self.float_layers, self.accuracy, self.sqnr_db = quant, tuple(floats), accuracy, sqnr
        self.steps.append({"float_layers": list(floats), "accuracy": accuracy, "sqnr_db": _rounded(sqnr)})

    def to_dict(self) -> dict[str, Any]:
        return {"budget_points": self.budget_points, "float_accuracy": self.float_accuracy,
                "accuracy": self.accuracy, "drop_points": round(self.drop_points, 3),
                "within_budget": self.within_budget, "min_sqnr_db": self.min_sqnr_db,
                "sqnr_db": _rounded(self.sqnr_db), "sqnr_met": self.sqnr_met, "goal_met": self.met,
                "float_layers": list(self.float_layers), "sensitivity_db": self.sensitivity, "steps": self.steps}


def _rounded(db: float) -> float | None:
    """dB for JSON: None when bit-exact (inf)."""
    return None if math.isinf(db) else round(db, 2)


@torch.no_grad()
def eval_set_for(source: ModelSource, calib: CalibrationData) -> EvalSet:
    """The recipe's validation split when there is one; else the calibration inputs, labelled by the float model."""
    split = recipe_split(source, "val")
    if split is not None and source.samples is None:
        inputs, labels, name = split
        return EvalSet(tuple((x[None],) for x in inputs), tuple(int(y) for y in labels), f"{name} ({len(labels)})")
    reference = export_graph(source)
    labels = tuple(_top1(reference(*s)) for s in calib.samples)
    return EvalSet(tuple(calib.samples), labels, f"{calib.description}, float top-1 as labels")


@torch.no_grad()
def accuracy(gm: torch.fx.GraphModule, data: EvalSet) -> float:
    """Top-1 accuracy of a batch-1 graph over the evaluation set (over every row of a sequence's output)."""
    return _score(gm, data)[0]


@torch.no_grad()
def _score(gm: torch.fx.GraphModule, data: EvalSet,
           reference: Sequence[torch.Tensor] = ()) -> tuple[float, float, list[torch.Tensor]]:
    """(top-1 accuracy, output SQNR dB against ``reference`` (inf without one), the first outputs) of a batch-1
    graph over the evaluation set, from one pass."""
    hits = rows = 0
    outs = []
    for sample, label in zip(data.samples, data.labels):
        outs.append(_first(gm(*sample)).detach())
        found = _top1(outs[-1])
        hits += int((found == torch.as_tensor(label).reshape(-1)).sum())
        rows += found.numel()
    sqnr = sqnr_db(torch.cat([r.reshape(-1) for r in reference]), torch.cat([o.reshape(-1) for o in outs])) \
        if reference else math.inf
    return hits / max(1, rows), sqnr, outs


def _top1(out: Any) -> torch.Tensor:
    """The arg-max class of each row of the first output's last axis (one row for a classifier)."""
    first = _first(out)
    return first.reshape(-1, first.shape[-1]).argmax(-1)


@torch.no_grad()
def sensitivity(source: ModelSource, spec: QuantSpec, calib: Sequence[Sample], probe: Sequence[Sample]) -> dict[str, float]:
    """Output SQNR (dB) with one layer quantized at a time; lowest first."""
    reference = export_graph(source)
    ref_out = [_first(reference(*s)) for s in probe]
    layers = list(layer_nodes(reference))
    scores = {}
    for layer in layers:
        one = calibrate(source, with_float_layers(spec, [x for x in layers if x != layer]), calib)
        gm = one.converted(fold_quantize=False)
        got = torch.cat([_first(gm(*s)) for s in probe])
        scores[layer] = round(sqnr_db(torch.cat(ref_out), got), 2)
    return dict(sorted(scores.items(), key=lambda kv: kv[1]))


def search(source: ModelSource, spec: QuantSpec, calib: Sequence[Sample], data: EvalSet,
           budget_points: float | None = None, *, min_sqnr_db: float | None = None, description: str = "",
           probe: int = 32, progress: Callable[[str], None] = lambda _: None) -> MixedResult:
    """Fewest float layers (greedy, most sensitive first) whose accuracy drop is within ``budget_points`` and/or
    whose output SQNR against the float model reaches ``min_sqnr_db`` (both, when both are given)."""
    float_acc, _, reference = _score(export_graph(source), data)
    quant = calibrate(source, spec, calib, description)
    result = MixedResult(quant, float_acc, 0.0, budget_points, spec.float_layers, min_sqnr_db)
    result.record(quant, spec.float_layers, *_score(quant.converted(False), data, reference)[:2])
    if result.met:
        return result
    progress("measuring per-layer sensitivity")
    result.sensitivity = sensitivity(source, spec, calib[:probe], data.samples[:probe])
    floats = list(spec.float_layers)
    for layer in result.sensitivity:
        if layer in floats:
            continue
        floats.append(layer)
        progress(f"keeping {layer} in float")
        quant = calibrate(source, with_float_layers(spec, floats), calib, description)
        result.record(quant, floats, *_score(quant.converted(False), data, reference)[:2])
        if result.met:
            break
    return result


def with_float_layers(spec: QuantSpec, layers: Sequence[str]) -> QuantSpec:
    """``spec`` keeping exactly ``layers`` in float by name (its op-type overrides kept)."""
    return replace(spec, layers=tuple((name, None) for name in layers))


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out
