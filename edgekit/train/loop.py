"""One readable training loop for every classification model."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgekit.data import Dataset, Split
from edgekit.models import EdgeModel
from edgekit.progress import progress_bar
from edgekit.recipe import TrainSpec
from edgekit.train.augment import AUGMENTATIONS


@dataclass
class TrainResult:
    model: EdgeModel  # best-on-validation weights, eval mode
    metrics: dict[str, float]


@torch.no_grad()
def accuracy(model: EdgeModel, split: Split, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``split``."""
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        logits = model(split.inputs[start:start + batch_size])
        correct += int((logits.argmax(-1) == split.labels[start:start + batch_size]).sum())
    return correct / max(1, len(split))


def train_classifier(model: EdgeModel, data: Dataset, spec: TrainSpec, seed: int) -> TrainResult:
    """AdamW with a one-cycle schedule; keeps the weights with the best validation accuracy."""
    torch.manual_seed(seed)
    torch.set_num_threads(spec.threads)
    gen = torch.Generator().manual_seed(seed)
    augment = AUGMENTATIONS.get(spec.augment)
    steps_per_epoch = -(-len(data.train) // spec.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * steps_per_epoch)
    best_acc, best_state, epochs_run, loss_value = -1.0, None, 0, float("nan")
    start = time.perf_counter()
    with progress_bar("training", total=spec.epochs) as bar:
        for epoch in range(spec.epochs):
            model.train()
            order = torch.randperm(len(data.train), generator=gen)
            for i in range(0, len(order), spec.batch_size):
                idx = order[i:i + spec.batch_size]
                x = augment(data.train.inputs[idx], gen)
                loss = F.cross_entropy(model(x), data.train.labels[idx], label_smoothing=spec.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_value = loss.item()
            epochs_run = epoch + 1
            val_acc = accuracy(model, data.val)
            if val_acc >= best_acc:
                best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
            bar.advance()
            bar.note(f"loss {loss_value:.3f} val {val_acc:.2%}")
            if spec.max_seconds and time.perf_counter() - start > spec.max_seconds:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    metrics = {"train_loss": loss_value, "val_accuracy": best_acc, "test_accuracy": accuracy(model, data.test),
               "epochs": epochs_run, "train_seconds": round(seconds, 2)}
    return TrainResult(model.eval(), metrics)
