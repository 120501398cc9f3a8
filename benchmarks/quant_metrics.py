"""What benchmarks/quant_matrix.py scores each model on, and how: evaluation sets, metrics, goals, SQNR.

A classifier is scored by top-1 accuracy on its recipe's test split (an image model also on a harder noisy and
shifted copy); a byte LM by bits per byte of next-byte predictions over the recipe's test text, cut into
windows of its prefill graph's static length. Metrics are registered in ``METRICS`` with their goal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

import edgekit

Run = Callable[[list[np.ndarray]], list[np.ndarray]]  # a runner: batch-1 input arrays → output arrays


class EvalSet(NamedTuple):
    """Batch-1 input tuples with their targets: class ids (N,) or next bytes (N, L)."""

    inputs: list[tuple[np.ndarray, ...]]
    labels: np.ndarray
    metric: str  # a key of METRICS
    description: str
    name: str = "test"  # short column name


@dataclass(frozen=True)
class Metric:
    """How first outputs are scored against labels, how a score compares with PyTorch's, and the goal."""

    score: Callable[[list[np.ndarray], np.ndarray], float]  # (first output per sample, labels) → value
    change: Callable[[float, float], float]  # (artifact's value, PyTorch's) → loss, positive = worse
    limit: float  # goal: change ≤ limit
    change_name: str  # column head: "drop pt", "Δ%"
    value_format: str
    goal: str  # the goal in words


def top1(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of (1, C) logits."""
    return float(np.mean([int(np.argmax(o)) == int(y) for o, y in zip(outputs, labels)]))


def bits_per_byte(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean next-byte cross entropy in bits of (1, L, 256) logits against (L,) next bytes per window (as
    edgekit.training.tasks.bits_per_byte computes it from PyTorch, here from any runtime's logits)."""
    total, count = 0.0, 0
    for logits, y in zip(outputs, labels):
        z = np.asarray(logits, dtype=np.float64).reshape(-1, logits.shape[-1])  # (L, V)
        peak = z.max(axis=1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1))
        total += float(np.sum(log_norm - z[np.arange(len(y)), y]))
        count += len(y)
    return total / max(1, count) / math.log(2)


METRICS: dict[str, Metric] = {
    "accuracy": Metric(top1, lambda v, base: (base - v) * 100, 1.0, "drop pt", ".2%", "accuracy drop ≤ 1.0 point"),
    "bits_per_byte": Metric(bits_per_byte, lambda v, base: (v / base - 1) * 100, 3.0, "Δ%", ".4f",
                            "bits/byte increase ≤ 3%"),
}


def sqnr_db(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float | None:
    """10·log10(Σ ref² / Σ (ref − out)²) over every sample; None when identical."""
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    err = ref - np.concatenate([np.asarray(o, np.float64).ravel() for o in outputs])
    noise = float(np.sum(err * err))
    return None if noise == 0 else 10 * math.log10(float(np.sum(ref * ref)) / noise)


def first_outputs(run: Run, inputs: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """``run``'s first output for every sample."""
    return [run(list(x))[0] for x in inputs]


@torch.inference_mode()
def torch_first_outputs(module: torch.nn.Module, inputs: list[tuple[np.ndarray, ...]],
                        chunk: int = 64) -> list[np.ndarray]:
    """PyTorch's first output for every sample, computed in batches of ``chunk``."""
    out = []
    for start in range(0, len(inputs), chunk):
        part = inputs[start:start + chunk]
        y = module(*(torch.from_numpy(np.concatenate(col)) for col in zip(*part)))
        y = y[0] if isinstance(y, (tuple, list)) else y
        out += [y[i:i + 1].numpy() for i in range(len(part))]
    return out


def harder(reference: EvalSet, seed: int = 0) -> EvalSet:
    """The test split with Gaussian noise (σ = 0.3 in normalized units, ~0.1 of the pixel range) and a random
    shift of up to 2 px per 32 px of image (1 px at 8×8): the float CNN scores ~53–68% there at 32×32."""
    gen = np.random.default_rng(seed)
    reach = max(1, reference.inputs[0][0].shape[-1] // 16)
    samples = []
    for (x,) in reference.inputs:
        shifted = np.roll(x, tuple(gen.integers(-reach, reach + 1, size=2)), axis=(2, 3))
        samples.append(((shifted + gen.normal(0, 0.3, x.shape)).astype(np.float32),))
    return EvalSet(samples, reference.labels, reference.metric, f"noisy+shifted {reference.description}", "noisy")


def eval_sets(checkpoint: Path, graph: str, length: int | None, max_windows: int | None) -> list[EvalSet]:
    """The main set of ``graph`` first (labelled test split; for a byte LM, test-text windows of ``length``),
    then for an image classifier its harder copy."""
    ref = edgekit.reference(checkpoint, graph=graph)
    if ref.labels is None:  # an unlabelled graph: a language model's prefill
        return [lm_windows(checkpoint, length or ref.inputs[0][0].shape[-1], max_windows)]
    main = EvalSet(ref.inputs, np.asarray(ref.labels), "accuracy", ref.description)
    return [main, harder(main)] if main.inputs[0][0].ndim == 4 else [main]


def lm_windows(checkpoint: Path, length: int, max_windows: int | None) -> EvalSet:
    """The recipe's test text as back-to-back windows of ``length`` bytes (as the prefill graph's verification
    cuts them), each with the next byte of every position."""
    recipe = json.loads((Path(checkpoint) / "meta.json").read_text())["recipe"]  # JSON, never unpickled
    options = {k: v for k, v in recipe["data"].items() if k != "source"} | {"seed": recipe.get("seed", 0)}
    test = edgekit.DATASETS.get(recipe["data"]["source"])(**options).test
    x, y = test.inputs.reshape(-1), test.labels.reshape(-1)  # next bytes: y[i] == x[i + 1]
    n = x.numel() // length if max_windows is None else min(max_windows, x.numel() // length)
    windows = x[:n * length].reshape(n, length).to(torch.int32).numpy()
    labels = y[:n * length].reshape(n, length).numpy()
    return EvalSet([(w[None],) for w in windows], labels, "bits_per_byte",
                   f"{recipe['name']} test text, {n} windows of {length} bytes")
