"""Train a LoRA adapter for a base checkpoint: base frozen and in eval mode, only lora_A/lora_B learn."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edgekit.checkpoint import Checkpoint, load_checkpoint
from edgekit.config import dataclass_from_dict
from edgekit.data import Split
from edgekit.errors import EdgekitError
from edgekit.lora.adapter import safe_name, save_adapter
from edgekit.lora.domains import AdaptData, load_domain, load_user_data
from edgekit.lora.layers import check_rank, count_parameters, inject_lora, lora_state_dict, resolve_targets
from edgekit.registry import Registry
from edgekit.training.tasks import TASKS

# default LoRA targets per model family (fnmatch globs on module names); `--targets` overrides
DEFAULT_TARGETS: Registry[tuple[str, ...]] = Registry("LoRA target default")
DEFAULT_TARGETS.register("cnn")(("*",))  # every full conv and the classifier (depthwise convs are skipped)
DEFAULT_TARGETS.register("ssm")(("*.in_proj", "*.out_proj"))  # the Mamba-2 block projections
DEFAULT_TARGETS.register("transformer")(("*.attn.qkv", "*.attn.out"))  # attention projections
FALLBACK_TARGETS = ("*",)  # any other family: every supported layer
MIN_VALIDATION = 16  # validation examples drawn beyond --examples (a quarter as many, at least this)
VALIDATIONS = 15  # validation checks per run (plus step 0)


@dataclass(frozen=True)
class AdaptOptions:
    """How to train one adapter (the `edgekit adapt` flags and a recipe's ``[adapt]`` section)."""

    rank: int = 8  # r: rank of each low-rank update
    alpha: float = 16.0  # the update is scaled by alpha / r
    targets: tuple[str, ...] = ()  # module-name globs; () = the family's default
    steps: int = 300  # optimizer steps
    examples: int = 200  # training examples drawn from the domain (image count, or text windows)
    lr: float = 1e-2  # AdamW learning rate (cosine decay to 0)
    batch_size: int = 32
    seed: int = 0
    threads: int = 2  # torch intra-op threads while training


@dataclass
class AdaptResult:
    path: Path  # the adapter folder
    meta: dict[str, Any]
    model: torch.nn.Module = field(repr=False)  # the base with the trained LoRA layers, eval mode


def default_targets(family: str) -> tuple[str, ...]:
    return DEFAULT_TARGETS.get(family) if family in DEFAULT_TARGETS else FALLBACK_TARGETS


def adapt_checkpoint(checkpoint: str | Path | Checkpoint, out: str | Path, *, domain: str | None = None,
                     data: str | Path | None = None, options: AdaptOptions = AdaptOptions(),
                     name: str | None = None) -> AdaptResult:
    """Train a LoRA adapter of ``checkpoint`` on a registered ``domain`` or the user's ``data`` and save
    it to ``out`` (adapter.safetensors + adapter.json with metrics before and after)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if (domain is None) == (data is None):
        raise EdgekitError("give exactly one of --domain NAME or --data PATH")
    check_adapt_options(ckpt, options)  # before any data is drawn or anything trains
    extra = max(MIN_VALIDATION, options.examples // 4)  # drawn beyond --examples, to pick the best step
    drawn = (load_domain(domain, ckpt, options.examples + extra, options.seed) if domain
             else load_user_data(data, ckpt, options.examples + extra, options.seed))
    adapt_data, validation = split_validation(drawn, options.examples)
    family = ckpt.meta["family"]
    globs = list(options.targets or default_targets(family))
    model = copy.deepcopy(ckpt.model).eval()
    task = TASKS.get(adapt_data.task)
    before = task.evaluate(model, adapt_data.test)
    with torch.random.fork_rng(devices=[]):  # lora_A's start follows --seed, whatever ran before; caller's RNG kept
        torch.manual_seed(options.seed)
        targets = inject_lora(model, resolve_targets(model, globs), options.rank, options.alpha)
    seconds, final_loss, picked = _train(model, adapt_data, options, validation)
    after = task.evaluate(model, adapt_data.test)
    lora, base = count_parameters(model)
    meta = {
        "name": safe_name(name or adapt_data.name), "base_sha256": ckpt.sha256, "base_path": str(ckpt.path),
        "family": family, "task": adapt_data.task, "rank": options.rank, "alpha": options.alpha,
        "targets": globs, "target_modules": targets,
        "domain": domain, "data": str(data) if data else None, "data_description": adapt_data.description,
        "steps": options.steps, "examples": len(adapt_data.train), "test_examples": len(adapt_data.test),
        "lr": options.lr, "batch_size": options.batch_size, "seed": options.seed,
        "metric": task.metric, "before": before, "after": after, "final_train_loss": final_loss,
        "trainable_parameters": lora, "base_parameters": base, "trainable_fraction": lora / base,
        "train_seconds": round(seconds, 2), "validation": picked,
        "peft_config": {"peft_type": "LORA", "r": options.rank, "lora_alpha": options.alpha,
                        "target_modules": targets, "lora_dropout": 0.0, "bias": "none"},
    }
    path = save_adapter(out, lora_state_dict(model), meta)
    return AdaptResult(path, meta, model)


def check_adapt_options(ckpt: Checkpoint, options: AdaptOptions) -> None:
    """Every option in range (counts >= 1, finite positive rates) and the rank within the targets' width."""
    dataclass_from_dict(AdaptOptions, {k: v for k, v in asdict(options).items() if k != "targets"}, "adapt")
    globs = list(options.targets or default_targets(ckpt.meta["family"]))
    check_rank(ckpt.model, resolve_targets(ckpt.model, globs), options.rank, options.alpha)


def split_validation(data: AdaptData, examples: int) -> tuple[AdaptData, Split | None]:
    """The first ``examples`` drawn examples to train on, the rest to validate on; no validation when
    fewer than ``examples + MIN_VALIDATION`` could be drawn (a small user folder)."""
    train = data.train
    fit = Split(train.inputs[:examples], train.labels[:examples])
    if len(train) < examples + MIN_VALIDATION:
        return replace(data, train=fit, description=f"{data.description}; {len(fit)} train, no validation"), None
    validation = Split(train.inputs[examples:], train.labels[examples:])
    described = f"{data.description}; {examples} train + {len(validation)} validation"
    return replace(data, train=fit, description=described), validation


def _train(model: torch.nn.Module, data: AdaptData, options: AdaptOptions,
           validation: Split | None = None) -> tuple[float, float, dict[str, Any] | None]:
    """AdamW on the LoRA parameters only; the model stays in eval mode (batch-norm statistics frozen,
    dropout off). With ``validation``, its loss is measured every few steps and the LoRA weights of the
    best step are kept (step 0 is the base itself): a few hundred examples can overfit, and this keeps
    the adapter that does best on examples it did not train on. Returns (seconds, last loss, pick)."""
    if options.steps < 1 or options.batch_size < 1:
        raise EdgekitError("--steps and the batch size must be at least 1")
    task = TASKS.get(data.task)
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(options.seed)
    previous = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=options.steps)
    gen = torch.Generator().manual_seed(options.seed)
    every = max(1, options.steps // VALIDATIONS)
    best = _Best(task, validation, params)
    n, loss_value, start = len(data.train), float("nan"), time.perf_counter()
    model.eval()
    try:
        best.check(model, 0)
        for step in range(1, options.steps + 1):
            idx = torch.randint(0, n, (min(options.batch_size, n),), generator=gen)
            loss = task.loss(model(data.train.inputs[idx]), data.train.labels[idx], 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_value = loss.item()
            if step % every == 0 or step == options.steps:
                best.check(model, step)
        best.restore()
    finally:
        torch.set_num_threads(previous)
    return time.perf_counter() - start, loss_value, best.summary(options.steps)


class _Best:
    """Validation loss at checkpoints of training, and the LoRA weights of the best one."""

    def __init__(self, task, validation: Split | None, params: list[torch.Tensor]) -> None:
        self.task, self.validation, self.params = task, validation, params
        self.step, self.loss, self.first, self.weights = 0, float("inf"), float("nan"), None

    @torch.no_grad()
    def check(self, model: torch.nn.Module, step: int) -> None:
        if self.validation is None:
            return
        loss = self.task.loss(model(self.validation.inputs), self.validation.labels, 0.0).item()
        if step == 0:
            self.first = loss
        if loss < self.loss:
            self.step, self.loss, self.weights = step, loss, [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self) -> None:
        if self.weights is not None:
            for p, w in zip(self.params, self.weights):
                p.copy_(w)

    def summary(self, steps: int) -> dict[str, Any] | None:
        if self.validation is None:
            return None
        return {"examples": len(self.validation), "loss_before": self.first, "best_loss": self.loss,
                "best_step": self.step, "of_steps": steps}
