"""A small in-house LoRA: low-rank adapters around nn.Linear / nn.Conv1d / nn.Conv2d of a plain module.

edgekit does not need PEFT at run time; this module follows PEFT's LoRA arithmetic and file layout,
so adapters are interchangeable with it (the test suite loads them into PEFT and back):

    y = base(x) + lora_B(lora_A(x)) · alpha / r
    Linear: lora_A = Linear(in, r), lora_B = Linear(r, out)                 (no biases)
            (also a byte LM's output projection tied to its embedding, ``head.output``)
    ConvNd: lora_A = ConvNd(in, r, kernel, stride, padding, dilation), lora_B = ConvNd(r, out, 1)
    merged weight = W + (B.flatten(1) @ A.flatten(1)).reshape(W.shape) · alpha / r

lora_A starts Kaiming-uniform and lora_B at zero, so a fresh adapter is the base model exactly.
Saved keys are PEFT's: ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``.
Targets are ``fnmatch`` globs on module names (``layers.*.in_proj``); grouped (depthwise)
convolutions are skipped: their weight is already per channel, there is nothing low-rank to add.
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.seq_heads import TiedOutput

KEY_PREFIX = "base_model.model."  # PEFT's prefix of saved adapter keys
_CONVS = (nn.Conv1d, nn.Conv2d)
_LINEARS = (nn.Linear, TiedOutput)


def is_supported(module: nn.Module) -> bool:
    """Layers LoRA can wrap: Linear (and a byte LM's tied output), and Conv1d/Conv2d without groups."""
    return isinstance(module, _LINEARS) or (isinstance(module, _CONVS) and module.groups == 1)


class LoraLayer(nn.Module):
    """A frozen ``base_layer`` plus a trainable low-rank update ``lora_B(lora_A(x)) * scaling``."""

    def __init__(self, base_layer: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        if not is_supported(base_layer):
            raise EdgekitError(f"LoRA cannot wrap {type(base_layer).__name__}; "
                               "supported: Linear, Conv1d, Conv2d (groups=1)")
        self.base_layer = base_layer.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        if isinstance(base_layer, _LINEARS):
            self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
            self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        else:
            conv = type(base_layer)
            self.lora_A = conv(base_layer.in_channels, rank, base_layer.kernel_size, base_layer.stride,
                               base_layer.padding, base_layer.dilation, bias=False, padding_mode=base_layer.padding_mode)
            self.lora_B = conv(rank, base_layer.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.lora_B(self.lora_A(x))
        if self.scaling != 1.0:  # decided at trace time: a folded export layer has no extra multiply
            update = update * self.scaling
        return self.base_layer(x) + update

    def delta_weight(self) -> torch.Tensor:
        """The dense update this adapter adds to ``base_layer.weight``."""
        shape = self.base_layer.weight.shape
        return (self.lora_B.weight.flatten(1) @ self.lora_A.weight.flatten(1)).reshape(shape) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base layer with the update added to its weight (the adapter disappears). A tied output
        becomes an untied Linear: the input embedding keeps the base weights."""
        if isinstance(self.base_layer, TiedOutput):
            linear = nn.Linear(self.base_layer.in_features, self.base_layer.out_features, bias=False)
            linear.weight.copy_(self.base_layer.weight + self.delta_weight())
            return linear.requires_grad_(False)
        self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
        return self.base_layer


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Every LoRA layer of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def resolve_targets(model: nn.Module, globs: list[str]) -> list[str]:
    """Names of the supported layers matched by any of ``globs`` (fnmatch on module names)."""
    names = [n for n, m in model.named_modules() if n and is_supported(m)]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise EdgekitError(f"LoRA targets {','.join(globs)!r} match no Linear/Conv layer; layers are: {sample}")
    return chosen


def layer_width(layer: nn.Module) -> int:
    """The largest useful LoRA rank of a layer: the rank its weight can have, min(in, out) of a Linear,
    min(in_channels * kernel, out_channels) of a convolution."""
    if isinstance(layer, _LINEARS):
        return min(layer.in_features, layer.out_features)
    kernel = 1
    for k in layer.kernel_size:
        kernel *= k
    return min(layer.in_channels // layer.groups * kernel, layer.out_channels)


def check_rank(model: nn.Module, targets: list[str], rank: int, alpha: float) -> None:
    """Refuse a rank < 1 or above the narrowest target's width, and a non-finite or non-positive alpha."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise EdgekitError(f"LoRA rank (--rank) must be an integer >= 1, got {rank!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise EdgekitError(f"LoRA alpha (--alpha) must be a finite number > 0, got {alpha!r}")
    widths = {name: layer_width(model.get_submodule(name)) for name in targets}
    narrowest = min(widths, key=widths.get, default=None)
    if narrowest is not None and rank > widths[narrowest]:
        raise EdgekitError(f"LoRA rank (--rank) {rank} is larger than target layer {narrowest!r} allows "
                           f"(width {widths[narrowest]}); give --rank <= {widths[narrowest]} or narrow --targets")


def inject_lora(model: nn.Module, targets: list[str], rank: int, alpha: float) -> list[str]:
    """Wrap each named layer of ``model`` in a LoraLayer, in place; freezes every other parameter."""
    check_rank(model, targets, rank, alpha)
    model.requires_grad_(False)
    for name in targets:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, leaf, LoraLayer(getattr(owner, leaf), rank, alpha))
    return list(targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer by its merged base layer, in place (PEFT's ``merge_and_unload``)."""
    for name, layer in lora_layers(model).items():
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, leaf, layer.merged())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's key names."""
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{KEY_PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight.detach().contiguous()
        state[f"{KEY_PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight.detach().contiguous()
    return state


@torch.no_grad()
def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved adapter tensors into the model's LoRA layers; every key must match exactly."""
    layers = lora_layers(model)
    expected = {f"{KEY_PREFIX}{n}.{p}.weight" for n in layers for p in ("lora_A", "lora_B")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise EdgekitError(f"adapter does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, layer in layers.items():
        for part in ("lora_A", "lora_B"):
            weight = getattr(layer, part).weight
            value = state[f"{KEY_PREFIX}{name}.{part}.weight"]
            if value.shape != weight.shape:
                raise EdgekitError(f"adapter tensor {name}.{part} has shape {tuple(value.shape)}; "
                                   f"the model's is {tuple(weight.shape)} (different rank or base?)")
            weight.copy_(value)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(LoRA parameters, base parameters) of a model with LoRA layers."""
    lora = sum(p.numel() for layer in lora_layers(model).values()
               for p in (*layer.lora_A.parameters(), *layer.lora_B.parameters()))
    return lora, sum(p.numel() for p in model.parameters()) - lora
