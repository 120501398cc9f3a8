"""Run an artifact on reference inputs and compare it with PyTorch, output by output.

Each output is judged by what it is (``KINDS``): a classifier's logits by top-1 agreement, a language
model's next-token logits by top-1 agreement or mean KL, anything else (boxes, embeddings, states) by its
values; at float precisions every output must also reproduce PyTorch's numbers relative to its own scale.
An output whose reference cannot tell a right conversion from a wrong one (near zero, or constant) is
"not meaningful"; a verification whose every output is so says "not meaningful: <why>", never "passed".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.utils._pytree as pytree

from edgekit.graph import Runner
from edgekit.errors import EdgekitError
from edgekit.verify.tolerances import ALL_OUTPUTS, Criteria, Tolerance

MIL_REFERENCE = "mil-reference"  # verification by evaluating a converted program, not the vendor runtime
NEAR_ZERO = 1e-12  # a reference output whose every |value| is at most this says nothing about a conversion
CONSTANT = 1e-9  # ... nor one whose values spread over at most this share of its largest |value|
# words in an output's name that make it "values" whatever its shape (a (1, 4) box is not 4 class scores)
VALUE_HINTS = ("box", "coord", "landmark", "keypoint", "depth", "embed", "hidden", "state", "cache", "pool",
               "feature", "position", "count")


@dataclass
class ReferenceData:
    """Inputs (one tuple per sample, batch 1) with PyTorch's outputs and, if known, true labels."""

    inputs: list[tuple[np.ndarray, ...]]
    outputs: list[list[np.ndarray]]
    labels: np.ndarray | None
    description: str  # where the inputs came from, e.g. "digits test split (594)"
    output_names: tuple[str, ...] = ()  # the model's output names; () = unknown (see ``names``)

    def __len__(self) -> int:
        return len(self.inputs)

    def names(self) -> tuple[str, ...]:
        """The output names: as given, else ``output`` for a single output, ``output_0``, ``output_1``, ..."""
        count = len(self.outputs[0]) if self.outputs else 0
        if self.named:
            return tuple(self.output_names)
        return ("output",) if count == 1 else tuple(f"output_{k}" for k in range(count))

    @property
    def named(self) -> bool:
        """Whether the model's output names are known (one per output)."""
        return bool(self.output_names) and len(self.output_names) == (len(self.outputs[0]) if self.outputs else 0)


@torch.no_grad()
def reference_from_model(
    model: torch.nn.Module, samples: list[tuple[torch.Tensor, ...]], labels: np.ndarray | None,
    description: str, chunk: int = 128, output_names: tuple[str, ...] = (),
) -> ReferenceData:
    """PyTorch's outputs for every batch-1 sample of an eval-mode model (run in batches of ``chunk``); an
    output that is a tuple, list or dict of tensors is flattened in order (as torch.export does)."""
    outputs: list[list[np.ndarray]] = []
    for start in range(0, len(samples), chunk):
        part = samples[start:start + chunk]
        batched = tuple(torch.cat(column) for column in zip(*part))
        outs = [o.detach().numpy() for o in pytree.tree_leaves(model(*batched)) if isinstance(o, torch.Tensor)]
        outputs += [[o[i:i + 1] for o in outs] for i in range(len(part))]
    inputs = [tuple(t.numpy() for t in sample) for sample in samples]
    return ReferenceData(inputs, outputs, labels, description, tuple(output_names))


def output_kind(name: str, shape: tuple[int, ...], token_input: str, named: bool = True, index: int = 0) -> str:
    """How an output is judged, from its name, its batch-1 shape and the model's integer inputs
    (``token_input``: "none", "sequence", or "single" for one token, a decoding step). Outputs after the
    first of a model whose output names are unknown (``named`` False) are its states: "values"."""
    if any(hint in name.lower() for hint in VALUE_HINTS) or (index and not named):
        return "values"
    if len(shape) == 2 and shape[0] == 1 and shape[1] >= 2:
        return "tokens" if token_input == "single" else "logits"
    if len(shape) == 3 and shape[0] == 1 and shape[1] >= 1 and shape[2] >= 2 and token_input != "none":
        return "tokens"
    return "values"


def _token_input(sample: tuple[np.ndarray, ...]) -> str:
    """"single" when an integer input holds one value (a decoding step's token), "sequence" for other
    integer inputs, "none" without any."""
    ints = [np.asarray(x) for x in sample if np.issubdtype(np.asarray(x).dtype, np.integer)]
    if any(x.size == 1 for x in ints):
        return "single"
    return "sequence" if ints else "none"


@dataclass
class _Survey:
    """What PyTorch's own values of one output say before any artifact runs."""

    scale: float = 0.0  # largest finite |value|
    low: float = math.inf
    high: float = -math.inf
    row_spread: float = 0.0  # largest spread along the last axis (0: arg-max is vacuous in every row)
    non_finite: int = 0
    shape: tuple[int, ...] = ()

    def add(self, y: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64)
        self.shape = y.shape
        finite = y[np.isfinite(y)]
        self.non_finite += int(y.size - finite.size)
        if finite.size:
            self.scale = max(self.scale, float(np.abs(finite).max()))
            self.low, self.high = min(self.low, float(finite.min())), max(self.high, float(finite.max()))
        if y.size and y.ndim and y.shape[-1] > 1 and not self.non_finite:
            self.row_spread = max(self.row_spread, float(np.ptp(y.reshape(-1, y.shape[-1]), axis=-1).max()))

    def degenerate(self, name: str) -> str | None:
        """Why PyTorch's output cannot tell a right conversion from a wrong one, or None."""
        if self.non_finite:
            return None  # a broken reference is a failure (a problem), not "not meaningful"
        if self.scale <= NEAR_ZERO:
            return f"PyTorch's {name} is near zero everywhere (max |y| {self.scale:.1e} ≤ {NEAR_ZERO:g})"
        if self.high - self.low <= CONSTANT * self.scale:
            return f"PyTorch's {name} is the same value ({self.high:.4g}) in every position of every sample"
        return None


class _Output:
    """The running comparison of one output over every sample."""

    def __init__(self, name: str, criteria: Criteria, survey: _Survey) -> None:
        self.name, self.criteria, self.survey = name, criteria, survey
        self.allowed = criteria.max_abs_diff(survey.scale)
        # a near tie in PyTorch's own row (within the |Δ| allowance) is not a disagreement
        self.tie = 2 * self.allowed if self.allowed is not None else 0.0
        self.max_diff = self.sum_diff = self.sq_diff = self.sq_ref = self.kl_bits = self.kl_uniform = 0.0
        self.count = self.non_finite = self.rows = self.agree = self.wrong_shape = 0

    @property
    def arg_max(self) -> bool:
        return self.criteria.kind != "values"

    def add(self, got: np.ndarray, expected: np.ndarray) -> np.ndarray | None:
        """Compare one sample; returns the artifact's arg-max per row (arg-max kinds), else None."""
        e, g = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if g.size != e.size:
            self.wrong_shape += 1
            return None
        g = g.reshape(e.shape)
        finite = np.isfinite(e)
        self.non_finite += int((finite & ~np.isfinite(g)).sum())
        diff = np.abs(g - e)[finite & np.isfinite(g)]
        if diff.size:
            self.max_diff = max(self.max_diff, float(diff.max()))
        self.sum_diff, self.count = self.sum_diff + float(diff.sum()), self.count + diff.size
        self.sq_diff += float((diff ** 2).sum())
        self.sq_ref += float((e[finite] ** 2).sum())
        return self._rows(g, e) if self.arg_max and e.ndim and not (~finite).any() else None

    def _rows(self, g: np.ndarray, e: np.ndarray) -> np.ndarray:
        ref = e.reshape(-1, e.shape[-1])
        out = g.reshape(ref.shape)
        tops, wants = np.nan_to_num(out, nan=-np.inf).argmax(-1), ref.argmax(-1)
        index = np.arange(len(ref))
        self.agree += int(np.sum((tops == wants) | (ref[index, wants] - ref[index, tops] <= self.tie)))
        self.rows += len(ref)
        with np.errstate(all="ignore"):
            kl = _kl_bits(ref, out)
            self.kl_bits += float(np.where(np.isnan(kl), np.inf, kl).sum())
            self.kl_uniform += float(_kl_bits(ref, np.zeros_like(ref)).sum())
        return tops

    @property
    def snr_db(self) -> float | None:
        """10·log10(Σref² / ΣΔ²); None when identical (or nothing to compare)."""
        if self.sq_diff == 0.0 or self.sq_ref == 0.0:
            return None
        return 10 * math.log10(self.sq_ref / self.sq_diff)

    @property
    def rel_error(self) -> float | None:
        """‖artifact − PyTorch‖₂ / ‖PyTorch‖₂ over every sample; None when PyTorch's is all zero."""
        return math.sqrt(self.sq_diff / self.sq_ref) if self.sq_ref else (0.0 if self.sq_diff == 0 else None)

    @property
    def top1(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    @property
    def mean_kl_bits(self) -> float | None:
        return self.kl_bits / self.rows if self.rows else None

    def failures(self) -> list[str]:
        """Why this output fails its criteria (empty when it passes)."""
        return [why for check in CHECKS[self.criteria.kind] if (why := check(self)) is not None]

    def to_dict(self, degenerate: str | None) -> dict[str, Any]:
        c, failures = self.criteria, ([] if degenerate else self.failures())
        status = f"not meaningful: {degenerate}" if degenerate else ("failed" if failures else "passed")
        entry = {"name": self.name, "kind": c.kind, "status": status, "scale": self.survey.scale,
                 "max_abs_diff": self.max_diff, "mean_abs_diff": self.sum_diff / max(1, self.count),
                 "rel_error": self.rel_error, "snr_db": self.snr_db, "non_finite": self.non_finite,
                 "allowed": {"max_abs_diff": self.allowed, "min_snr_db": c.min_snr_db,
                             "min_top1_agreement": c.min_top1_agreement, "max_mean_kl_bits": c.max_mean_kl_bits}}
        if self.arg_max:
            entry |= {"top1_agreement": self.top1, "mean_kl_bits": self.mean_kl_bits}
        return _json_safe(entry | ({"failures": failures} if failures else {}))


def _check_abs(o: _Output) -> str | None:
    if o.allowed is None or o.max_diff <= o.allowed:
        return None
    c = o.criteria
    return (f"max |Δ| {o.max_diff:.3g} (allowed {o.allowed:.3g} = {c.atol:g} + {c.rtol:g} × scale "
            f"{o.survey.scale:.3g})")


def _check_snr(o: _Output) -> str | None:
    snr, least = o.snr_db, o.criteria.min_snr_db
    if least is None or snr is None or snr >= least:
        return None
    return f"SNR {snr:.1f} dB (required ≥ {least:g})"


def _check_top1(o: _Output) -> str | None:
    least = o.criteria.min_top1_agreement
    if least is None or o.top1 is None or o.top1 >= least:
        return None
    return f"top-1 agreement {o.top1:.2%} (required {least:.2%})"


def _check_top1_or_kl(o: _Output) -> str | None:
    """Next-token logits: arg-max agreement, or else a small mean KL — but only while the artifact's
    distributions stay much closer to PyTorch's than a uniform guess is (a zeroed output is uniform)."""
    low_top1, most = _check_top1(o), o.criteria.max_mean_kl_bits
    if low_top1 is None or most is None or o.mean_kl_bits is None:
        return low_top1
    kl, uniform = o.mean_kl_bits, o.kl_uniform / o.rows
    if kl <= most and kl <= uniform / 2:
        return None
    why = f"allowed {most:g}" + (f", and under half the {uniform:.3g} of a uniform guess" if kl <= most else "")
    return f"{low_top1} and mean KL {kl:.3g} bits ({why})"


# output kind → the checks it must pass (each returns why it fails, or None); a check whose criterion is
# not set (None in the Criteria) passes
CHECKS: dict[str, tuple[Callable[[_Output], str | None], ...]] = {
    "values": (_check_abs, _check_snr),
    "logits": (_check_abs, _check_snr, _check_top1),
    "tokens": (_check_abs, _check_snr, _check_top1_or_kl),
}


def compare(run: Runner, reference: ReferenceData, tolerance: Tolerance, method: str) -> dict[str, Any]:
    """Run ``run`` on every reference input and judge each output by its kind and ``tolerance``'s criteria.

    A comparison never passes on a degenerate case: no inputs, an artifact returning fewer outputs than
    PyTorch, non-finite values (in PyTorch's outputs or, where PyTorch's are finite, in the artifact's).
    An output whose reference is near zero or constant is "not meaningful" and skipped; when every output
    is, so is the verification. Labels, when known, belong to the first output (a classifier's)."""
    outputs = _plan(reference, tolerance)
    # labels belong to the first output, when it is a meaningful classifier (or next-token) output
    labelled = reference.labels is not None and bool(outputs) and outputs[0][0].arg_max and outputs[0][1] is None
    missing = correct = 0
    for i, (sample, expected) in enumerate(zip(reference.inputs, reference.outputs)):
        got = run(list(sample))
        missing += max(0, len(expected) - len(got))
        tops = [o.add(g, e) for (o, _), g, e in zip(outputs, got, expected)]
        if labelled and tops and tops[0] is not None:
            correct += int(tops[0][0]) == int(reference.labels[i])
    return _result(reference, tolerance, method, outputs, missing, correct if labelled else None)


def _plan(reference: ReferenceData, tolerance: Tolerance) -> list[tuple[_Output, str | None]]:
    """Per output: its comparison (kind and criteria set) and why its reference is degenerate (or None)."""
    if not len(reference):
        return []
    named = sorted(name for name in tolerance.overrides if name != ALL_OUTPUTS)
    if named and not reference.named:  # a caller that forgot the names would silently drop the user's overrides
        raise EdgekitError(f"cannot apply --tolerance for {', '.join(named)}: the reference data "
                           f"({reference.description}) does not carry the model's output names")
    names, first = reference.names(), reference.outputs[0]
    surveys = [_Survey() for _ in first]
    for expected in reference.outputs:
        for survey, y in zip(surveys, expected):
            survey.add(y)
    token_input, plan = _token_input(reference.inputs[0]), []
    for k, (name, y, survey) in enumerate(zip(names, first, surveys)):
        kind = tolerance.kind_for(name) or output_kind(name, np.shape(y), token_input, reference.named, k)
        if kind != "values" and survey.row_spread <= CONSTANT * survey.scale:
            kind = "values"  # flat along the class axis in every row: arg-max would be vacuous
        plan.append((_Output(name, tolerance.criteria(name, kind), survey), survey.degenerate(name)))
    return plan


def _result(reference: ReferenceData, tolerance: Tolerance, method: str, outputs: list[tuple[_Output, str | None]],
            missing: int, correct: int | None) -> dict[str, Any]:
    n = len(reference)
    per_output = [o.to_dict(why) for o, why in outputs]
    meaningful = [(o, d) for (o, why), d in zip(outputs, per_output) if why is None]
    first = next((o for o, why in outputs if o.arg_max and why is None), None)  # the table's top-1 column
    result: dict[str, Any] = {
        "method": method, "inputs": n, "input_source": reference.description,
        "max_abs_diff": max((o.max_diff for o, _ in outputs), default=0.0),
        "mean_abs_diff": sum(o.sum_diff for o, _ in outputs) / max(1, sum(o.count for o, _ in outputs)),
        "snr_db": min((o.snr_db for o, _ in meaningful if o.snr_db is not None), default=None),  # the worst
        "rel_error": max((o.rel_error for o, _ in meaningful if o.rel_error is not None), default=None),
        "top1_agreement": first.top1 if first else None,  # the first logits / tokens output's
        "mean_kl_bits": first.mean_kl_bits if first else None,  # KL(PyTorch ‖ artifact) of its softmax, bits per row
        "outputs": per_output, "tolerance": tolerance.to_dict(),
    }
    if correct is not None:
        drop = _accuracy_drop(reference, correct / n)
        result |= {"accuracy": correct / n, "accuracy_drop": drop}  # PyTorch's accuracy minus the artifact's
    problems = _problems(n, missing, outputs)
    if problems:
        result["problems"] = problems  # why it failed regardless of the numbers above
    result["status"] = _status(result, meaningful, [why for _, why in outputs if why], tolerance)
    return _json_safe(result)


def _status(result: dict[str, Any], meaningful: list, degenerate: list[str], tolerance: Tolerance) -> str:
    if result.get("problems"):
        return "failed"
    if not meaningful:
        return f"not meaningful: {'; '.join(degenerate)}"
    if any(d["status"] == "failed" for _, d in meaningful) or _drop_exceeded(result, tolerance):
        return "failed"
    return "passed"


def _drop_exceeded(result: dict[str, Any], tolerance: Tolerance) -> bool:
    drop, most = result.get("accuracy_drop"), tolerance.max_accuracy_drop
    return drop is not None and most is not None and drop > most + 1e-12


def _problems(n: int, missing: int, outputs: list[tuple[_Output, str | None]]) -> list[str]:
    """The degenerate cases that fail a comparison whatever its numbers say."""
    found = [] if n else ["no reference inputs to compare on"]
    if missing:
        found.append(f"the artifact returned {missing} fewer outputs than PyTorch")
    for k, (o, _) in enumerate(outputs):
        if o.survey.non_finite:
            found.append(f"PyTorch's own output {k} ({o.name}) has {o.survey.non_finite} non-finite values "
                         "(NaN/inf): the model is broken, there is nothing to verify against")
        if o.wrong_shape:
            found.append(f"output {k} ({o.name}) has another number of values than PyTorch's "
                         f"{tuple(o.survey.shape)} in {o.wrong_shape} samples")
        if o.non_finite:
            found.append(f"output {k} ({o.name}) has {o.non_finite} non-finite values (NaN/inf) where "
                         "PyTorch's are finite")
    return found


def failure_text(fmt: str, result: dict[str, Any]) -> str:
    """One line saying why a verification did not pass: its problems, or per failed output what was off."""
    if result.get("problems"):  # degenerate cases (NaN, no inputs, missing outputs) fail whatever the numbers
        return f"{fmt} artifact fails verification: {'; '.join(result['problems'])}"
    status = str(result.get("status", "failed"))
    if status != "failed":
        return f"{fmt} artifact was not verified: {status}"
    parts = [f"{o.get('name', k)}: {', '.join(o['failures'])}" for k, o in enumerate(result.get("outputs", []))
             if isinstance(o, dict) and o.get("failures")]
    drop, most = result.get("accuracy_drop"), (result.get("tolerance") or {}).get("max_accuracy_drop")
    if drop is not None and most is not None and drop > most + 1e-12:
        parts.append(f"accuracy drop {100 * drop:.2f} points (allowed {100 * most:.2f})")
    return f"{fmt} artifact disagrees with PyTorch: {'; '.join(parts) or status}"


def _kl_bits(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) ‖ softmax(got)) in bits for each row of two (rows, classes) logit arrays."""
    if ref.shape[-1] < 2:
        return np.zeros(len(ref))
    log_p = ref - ref.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    log_q = got - got.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    return (np.exp(log_p) * (log_p - log_q)).sum(-1) / np.log(2)


def _accuracy_drop(reference: ReferenceData, accuracy: float) -> float:
    """PyTorch's accuracy (arg-max of the first output's first row) minus ``accuracy``."""
    hits = sum(int(np.argmax(out[0].reshape(-1, out[0].shape[-1])[0])) == int(y)
               for out, y in zip(reference.outputs, reference.labels))
    return hits / len(reference) - accuracy


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (inf, NaN) as None, so the result stays valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
