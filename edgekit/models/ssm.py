"""SSM family: a Mamba-2-style selective state-space model that exports to every format and streams.

Three forms of the same recurrence, per head h with scalar decay (Mamba-2 "SSD"):

    h_t = exp(Δ_t · A) · h_{t-1} + Δ_t · x_t ⊗ B_t        state h: (P, N) per head
    y_t = h_t · C_t + D · x_t

- ``ssm_scan_reference``: the readable sequential loop over t (the reference; never exported).
- ``ssd_chunked``: the same maths in chunks of Q steps with only matmul, exp, cumsum and static
  reshapes — used for training and for the exported prefill graphs (conversion time flat in L).
- ``ssm_step``: one step with explicit state — the exported streaming ``step`` graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.base import EdgeModel, ExportGraph, register_family
from edgekit.models.seq_graphs import prefill_graph, step_graph
from edgekit.models.seq_heads import SEQ_HEADS, RMSNorm


@dataclass(frozen=True)
class SSMConfig:
    head: str = "byte_lm"  # a registered sequence head: "byte_lm" (causal bytes) or "classify"
    d_model: int = 128  # width D of the residual stream
    n_layers: int = 4  # number of Mamba-2 blocks
    d_state: int = 16  # N: state size of each head
    expand: int = 2  # inner width = expand * d_model
    head_dim: int = 32  # P: channels per SSM head; heads H = inner width / head_dim
    d_conv: int = 4  # K: kernel of the causal depthwise conv
    chunk: int = 64  # Q: SSD chunk length (training and prefill export)
    vocab_size: int = 256  # byte_lm: vocabulary (bytes)
    in_channels: int = 6  # classify: input channels of the series
    num_classes: int = 4  # classify: classes
    dropout: float = 0.0  # classify: dropout before the classifier
    export_lengths: tuple = (256,)  # static sequence lengths L of the exported prefill graphs


ScanFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def ssm_step(h: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
             C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step. h (b, H, P, N), x (b, H, P), dt (b, H), A (H,), B/C (b, N) → new h, y (b, H, P)."""
    decay = torch.exp(dt * A)  # (b, H)
    h = h * decay[:, :, None, None] + (dt[:, :, None] * x)[..., None] * B[:, None, None, :]  # (b, H, P, N)
    return h, (h @ C[:, None, :, None])[..., 0]


def ssm_scan_reference(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       h0: torch.Tensor | None = None, chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential scan. x (b, L, H, P), dt (b, L, H), A (H,), B/C (b, L, N) → y (b, L, H, P), h_L."""
    b, length, heads, p = x.shape
    h = x.new_zeros(b, heads, p, B.shape[-1]) if h0 is None else h0
    ys = []
    for t in range(length):
        h, y = ssm_step(h, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y)
    return torch.stack(ys, 1), h


def _decay_matrix(a_cum: torch.Tensor) -> torch.Tensor:
    """exp(a_cum_i - a_cum_j) for i ≥ j, else 0. a_cum (..., T) non-increasing → (..., T, T)."""
    t = a_cum.shape[-1]
    seg = a_cum[..., :, None] - a_cum[..., None, :]  # (..., T, T), ≤ 0 on and below the diagonal
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    # clamp keeps exp finite above the diagonal; the finite lower bound changes nothing (exp(x) is 0 in fp32 for
    # x < -104) but keeps -inf out of the program: clamp(max=) alone converts to Core ML clip(alpha=-inf)
    return torch.exp(seg.clamp(min=-1e4, max=0.0)) * causal


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                h0: torch.Tensor | None = None, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The same scan as ``ssm_scan_reference`` in chunks of ``chunk`` steps (matmul/exp/cumsum only)."""
    b, length, heads, p = x.shape
    n = B.shape[-1]
    q = min(chunk, length)
    pad = (-length) % q  # padded steps have Δ = 0: no input and no decay, so h_L is unchanged
    if pad:
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    c = (length + pad) // q
    xd = (x * dt[..., None]).reshape(b, c, q, heads, p).permute(0, 1, 3, 2, 4)  # (b, c, H, Q, P)
    a_cum = torch.cumsum((dt * A).reshape(b, c, q, heads).permute(0, 1, 3, 2), -1)  # (b, c, H, Q)
    Bc, Cc = B.reshape(b, c, q, n), C.reshape(b, c, q, n)  # (b, c, Q, N)
    # 1. inside each chunk: y_i = Σ_{j≤i} (C_i·B_j) exp(a_i - a_j) Δ_j x_j
    scores = (Cc @ Bc.transpose(-1, -2))[:, :, None]  # (b, c, 1, Q, Q)
    y = (scores * _decay_matrix(a_cum)) @ xd  # (b, c, H, Q, P)
    # 2. each chunk's own end state: Σ_j exp(a_last - a_j) Δ_j x_j ⊗ B_j
    tail = torch.exp(a_cum[..., -1:] - a_cum)  # (b, c, H, Q)
    own = (xd * tail[..., None]).transpose(-1, -2) @ Bc[:, :, None]  # (b, c, H, P, N)
    # 3. carry states across chunks: one (c+1)×(c+1) decay matmul instead of a loop
    h0 = x.new_zeros(b, heads, p, n) if h0 is None else h0
    own = torch.cat([h0[:, None], own], 1).permute(0, 2, 1, 3, 4).reshape(b, heads, c + 1, p * n)
    chunk_cum = torch.cumsum(F.pad(a_cum[..., -1], (0, 0, 1, 0)), 1).transpose(1, 2)  # (b, H, c+1)
    carried = (_decay_matrix(chunk_cum) @ own).reshape(b, heads, c + 1, p, n)  # (b, H, c+1, P, N)
    h_in = carried[:, :, :-1].permute(0, 2, 1, 3, 4)  # state entering each chunk (b, c, H, P, N)
    # 4. what the entering state adds inside its chunk: exp(a_i) C_i · h_in
    y_in = (h_in @ Cc[:, :, None].transpose(-1, -2)) * torch.exp(a_cum)[:, :, :, None, :]  # (b, c, H, P, Q)
    y = (y + y_in.transpose(-1, -2)).permute(0, 1, 3, 2, 4).reshape(b, c * q, heads, p)
    return (y[:, :length] if pad else y), carried[:, :, -1]  # a no-op slice exports as an alias CoreML rejects


class SelectiveScan(nn.Module):
    """The selective-scan recurrence (``ssd_chunked``, ``ssm_scan_reference`` or ``ssm_step``) as a submodule
    without weights: it computes exactly what the function does, and in an exported graph its ops carry this
    module in their ``nn_module_stack``. Static int8 keeps them float by that mark (``FLOAT_MODULES`` in
    ``edgekit.quant.annotations``): the state is an accumulator with a per-head range, and the recurrence's
    elementwise products are a small part of the work next to the in/out projections."""

    def forward(self, scan: Callable[..., tuple[torch.Tensor, torch.Tensor]], *args: torch.Tensor,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return scan(*args, **kwargs)


class Mamba2Block(nn.Module):
    """Pre-norm residual block: in-proj → causal depthwise conv → selective SSM (+D skip) → gate → out-proj."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.inner, self.n, self.k = cfg.expand * cfg.d_model, cfg.d_state, cfg.d_conv
        self.heads, self.p = self.inner // cfg.head_dim, cfg.head_dim
        self.conv_dim = self.inner + 2 * self.n  # the conv runs over x, B and C together
        self.norm = RMSNorm(cfg.d_model)
        self.in_proj = nn.Linear(cfg.d_model, self.inner + self.conv_dim + self.heads, bias=False)  # z, xBC, Δ
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim)
        dt = torch.exp(torch.rand(self.heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt ∈ [1e-3, 0.1]
        self.A_log = nn.Parameter(torch.log(torch.empty(self.heads).uniform_(1.0, 16.0)))  # A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(self.heads))  # skip x → y per head
        self.out_norm = RMSNorm(self.inner)
        self.out_proj = nn.Linear(self.inner, cfg.d_model, bias=False)
        self.scan = SelectiveScan()  # no weights: checkpoints are unchanged

    def _project(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, xbc, dt = torch.split(self.in_proj(self.norm(u)), [self.inner, self.conv_dim, self.heads], -1)
        return z, xbc, dt

    def _ssm_inputs(self, xbc: torch.Tensor, dt: torch.Tensor):
        x, B, C = torch.split(xbc, [self.inner, self.n, self.n], -1)
        return x.unflatten(-1, (self.heads, self.p)), F.softplus(dt + self.dt_bias), -torch.exp(self.A_log), B, C

    def _output(self, u: torch.Tensor, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = (y + x * self.D[:, None]).flatten(-2)  # (…, inner)
        return u + self.out_proj(self.out_norm(y * F.silu(z)))

    def forward(self, u: torch.Tensor, scan: ScanFn = ssd_chunked, chunk: int = 64):
        """u (b, L, D) → (b, L, D), conv state (b, conv_dim, K-1), SSM state (b, H, P, N)."""
        z, xbc, dt = self._project(u)
        padded = F.pad(xbc.transpose(1, 2), (self.k - 1, 0))  # (b, conv_dim, K-1+L)
        conv_state = padded[:, :, padded.shape[-1] - (self.k - 1):]  # the last K-1 conv inputs
        xbc = F.silu(self.conv(padded)).transpose(1, 2)  # (b, L, conv_dim)
        x, dt, A, B, C = self._ssm_inputs(xbc, dt)
        y, h = self.scan(scan, x, dt, A, B, C, chunk=chunk)  # (b, L, H, P), (b, H, P, N)
        return self._output(u, y, x, z), conv_state, h

    def step(self, u: torch.Tensor, conv_state: torch.Tensor, h: torch.Tensor):
        """u (b, D), conv state (b, conv_dim, K-1), h (b, H, P, N) → (b, D), new conv state, new h."""
        z, xbc, dt = self._project(u)
        window = torch.cat([conv_state, xbc[:, :, None]], -1)  # (b, conv_dim, K)
        xbc = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias)  # (b, conv_dim)
        x, dt, A, B, C = self._ssm_inputs(xbc, dt)
        h, y = self.scan(ssm_step, h, x, dt, A, B, C)
        return self._output(u, y, x, z), window[:, :, 1:], h


@register_family("ssm", SSMConfig, "Mamba-2-style selective SSM (chunked SSD prefill + streaming step)")
class SSMModel(EdgeModel):
    """Head embed → Mamba-2 blocks → head readout. States stack the layers: conv (b, layers, conv_dim,
    K-1), ssm (b, layers, H, P, N), then the head's own state (e.g. a running pool for classify)."""

    def __init__(self, config: SSMConfig) -> None:
        super().__init__(config)
        if (config.expand * config.d_model) % config.head_dim:
            raise EdgekitError(f"ssm: expand*d_model = {config.expand * config.d_model} is not a multiple of "
                               f"head_dim = {config.head_dim}")
        self.head = SEQ_HEADS.get(config.head)(
            config.d_model, vocab_size=config.vocab_size, in_channels=config.in_channels,
            num_classes=config.num_classes, dropout=config.dropout)
        self.layers = nn.ModuleList(Mamba2Block(config) for _ in range(config.n_layers))
        self.input_names = (self.head.input_name,)
        self.output_names = (self.head.output_name,)
        self.state_names = ("conv_state", "ssm_state", *self.head.head_state_names)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The head's output only (training, evaluation): logits (b, L, vocab) or (b, classes)."""
        return self.prefill(inputs)[0]

    def prefill(self, inputs: torch.Tensor, scan: ScanFn = ssd_chunked) -> tuple[torch.Tensor, ...]:
        """Whole sequence → (outputs, conv state, ssm state, *head state) after its last step."""
        h = self.head.embed(inputs)  # (b, L, D)
        convs, ssms = [], []
        for layer in self.layers:
            h, conv_state, ssm_state = layer(h, scan, self.config.chunk)
            convs.append(conv_state)
            ssms.append(ssm_state)
        outputs, *head_state = self.head.readout(h)
        return (outputs, torch.stack(convs, 1), torch.stack(ssms, 1), *head_state)

    def step(self, x_t: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor, *head_state: torch.Tensor):
        """One step: input shaped like ``head.step_example_input`` and the states → (outputs, *new states)."""
        h = self.head.step_embed(x_t)  # (b, D)
        convs, ssms = [], []
        for i, layer in enumerate(self.layers):
            h, c, s = layer.step(h, conv[:, i], ssm[:, i])
            convs.append(c)
            ssms.append(s)
        outputs, *new_head = self.head.step_readout(h, *head_state)
        return (outputs, torch.stack(convs, 1), torch.stack(ssms, 1), *new_head)

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """All-zero states before the first step."""
        blk = self.layers[0]
        conv = torch.zeros(batch, len(self.layers), blk.conv_dim, blk.k - 1)
        ssm = torch.zeros(batch, len(self.layers), blk.heads, blk.p, blk.n)
        return (conv, ssm, *self.head.init_state(batch))

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return (self.head.example_inputs(self.config.export_lengths[0], batch),)

    def export_graphs(self, lengths: tuple[int, ...] = ()) -> list[ExportGraph]:
        """A prefill graph per static length L, and the single-step graph with explicit states."""
        lengths = tuple(lengths) or tuple(self.config.export_lengths)
        return [prefill_graph(self, L) for L in lengths] + [step_graph(self)]
