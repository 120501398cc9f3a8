"""Transformer family: one pre-norm block (``attention.Block``), three uses chosen by ``head``:

- ``image``: a tiny ViT. Patches (a strided conv) + learned position embeddings → bidirectional
  blocks → mean pool → classifier. One graph, like the CNN.
- ``classify``: a causal sequence classifier over (B, C, L) sensor series (SEQ_HEADS "classify").
- ``byte_lm``: a decoder-only causal byte LM (SEQ_HEADS "byte_lm").

The two sequence heads stream like the SSM (``edgekit.models.seq_graphs``): ``prefill`` returns the
states after the last step and ``step(x_t, k_cache, v_cache, position, *head_state)`` advances one
step with a FIXED-size KV cache of ``max_context`` slots and an explicit int32 position, so the
exported step graph has static shapes and starts from all-zero states. Attention is causal, so a
streaming classifier's running mean pool equals the prefill's; a step past ``max_context`` slides
the window (RoPE + ring buffer, see ``attention.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.attention import Block, RotaryEmbedding
from edgekit.models.base import EdgeModel, ExportGraph, register_family
from edgekit.models.seq_graphs import prefill_graph, step_graph
from edgekit.models.seq_heads import SEQ_HEADS, RMSNorm, SeqHead

IMAGE_HEAD = "image"


@dataclass(frozen=True)
class TransformerConfig:
    head: str = "byte_lm"  # "byte_lm" (causal bytes), "classify" (causal, series) or "image" (ViT)
    d_model: int = 128  # width D of the residual stream
    n_layers: int = 4  # number of pre-norm blocks
    n_heads: int = 4  # attention heads; head_dim = d_model / n_heads
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    max_context: int = 256  # S: KV-cache slots = the longest prefill; the step slides a window of S past it
    rope_base: float = 10000.0  # sequence heads: rotary position frequency base
    vocab_size: int = 256  # byte_lm: vocabulary (bytes)
    in_channels: int = 6  # classify: channels of the series; image: channels of the image
    num_classes: int = 4  # classify, image: classes
    image_size: int = 8  # image: square input side, pixels
    patch_size: int = 2  # image: square patch side; tokens = (image_size / patch_size)²
    dropout: float = 0.0  # classify, image: dropout before the classifier
    export_lengths: tuple = (256,)  # sequence heads: static lengths L of the exported prefill graphs


class PatchHead(SeqHead):
    """ViT input and output: images (B, C, H, W) → patch tokens (B, N, D) + learned positions;
    tokens → mean pool → class logits (B, classes). No streaming: a ViT sees the whole image."""

    input_name, output_name = "image", "logits"

    def __init__(self, d_model: int, *, in_channels: int, num_classes: int, image_size: int, patch_size: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        self.patch = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size)  # one token per patch
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2, d_model) * 0.02)  # (1, N, D)
        self.norm = RMSNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.patch(inputs).flatten(2).transpose(1, 2) + self.pos  # (B, D, H/p, W/p) → (B, N, D)

    def readout(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.classifier(self.drop(self.norm(h).mean(1))),)  # (B, N, D) → (B, classes)

    def example_inputs(self, length: int = 0, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, self.in_channels, self.image_size, self.image_size)  # (no length)

    step_example_input = example_inputs  # a ViT has no step; its only input is the whole image


def _check(cfg: TransformerConfig) -> None:
    """Config mistakes as one-line errors that name the values."""
    heads = sorted([*SEQ_HEADS.names(), IMAGE_HEAD])
    if cfg.head not in heads:
        raise EdgekitError(f"transformer: unknown head {cfg.head!r}; choose one of: {', '.join(heads)}")
    if cfg.n_heads < 1 or cfg.d_model % cfg.n_heads:
        raise EdgekitError(f"transformer: d_model = {cfg.d_model} is not divisible by n_heads = {cfg.n_heads}")
    if cfg.head == IMAGE_HEAD and cfg.image_size % cfg.patch_size:
        raise EdgekitError(f"transformer: image_size = {cfg.image_size} is not a multiple of "
                           f"patch_size = {cfg.patch_size}")
    if cfg.head != IMAGE_HEAD and (cfg.d_model // cfg.n_heads) % 2:
        raise EdgekitError(f"transformer: head_dim = d_model / n_heads = {cfg.d_model // cfg.n_heads} must be "
                           "even (rotary positions turn channel pairs)")
    too_long = [L for L in cfg.export_lengths if L > cfg.max_context]
    if cfg.head != IMAGE_HEAD and too_long:
        raise EdgekitError(f"transformer: export length {too_long[0]} is longer than max_context = "
                           f"{cfg.max_context} (the KV cache); raise max_context or shorten it")


def _build_head(cfg: TransformerConfig) -> SeqHead:
    if cfg.head == IMAGE_HEAD:
        return PatchHead(cfg.d_model, in_channels=cfg.in_channels, num_classes=cfg.num_classes,
                         image_size=cfg.image_size, patch_size=cfg.patch_size, dropout=cfg.dropout)
    return SEQ_HEADS.get(cfg.head)(cfg.d_model, vocab_size=cfg.vocab_size, in_channels=cfg.in_channels,
                                   num_classes=cfg.num_classes, dropout=cfg.dropout)


@register_family("transformer", TransformerConfig,
                 "pre-norm Transformer: ViT image classifier, causal series classifier, byte LM with KV-cache step")
class Transformer(EdgeModel):
    """Head embed → pre-norm blocks → head readout. Sequence heads also stream: states are
    k_cache, v_cache (B, layers, H, max_context, hd), position (B, 1) int32, then the head's own."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        _check(config)
        self.streaming = config.head != IMAGE_HEAD  # sequence heads: causal, RoPE, prefill + step
        self.head = _build_head(config)
        self.blocks = nn.ModuleList(Block(config.d_model, config.n_heads, config.mlp_ratio)
                                    for _ in range(config.n_layers))
        if self.streaming:  # the ViT's positions are learned embeddings inside its patch head
            self.rope = RotaryEmbedding(config.d_model // config.n_heads, config.rope_base)
        self.input_names = (self.head.input_name,)
        self.output_names = (self.head.output_name,)
        self.state_names = ("k_cache", "v_cache", "position", *self.head.head_state_names)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The head's output only (training, evaluation): logits (B, L, vocab) or (B, classes)."""
        if self.streaming:
            return self.prefill(inputs)[0]
        h = self.head.embed(inputs)  # (B, N, D)
        for block in self.blocks:
            h, _, _ = block(h)  # bidirectional, positions already in the patch tokens
        return self.head.readout(h)[0]

    def prefill(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Whole sequence (L ≤ max_context) → (outputs, k_cache, v_cache, position, *head state):
        the cache holds the first L positions, zeros after."""
        h = self.head.embed(inputs)  # (B, L, D)
        b, length, _ = h.shape
        slots = self.config.max_context
        if length > slots:
            raise EdgekitError(f"transformer: a sequence of {length} steps is longer than max_context = {slots} "
                               "(the KV cache); prefill at most max_context steps, then continue with step()")
        future = torch.ones(length, length, dtype=torch.bool).triu(1)  # (L, L) causal: hide later keys
        rope = self.rope(torch.arange(length, dtype=torch.int32)[None])  # (1, 1, L, hd/2) each
        ks, vs = [], []
        for block in self.blocks:
            h, k, v = block(h, future, rope)  # k, v (B, H, L, hd)
            ks.append(k)
            vs.append(v)
        k_cache, v_cache = torch.stack(ks, 1), torch.stack(vs, 1)  # (B, layers, H, L, hd)
        if length < slots:  # (never a zero pad: a no-op op exports as an alias Core ML rejects)
            k_cache, v_cache = (F.pad(c, (0, 0, 0, slots - length)) for c in (k_cache, v_cache))
        position = torch.full((b, 1), length, dtype=torch.int32)  # (B, 1) the next step's position
        outputs, *head_state = self.head.readout(h)
        return (outputs, k_cache, v_cache, position, *head_state)

    def step(self, x_t: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor,
             *head_state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One step at ``position`` (B, 1) int32 → (outputs, k_cache, v_cache, position + 1, *head state)."""
        h = self.head.step_embed(x_t)[:, None]  # (B, 1, D)
        slots = torch.arange(self.config.max_context, dtype=torch.int32)  # (S,)
        write = (slots == position % self.config.max_context)[:, None, :, None]  # (B, 1, S, 1) one-hot
        empty = (slots > position)[:, None, None, :]  # (B, 1, 1, S) slots not filled yet (none, once full)
        rope = self.rope(position)  # (B, 1, 1, hd/2) each
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            h, k, v = block.step(h, k_cache[:, i], v_cache[:, i], write, empty, rope)
            ks.append(k)
            vs.append(v)
        outputs, *new_head = self.head.step_readout(h[:, 0], *head_state)
        return (outputs, torch.stack(ks, 1), torch.stack(vs, 1), position + 1, *new_head)

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """All-zero states before the first step (an empty cache at position 0)."""
        cfg = self.config
        cache = (batch, cfg.n_layers, cfg.n_heads, cfg.max_context, cfg.d_model // cfg.n_heads)
        return (torch.zeros(cache), torch.zeros(cache), torch.zeros(batch, 1, dtype=torch.int32),
                *self.head.init_state(batch))

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        length = self.config.export_lengths[0] if self.streaming else 0
        return (self.head.example_inputs(length, batch),)

    def export_graphs(self, lengths: tuple[int, ...] = ()) -> list[ExportGraph]:
        """ViT: one graph. Sequence heads: a prefill graph per static length L, and the step graph."""
        if not self.streaming:
            return super().export_graphs(lengths)
        lengths = tuple(lengths) or tuple(self.config.export_lengths)
        too_long = [L for L in lengths if L > self.config.max_context]
        if too_long:
            raise EdgekitError(f"transformer: prefill length {too_long[0]} is longer than max_context = "
                               f"{self.config.max_context} (the KV cache)")
        return [prefill_graph(self, L) for L in lengths] + [step_graph(self)]
