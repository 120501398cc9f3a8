"""Run an artifact on reference inputs and compare it with PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgekit.converters.base import Runner
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
    (one row for a classifier, one per position for a sequence of logits); accuracy if labelled."""
    max_diff, sum_diff, count, agree, rows, correct, kl_bits = 0.0, 0.0, 0, 0, 0, 0, 0.0
    tie = 2 * tolerance.max_abs_diff if tolerance.max_abs_diff is not None else 0.0
    for i, (sample, expected) in enumerate(zip(reference.inputs, reference.outputs)):
        got = run(list(sample))
        for g, e in zip(got, expected):
            diff = np.abs(np.asarray(g, dtype=np.float64) - e)
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.sum())
            count += diff.size
        ref = np.asarray(expected[0], dtype=np.float64)
        ref = ref.reshape(-1, ref.shape[-1] if ref.ndim else 1)
        tops = np.asarray(got[0]).reshape(ref.shape).argmax(-1)
        wants = ref.argmax(-1)
        index = np.arange(len(ref))
        # a near tie in PyTorch's own output (within the error allowance) is not a disagreement
        agree += int(np.sum((tops == wants) | (ref[index, wants] - ref[index, tops] <= tie)))
        rows += len(ref)
        kl_bits += float(_kl_bits(ref, np.asarray(got[0], dtype=np.float64).reshape(ref.shape)).sum())
        if reference.labels is not None:
            correct += int(tops[0]) == int(reference.labels[i])
    n = len(reference)
    top1 = agree / max(1, rows)
    mean_kl = kl_bits / max(1, rows)
    close = top1 >= tolerance.min_top1_agreement
    if reference.labels is None and tolerance.max_mean_kl_bits is not None:
        # unlabelled (a language model's next-byte logits): near ties among 256 bytes make arg-max
        # flip where the distributions barely differ, so judge how far the distribution moved
        close = close or mean_kl <= tolerance.max_mean_kl_bits
    passed = (tolerance.max_abs_diff is None or max_diff <= tolerance.max_abs_diff) and close
    drop = _accuracy_drop(reference, correct / n) if reference.labels is not None else None
    if drop is not None and tolerance.max_accuracy_drop is not None:
        passed = passed and drop <= tolerance.max_accuracy_drop + 1e-12
    result = {
        "status": "passed" if passed else "failed",
        "method": method,
        "inputs": n,
        "input_source": reference.description,
        "max_abs_diff": max_diff,
        "mean_abs_diff": sum_diff / max(1, count),
        "top1_agreement": top1,
        "mean_kl_bits": mean_kl,  # KL(PyTorch ‖ artifact) of the softmax of the first output, bits per row
        "tolerance": tolerance.to_dict(),
    }
    if reference.labels is not None:
        result["accuracy"] = correct / n
        result["accuracy_drop"] = drop  # PyTorch's accuracy on the same inputs minus the artifact's
    return result


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
