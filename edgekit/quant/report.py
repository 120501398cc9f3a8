"""Per-layer error report: SQNR of every quantized layer's output against the float graph.

The tool to reach for when int8 accuracy collapses: the first layer whose SQNR falls well below
its neighbours is where the error enters. SQNR = 10·log10(Σ ref² / Σ (ref − quant)²), in dB,
accumulated over every sample; errors of earlier layers are included (what the app sees).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch

from edgekit.quant.pt2e import QuantGraph, layer_nodes, op_type


@dataclass(frozen=True)
class LayerError:
    layer: str  # module name, e.g. "blocks.0.depthwise"; "output" for the model's first output
    op: str  # conv2d, linear, ...
    sqnr_db: float  # inf when bit-exact
    quantized: bool  # False for layers kept in float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sqnr_db"] = None if math.isinf(self.sqnr_db) else round(self.sqnr_db, 2)
        return d


class _Recorder(torch.fx.Interpreter):
    """Runs a graph module and keeps the outputs of the chosen nodes."""

    def __init__(self, gm: torch.fx.GraphModule, names: dict[str, str]) -> None:
        super().__init__(gm)
        self.names, self.seen = names, {}  # node name → layer name

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.names:
            self.seen[self.names[n.name]] = out.detach().float()
        return out


class _Energy:
    """Running Σ ref² and Σ err² per layer."""

    def __init__(self) -> None:
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, layer: str, ref: torch.Tensor, got: torch.Tensor) -> None:
        self.signal[layer] = self.signal.get(layer, 0.0) + float((ref.double() ** 2).sum())
        self.noise[layer] = self.noise.get(layer, 0.0) + float(((ref.double() - got.double()) ** 2).sum())

    def sqnr(self, layer: str) -> float:
        noise = self.noise.get(layer, 0.0)
        return math.inf if noise == 0 else 10 * math.log10(max(self.signal[layer], 1e-30) / noise)


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    """SQNR (dB) of ``got`` against ``ref``; inf when they are equal."""
    energy = _Energy()
    energy.add("x", ref, got)
    return energy.sqnr("x")


@torch.no_grad()
def layer_report(quant: QuantGraph, samples: Iterable[tuple[torch.Tensor, ...]]) -> list[LayerError]:
    """SQNR of each conv/linear output and of the model output: quantized graph vs the float graph."""
    reference = quant.float_graph()  # float compute (BN folded); a copy: observers must not see these inputs
    quantized = quant.converted(fold_quantize=False)
    ref_layers, q_layers = layer_nodes(reference), layer_nodes(quantized)
    shared = [name for name in ref_layers if name in q_layers]
    energy = _Energy()
    for sample in samples:
        ref_run = _Recorder(reference, {ref_layers[n].name: n for n in shared})
        q_run = _Recorder(quantized, {q_layers[n].name: n for n in shared})
        ref_out, q_out = ref_run.run(*sample), q_run.run(*sample)
        for name in shared:
            energy.add(name, ref_run.seen[name], q_run.seen[name])
        energy.add("output", _first(ref_out), _first(q_out))
    ops = {n: op_type(ref_layers[n]) for n in shared}
    rows = [LayerError(n, ops[n], energy.sqnr(n), not quant.spec.keeps_float(n, ops[n])) for n in shared]
    return rows + [LayerError("output", "output", energy.sqnr("output"), True)]


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out

