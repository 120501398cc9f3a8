"""The one pre-norm Transformer block (attention + MLP) every Transformer model in edgekit shares.

Attention is written out (q·kᵀ·scale, mask, softmax, ·v) rather than with
``F.scaled_dot_product_attention``: litert-torch has no lowering for the fused
``aten._scaled_dot_product_efficient_attention`` that SDPA can trace to (litert-torch issue #827),
while matmul/where/softmax convert to ONNX, TFLite and Core ML alike.

The streaming step writes this token's key/value into a FIXED-size cache of S slots with
``torch.where`` over a one-hot slot mask: no dynamic shapes, no index_put (converters handle
dynamic KV caches badly, litert-torch issue #385). Positions are rotary (RoPE), computed from an
explicit integer position, so keys need no absolute slot order: a step past S overwrites the oldest
slot (a ring buffer) and attention becomes a sliding window of the last S tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.models.seq_heads import RMSNorm

MASKED_SCORE = -1e4  # score of a masked key: exp(-1e4) = 0 in fp32 and fp16, and finite (no inf - inf = nan)

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (B or 1, 1, T, head_dim / 2)


class RotaryEmbedding(nn.Module):
    """RoPE angles from integer positions: position p rotates channel pair i by p · base^(-2i/head_dim)."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # a constant, not a weight

    def forward(self, positions: torch.Tensor) -> Rope:
        """positions (B or 1, T) int → cos, sin (B or 1, 1, T, head_dim/2)."""
        # an outer product written as a K=1 matmul (exact, like a broadcast mul): int8 PT2E quantizers
        # annotate elementwise mul but not matmul, and 8-bit positions or frequencies would wreck every angle
        angles = positions[..., None].float() @ self.inv_freq[None]  # (B, T, 1) @ (1, hd/2) → (B, T, hd/2)
        return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate the two halves of each head's channels. x (B, H, T, hd) → (B, H, T, hd)."""
    cos, sin = rope
    x1, x2 = x.chunk(2, -1)  # (B, H, T, hd/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
    """softmax(q·kᵀ/√hd with ``hidden`` keys masked)·v. q (B, H, T, hd), k/v (B, H, S, hd),
    hidden bool broadcastable to (B, H, T, S), True where a query must not see a key, or None."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, S)
    if hidden is not None:
        # masked_fill, not torch.where(mask, scores, scalar): coremltools 9 has no converter for that
        # overload (aten.where.ScalarOther; it registers only where.self and where.ScalarSelf)
        scores = scores.masked_fill(hidden, MASKED_SCORE)
    return scores.softmax(-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection and no biases."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor, rope: Rope | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D) → q, k, v (B, H, T, hd), q and k rotated when ``rope`` is given."""
        b, t, d = x.shape
        q, k, v = (y.reshape(b, t, self.n_heads, self.head_dim).transpose(1, 2) for y in self.qkv(x).split(d, -1))
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, T, hd) → (B, T, D) → output projection."""
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None, rope: Rope | None):
        """Whole sequence. x (B, T, D) → (B, T, D), and this layer's k, v (B, H, T, hd) for the cache."""
        q, k, v = self._heads(x, rope)
        return self._merge(attend(q, k, v, hidden)), k, v

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, write: torch.Tensor,
             hidden: torch.Tensor, rope: Rope):
        """One token. x (B, 1, D); caches (B, H, S, hd); write (B, 1, S, 1) one-hot slot of this token;
        hidden (B, 1, 1, S) slots not filled yet → (B, 1, D), new k cache, new v cache."""
        q, k, v = self._heads(x, rope)  # (B, H, 1, hd)
        k_cache = torch.where(write, k, k_cache)  # (B, H, S, hd): this token's key in its slot
        v_cache = torch.where(write, v, v_cache)
        return self._merge(attend(q, k_cache, v_cache, hidden)), k_cache, v_cache


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)) (MLP: linear → GELU → linear)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.norm2 = RMSNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None, rope: Rope | None = None):
        """x (B, T, D) → (B, T, D), k, v (B, H, T, hd)."""
        a, k, v = self.attn(self.norm1(x), hidden, rope)
        x = x + a
        return x + self.mlp(self.norm2(x)), k, v

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, write: torch.Tensor,
             hidden: torch.Tensor, rope: Rope):
        """x (B, 1, D) and this layer's caches (B, H, S, hd) → (B, 1, D), new k cache, new v cache."""
        a, k_cache, v_cache = self.attn.step(self.norm1(x), k_cache, v_cache, write, hidden, rope)
        x = x + a
        return x + self.mlp(self.norm2(x)), k_cache, v_cache
