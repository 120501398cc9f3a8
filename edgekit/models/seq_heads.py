"""Heads shared by sequence families (SSM, later Transformer): what goes in and what comes out.

A head turns task inputs into the backbone's (B, L, D) stream and the stream back into outputs,
both for a whole sequence (prefill) and for one step with explicit head state (streaming).
Heads are registered by name: ``SEQ_HEADS.get("byte_lm")``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.registry import Registry


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SeqHead(nn.Module):
    """Base class: embed inputs, read outputs out, and the same for one streaming step."""

    input_name: str = "input"
    output_name: str = "output"
    head_state_names: tuple[str, ...] = ()  # extra streaming state this head carries (beyond the backbone's)
    labelled_windows: bool = False  # True when ``windows`` keeps one window per sample (labels still apply)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Task inputs → (B, L, D)."""
        raise NotImplementedError

    def readout(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, L, D) → (outputs, *head_state after the last step)."""
        raise NotImplementedError

    def step_embed(self, x_t: torch.Tensor) -> torch.Tensor:
        """One step's input → (B, D)."""
        raise NotImplementedError

    def step_readout(self, h_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, D) and head state → (outputs, *new head state)."""
        raise NotImplementedError

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Head state before the first step."""
        return ()

    def example_inputs(self, length: int, batch: int = 1) -> torch.Tensor:
        """A (B, …, L) input of the right dtype."""
        raise NotImplementedError

    def step_example_input(self, batch: int = 1) -> torch.Tensor:
        raise NotImplementedError

    def step_slice(self, inputs: torch.Tensor, t: int) -> torch.Tensor:
        """Step ``t`` of a prefill input, shaped like ``step_example_input``."""
        raise NotImplementedError

    def windows(self, inputs: torch.Tensor, length: int) -> tuple[torch.Tensor, bool]:
        """A split's inputs cut to static ``length`` → (windows (n, …, length), one window per sample?)."""
        raise NotImplementedError


HeadBuilder = Callable[..., SeqHead]
SEQ_HEADS: Registry[HeadBuilder] = Registry("sequence head")


class TiedOutput(nn.Module):
    """The LM's output projection tied to the input embedding, ``logits = h · Eᵀ``. A module (not a
    bare function) so LoRA can target it (``head.output``); it owns no parameter: the weight is saved
    once, as ``head.embedding.weight``, and the embedding is held outside the module tree."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self._tied = [embedding]  # a list: not registered as a submodule
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        return self._tied[0].weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight)  # (…, D) → (…, vocab)


@SEQ_HEADS.register("byte_lm")
class ByteLMHead(SeqHead):
    """Causal language model over bytes: int32 tokens (B, L) → next-byte logits (B, L, vocab)."""

    input_name, output_name = "tokens", "logits"

    def __init__(self, d_model: int, *, vocab_size: int = 256, **_: object) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)  # small tied weights: untrained logits ≈ uniform
        self.norm = RMSNorm(d_model)
        self.output = TiedOutput(self.embedding)

    def lm_head(self, h: torch.Tensor) -> torch.Tensor:
        """Output logits with the input embedding as weights (tied; one tensor in the checkpoint)."""
        return self.output(h)  # (…, D) → (…, vocab)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.embedding(inputs)  # (B, L, D)

    def readout(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.lm_head(self.norm(h)),)  # (B, L, vocab)

    def step_embed(self, x_t: torch.Tensor) -> torch.Tensor:
        return self.embedding(x_t[:, 0])  # (B, 1) → (B, D)

    def step_readout(self, h_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.lm_head(self.norm(h_t)),)  # (B, vocab)

    def example_inputs(self, length: int, batch: int = 1) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch, length), dtype=torch.int32)

    def step_example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch, 1), dtype=torch.int32)

    def step_slice(self, inputs: torch.Tensor, t: int) -> torch.Tensor:
        return inputs[:, t:t + 1]  # (B, 1)

    def windows(self, inputs: torch.Tensor, length: int) -> tuple[torch.Tensor, bool]:
        stream = inputs.reshape(-1).to(torch.int32)  # the split's windows, back to back
        n = stream.numel() // length
        return stream[:n * length].reshape(n, length), self.labelled_windows


@SEQ_HEADS.register("classify")
class ClassifierHead(SeqHead):
    """Sequence classification: float features (B, C, L) → class logits (B, classes), mean over time.

    Streaming keeps the running mean of features and the step count, so after step t the logits
    equal those of a prefill over the first t steps (a mean, not a sum, stays O(1) at any length)."""

    input_name, output_name = "series", "logits"
    head_state_names = ("pool_mean", "pool_count")
    labelled_windows = True

    def __init__(self, d_model: int, *, in_channels: int = 6, num_classes: int = 4, dropout: float = 0.0,
                 **_: object) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.proj = nn.Linear(in_channels, d_model)
        self.norm = RMSNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.proj(inputs.transpose(1, 2))  # (B, C, L) → (B, L, D)

    def readout(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean = self.norm(h).mean(1)  # (B, L, D) → (B, D)
        count = torch.full((h.shape[0], 1), float(h.shape[1]))  # (B, 1)
        return self.classifier(self.drop(mean)), mean, count

    def step_embed(self, x_t: torch.Tensor) -> torch.Tensor:
        return self.proj(x_t[:, :, 0])  # (B, C, 1) → (B, D)

    def step_readout(self, h_t: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = state[1] + 1.0  # (B, 1)
        mean = state[0] + (self.norm(h_t) - state[0]) / count  # (B, D) running mean
        return self.classifier(mean), mean, count

    def init_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        return torch.zeros(batch, self.proj.out_features), torch.zeros(batch, 1)

    def example_inputs(self, length: int, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, self.in_channels, length)

    def step_example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, self.in_channels, 1)

    def step_slice(self, inputs: torch.Tensor, t: int) -> torch.Tensor:
        return inputs[:, :, t:t + 1]  # (B, C, 1)

    def windows(self, inputs: torch.Tensor, length: int) -> tuple[torch.Tensor, bool]:
        reps = -(-length // inputs.shape[-1])  # tile short series in time, then crop
        return inputs.repeat(1, 1, reps)[..., :length].float(), self.labelled_windows
