"""One readable training loop for every model; the dataset's task (edgekit.training.tasks) sets loss and metric."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from edgekit.data import Dataset
from edgekit.models import EdgeModel
from edgekit.progress import progress_bar
from edgekit.recipe import TrainSpec
from edgekit.training.augment import AUGMENTATIONS
from edgekit.training.tasks import TASKS, accuracy  # noqa: F401  (accuracy: re-exported)


@dataclass
class TrainResult:
    model: EdgeModel  # best-on-validation weights, eval mode
    metrics: dict[str, float]


def train_model(model: EdgeModel, data: Dataset, spec: TrainSpec, seed: int) -> TrainResult:
    """AdamW with a one-cycle schedule, for the dataset's task (classification, byte LM, ...);
    keeps the weights with the best validation score of that task."""
    task = TASKS.get(data.task)
    torch.manual_seed(seed)
    torch.set_num_threads(spec.threads)
    gen = torch.Generator().manual_seed(seed)
    augment = AUGMENTATIONS.get(spec.augment)
    steps_per_epoch = -(-len(data.train) // spec.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * steps_per_epoch)
    best, best_state, epochs_run, loss_value = None, None, 0, float("nan")
    start = time.perf_counter()
    out_of_time = lambda: spec.max_seconds and time.perf_counter() - start > spec.max_seconds  # noqa: E731
    with progress_bar("training", total=spec.epochs) as bar:
        for epoch in range(spec.epochs):
            model.train()
            order = torch.randperm(len(data.train), generator=gen)
            for i in range(0, len(order), spec.batch_size):
                idx = order[i:i + spec.batch_size]
                loss = task.loss(model(augment(data.train.inputs[idx], gen)), data.train.labels[idx],
                                 spec.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if spec.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                opt.step()
                sched.step()
                loss_value = loss.item()
                if out_of_time():
                    break
            epochs_run = epoch + 1
            score = task.evaluate(model, data.val)[task.metric]
            if task.better(score, best):
                best, best_state = score, copy.deepcopy(model.state_dict())
            bar.advance()
            bar.note(f"loss {loss_value:.3f} val {task.metric} {score:.4g}")
            if out_of_time():
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    test = task.evaluate(model, data.test)
    metrics = {"train_loss": loss_value, f"val_{task.metric}": best, **{f"test_{k}": v for k, v in test.items()},
               "epochs": epochs_run, "train_seconds": round(seconds, 2)}
    return TrainResult(model.eval(), metrics)


train_classifier = train_model  # the name the CNN path used before tasks existed
