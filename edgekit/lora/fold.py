"""Export forms of base + adapters whose base constants are byte-identical in every variant.

A multi-adapter artifact shares the base weights only if every variant's graph holds exactly the
same base tensors. Batch norm after a convolution would otherwise be folded into that conv by each
converter on its own, differently per variant once the LoRA branch sits between them. So we fold
first, in PyTorch: BN(W x + s·B A x) = (k·W) x + b' + (s·k·B) A x with k = γ/√(var+ε) per output
channel. The base conv gets k·W and a bias; lora_B gets s·k·B (and the LoRA scaling becomes 1).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgekit.lora.adapter import Adapter
from edgekit.lora.layers import inject_lora, load_lora_state, lora_layers

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_CONV = (nn.Conv1d, nn.Conv2d)


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """conv module name → the BatchNorm module applied directly (and only) to its output."""
    if not any(isinstance(m, _BN) for m in model.modules()):
        return {}
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), _CONV)
                and len(src.users) == 1):
            pairs[src.target] = node.target
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of an eval-mode ``model`` with every conv→BN pair folded into the conv (the BN becomes
    Identity), and the per-output-channel scale k each folded conv got."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    pairs = conv_bn_pairs(model)
    folded = copy.deepcopy(model).eval()
    scales = {}
    for conv_name, bn_name in pairs.items():
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        scales[conv_name] = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        parent, _, leaf = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, leaf, nn.Identity())
    return folded.requires_grad_(False), scales


class TransposedLinear(nn.Module):
    """A bias-free Linear stored transposed, ``x @ weight_t`` with weight_t (in, out): exporters then
    use the parameter as is (an ONNX MatMul input keeps its name, so it can become an adapter input)
    instead of folding a transpose of it into an anonymous constant."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().T.contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight_t  # (…, in) → (…, out)


def share_base(folded: nn.Module) -> nn.Module:
    """A structural copy of ``folded`` whose parameters and buffers are the very same tensors."""
    memo = {id(t): t for t in (*folded.parameters(), *folded.buffers())}
    return copy.deepcopy(folded, memo)


@torch.no_grad()
def export_variant(folded: nn.Module, scales: dict[str, torch.Tensor], adapter: Adapter | None) -> nn.Module:
    """The folded base (shared tensors) with ``adapter``'s LoRA layers in export form: lora_B holds
    scaling·k·B, scaling is 1, linear LoRA factors are stored transposed; with ``adapter=None``,
    the plain folded base."""
    if adapter is None:
        return folded
    variant = share_base(folded)
    meta = adapter.meta
    inject_lora(variant, list(meta["target_modules"]), int(meta["rank"]), float(meta["alpha"]))
    load_lora_state(variant, adapter.state)
    for name, layer in lora_layers(variant).items():
        scale = layer.scaling * scales.get(name, torch.ones(()))
        shape = (-1,) + (1,) * (layer.lora_B.weight.dim() - 1)
        layer.lora_B.weight.mul_(scale.reshape(shape) if scale.dim() else scale)
        layer.scaling = 1.0
        if isinstance(layer.lora_A, nn.Linear):
            layer.lora_A, layer.lora_B = TransposedLinear(layer.lora_A), TransposedLinear(layer.lora_B)
    return variant.eval()
