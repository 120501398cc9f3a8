"""Training tasks: what the loss is, how a split is scored, and which metric picks the best weights.

A dataset names its task (``Dataset.task``); the one training loop looks it up here. A new task
(e.g. masked LM) is one ``@TASKS.register`` — the loop does not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from edgekit.data import Split
from edgekit.registry import Registry


@dataclass(frozen=True)
class Task:
    """How one kind of model is trained and scored."""

    # (model outputs, target labels, label smoothing) → scalar loss
    loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    # (eval-mode model, split) → metrics on that split, e.g. {"accuracy": 0.97}
    evaluate: Callable[[torch.nn.Module, Split], dict[str, float]]
    metric: str  # the key of ``evaluate`` that selects the best checkpoint on validation
    higher_is_better: bool  # direction of ``metric``

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value >= best if self.higher_is_better else value <= best


TASKS: Registry[Task] = Registry("training task")


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: Split, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``split``."""
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        logits = model(split.inputs[start:start + batch_size])
        correct += int((logits.argmax(-1) == split.labels[start:start + batch_size]).sum())
    return correct / max(1, len(split))


def _classification_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)  # logits (B, classes), labels (B,)


TASKS.register("classification")(Task(
    loss=_classification_loss, evaluate=lambda m, s: {"accuracy": accuracy(m, s)},
    metric="accuracy", higher_is_better=True))


def _lm_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Next-token cross entropy in nats. logits (B, L, V), labels (B, L)."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), label_smoothing=smoothing)


@torch.no_grad()
def bits_per_byte(model: torch.nn.Module, split: Split, batch_size: int = 32) -> dict[str, float]:
    """Mean next-byte cross entropy over every position of ``split``, in bits (and nats)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(split), batch_size):
        logits = model(split.inputs[start:start + batch_size])  # (B, L, 256)
        labels = split.labels[start:start + batch_size]
        total += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
        count += labels.numel()
    nats = total / max(1, count)
    return {"bits_per_byte": nats / math.log(2), "loss": nats}


TASKS.register("byte_lm")(Task(loss=_lm_loss, evaluate=bits_per_byte, metric="bits_per_byte",
                               higher_is_better=False))
