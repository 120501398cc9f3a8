"""Run an artifact on reference inputs and compare it with PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgekit.graph import Runner
from edgekit.verify.tolerances import Tolerance


MIL_REFERENCE = "mil-reference"  # verification by evaluating a converted program, not the vendor runtime


@dataclass
class ReferenceData:
    """Inputs (one tuple per sample, batch 1) with PyTorch's outputs and, if known, true labels."""

    inputs: list[tuple[np.ndarray, ...]]
    outputs: list[list[np.ndarray]]
    labels: np.ndarray | None
    description: str  # where the inputs came from, e.g. "digits test split (594)"

    def __len__(self) -> int:
        return len(self.inputs)


@torch.no_grad()
def reference_from_model(
    model: torch.nn.Module, samples: list[tuple[torch.Tensor, ...]], labels: np.ndarray | None,
    description: str, chunk: int = 128,
) -> ReferenceData:
    """PyTorch's outputs for every batch-1 sample of an eval-mode model (run in batches of ``chunk``)."""
    outputs: list[list[np.ndarray]] = []
    for start in range(0, len(samples), chunk):
        part = samples[start:start + chunk]
        batched = tuple(torch.cat(column) for column in zip(*part))
        out = model(*batched)
        outs = [o.detach().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
        outputs += [[o[i:i + 1] for o in outs] for i in range(len(part))]
    inputs = [tuple(t.numpy() for t in sample) for sample in samples]
    return ReferenceData(inputs, outputs, labels, description)


def compare(run: Runner, reference: ReferenceData, tolerance: Tolerance, method: str) -> dict[str, Any]:
    """Max/mean |Δ| over every output; top-1 agreement on the first output, per row of its last axis
    (one row for a classifier, one per position for a sequence of logits); accuracy if labelled.

    A comparison never passes on a degenerate case: no inputs, non-finite values (in PyTorch's outputs
    or, where PyTorch's are finite, in the artifact's), or a first output that is the same in every row
    (arg-max agreement would be vacuous). Outputs after the first (a step graph's states) are judged by
    max |Δ| and, for every precision, by their relative error."""
    tally = _Tally(len(reference.outputs[0]) if len(reference) else 0,
                   2 * tolerance.max_abs_diff if tolerance.max_abs_diff is not None else 0.0)
    for i, (sample, expected) in enumerate(zip(reference.inputs, reference.outputs)):
        tally.add(run(list(sample)), expected, None if reference.labels is None else int(reference.labels[i]))
    n = len(reference)
    top1 = tally.agree / max(1, tally.rows)
    mean_kl = tally.kl_bits / max(1, tally.rows)
    close = top1 >= tolerance.min_top1_agreement
    if reference.labels is None and tolerance.max_mean_kl_bits is not None:
        # unlabelled (a language model's next-byte logits): near ties among 256 bytes make arg-max
        # flip where the distributions barely differ, so judge how far the distribution moved
        close = close or mean_kl <= tolerance.max_mean_kl_bits
    max_diff = max(tally.max_diff, default=0.0)
    passed = (tolerance.max_abs_diff is None or max_diff <= tolerance.max_abs_diff) and close
    drop = _accuracy_drop(reference, tally.correct / n) if reference.labels is not None and n else None
    if drop is not None and tolerance.max_accuracy_drop is not None:
        passed = passed and drop <= tolerance.max_accuracy_drop + 1e-12
    problems = tally.problems(n, tolerance)
    result = {
        "status": "passed" if passed and not problems else "failed",
        "method": method,
        "inputs": n,
        "input_source": reference.description,
        "max_abs_diff": max_diff,
        "mean_abs_diff": tally.sum_diff / max(1, tally.count),
        "top1_agreement": top1,
        "mean_kl_bits": mean_kl,  # KL(PyTorch ‖ artifact) of the softmax of the first output, bits per row
        "outputs": tally.per_output(),
        "tolerance": tolerance.to_dict(),
    }
    if problems:
        result["problems"] = problems  # why it failed regardless of the numbers above
    if reference.labels is not None:
        result["accuracy"] = tally.correct / max(1, n)
        result["accuracy_drop"] = drop  # PyTorch's accuracy on the same inputs minus the artifact's
    return result


class _Tally:
    """Running sums of one comparison, per output and over all outputs."""

    def __init__(self, n_outputs: int, tie: float) -> None:
        self.tie = tie  # a near tie in PyTorch's own output (within the error allowance) is not a disagreement
        self.max_diff = [0.0] * n_outputs
        self.sq_diff, self.sq_ref = [0.0] * n_outputs, [0.0] * n_outputs
        self.bad_artifact, self.bad_reference = [0] * n_outputs, [0] * n_outputs
        self.missing = 0
        self.sum_diff, self.count, self.agree, self.rows, self.correct, self.kl_bits = 0.0, 0, 0, 0, 0, 0.0
        self.varied_rows = 0  # rows of the first output whose values are not all equal (arg-max means something)

    def add(self, got: list[np.ndarray], expected: list[np.ndarray], label: int | None) -> None:
        self.missing += max(0, len(expected) - len(got))
        for k, (g, e) in enumerate(zip(got, expected)):
            g, e = np.asarray(g, dtype=np.float64).reshape(np.shape(e)), np.asarray(e, dtype=np.float64)
            finite_ref = np.isfinite(e)
            self.bad_reference[k] += int(e.size - finite_ref.sum())
            self.bad_artifact[k] += int((finite_ref & ~np.isfinite(g)).sum())
            both = finite_ref & np.isfinite(g)
            diff = np.abs(g[both] - e[both])
            if diff.size:
                self.max_diff[k] = max(self.max_diff[k], float(diff.max()))
            self.sum_diff += float(diff.sum())
            self.count += diff.size
            self.sq_diff[k] += float((diff ** 2).sum())
            self.sq_ref[k] += float((e[both] ** 2).sum())
        if not got:
            return
        ref = np.asarray(expected[0], dtype=np.float64)
        ref = ref.reshape(-1, ref.shape[-1] if ref.ndim else 1)
        out = np.asarray(got[0], dtype=np.float64).reshape(ref.shape)
        tops, wants = np.nan_to_num(out, nan=-np.inf).argmax(-1), ref.argmax(-1)
        index = np.arange(len(ref))
        self.agree += int(np.sum((tops == wants) | (ref[index, wants] - ref[index, tops] <= self.tie)))
        self.rows += len(ref)
        self.varied_rows += int(np.sum(np.ptp(ref, axis=-1) > self.tie)) if ref.shape[-1] > 1 else len(ref)
        with np.errstate(all="ignore"):
            self.kl_bits += float(np.nan_to_num(_kl_bits(ref, out), nan=np.inf).sum())
        if label is not None:
            self.correct += int(tops[0]) == label

    def rel_error(self, k: int) -> float:
        """‖artifact − PyTorch‖₂ / ‖PyTorch‖₂ of output k over every sample (0 when both are all zero)."""
        if self.sq_ref[k] == 0.0:
            return 0.0 if self.sq_diff[k] == 0.0 else float("inf")
        return float(np.sqrt(self.sq_diff[k] / self.sq_ref[k]))

    def per_output(self) -> list[dict[str, Any]]:
        return [{"max_abs_diff": self.max_diff[k], "rel_error": self.rel_error(k),
                 "non_finite": self.bad_artifact[k]} for k in range(len(self.max_diff))]

    def problems(self, n: int, tolerance: Tolerance) -> list[str]:
        """The degenerate cases that fail a comparison whatever its numbers say."""
        found = [] if n else ["no reference inputs to compare on"]
        if self.missing:
            found.append(f"the artifact returned {self.missing} fewer outputs than PyTorch")
        for k in range(len(self.max_diff)):
            if self.bad_reference[k]:
                found.append(f"PyTorch's own output {k} has {self.bad_reference[k]} non-finite values "
                             "(NaN/inf): the model is broken, there is nothing to verify against")
            if self.bad_artifact[k]:
                found.append(f"output {k} has {self.bad_artifact[k]} non-finite values (NaN/inf) where "
                             "PyTorch's are finite")
            if k and self.rel_error(k) > tolerance.max_rel_error:
                found.append(f"output {k} is off by a relative error of {self.rel_error(k):.3g} "
                             f"(allowed {tolerance.max_rel_error:.3g})")
        if n and self.rows and not self.varied_rows:
            found.append("PyTorch's first output is the same value in every position of every sample "
                         "(all zero or constant): top-1 agreement would be vacuous")
        return found


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
    hits = sum(int(np.argmax(out[0])) == int(y) for out, y in zip(reference.outputs, reference.labels))
    return hits / len(reference) - accuracy
