"""Quantization-aware fine-tuning after PTQ: fake-quantized weights and activations, then the same
export path as post-training int8 (the QAT graph converts like a calibrated one)."""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse

from edgekit.errors import EdgekitError
from edgekit.graph import ModelSource
from edgekit.quant.calib import CalibrationData, recipe_split
from edgekit.quant.pt2e import PreparedQuant, export_graph, make_quantizer
from edgekit.quant.spec import QuantSpec

ACCUMULATE = 16  # batch-1 graph: gradients of this many samples per optimizer step


def qat_finetune(source: ModelSource, spec: QuantSpec, calib: CalibrationData, *, epochs: int = 1, lr: float = 1e-4,
                 max_samples: int = 512, seed: int = 0,
                 progress: Callable[[str], None] = lambda _: None) -> tuple[PreparedQuant, dict[str, Any]]:
    """PTQ-initialise fake quantizers on ``calib``, then fine-tune on the recipe's training split.

    The graph is the batch-1 eval-mode export (BatchNorm statistics stay frozen), so samples go
    through one at a time with gradient accumulation."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    split = recipe_split(source, "train")
    if split is None or source.samples is not None:
        raise EdgekitError("QAT needs a labelled training split: give an edgekit checkpoint trained from a recipe")
    inputs, labels, name = split
    quantizer = make_quantizer(spec)
    prepared = prepare_qat_pt2e(export_graph(_bn_folded(source)), quantizer)
    with torch.no_grad():
        for sample in calib.samples:  # observers start from the PTQ ranges
            prepared(*sample)
    params = [p for p in prepared.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    start, losses = time.perf_counter(), []
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=gen)[:max_samples]
        progress(f"QAT epoch {epoch + 1}/{epochs} on {len(order)} samples of {name}")
        for step, i in enumerate(order.tolist()):
            out = prepared(inputs[i][None])
            loss = F.cross_entropy(out[0] if isinstance(out, (tuple, list)) else out, labels[i][None]) / ACCUMULATE
            loss.backward()
            losses.append(loss.item() * ACCUMULATE)
            if (step + 1) % ACCUMULATE == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
    summary = {"epochs": epochs, "samples_per_epoch": min(max_samples, len(labels)), "lr": lr,
               "first_loss": round(sum(losses[:32]) / max(1, len(losses[:32])), 4),
               "last_loss": round(sum(losses[-32:]) / max(1, len(losses[-32:])), 4),
               "seconds": round(time.perf_counter() - start, 2), "data": name}
    return PreparedQuant(spec, prepared, quantizer, tuple(source.example_inputs), calib.description), summary


def _bn_folded(source: ModelSource) -> ModelSource:
    """The source with BatchNorm folded into its convolutions (frozen statistics; torchao's QAT
    conv-bn rewrite cannot build its patterns on torch 2.13). Untraceable models are used as they are."""
    try:
        folded = fuse(copy.deepcopy(source.module).eval())
    except Exception:  # noqa: BLE001 - symbolic tracing is optional here
        return source
    return dataclasses.replace(source, module=folded, exported=None)
