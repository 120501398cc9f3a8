"""Models nobody here wrote: transformers' model classes with tiny random configs, built at test time.

No download anywhere: every model is random-initialised from a config (seeded, so deterministic), wrapped in a
small module whose ``forward`` takes named tensors (``input_ids``, ``attention_mask``, ``pixel_values``,
``input_values``) and returns the logits, or for the large-valued model a dict ``{"boxes", "scores"}``.

Each builder returns a ``Foreign``: the module, its example inputs at batch 1 and ``N`` sample inputs of valid
values (token ids below the vocabulary size, attention masks of 0/1 with trailing padding, floats for images and
audio), keyed by input name. ``save_foreign`` writes the model as a ``.pt2`` (``torch.export.save``) and the
samples as an ``.npz`` keyed by the input names: what a user hands ``edgekit convert --sample-inputs``.

torchvision's MobileNetV3 is not used: the torchvision wheel does not import beside the pinned CPU torch
("operator torchvision::nms does not exist"), so transformers' MobileNetV2 fills the MobileNet slot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

SAMPLES = 100  # sample inputs per model: the verification set (98% top-1 agreement allows 2 flips in 100)
CALIB_SAMPLES = 100  # the calibration set of static int8: all of them
SEQ = 16  # tokens per sequence
VOCAB = 96  # vocabulary of the text models
SEED = 0
# std of transformers' normal weight init. The default 0.02 gives these tiny models logits of ~0.01 whose top two
# differ by ~0.005 (a near tie on every input, which any int8 rounding flips): that would test the random init,
# not the conversion. 0.2 gives O(1) logits with margins like a trained model's.
INIT_STD = 0.2


class Foreign(NamedTuple):
    """A foreign model: the module, example inputs (batch 1) and sample inputs (name → (N, *shape[1:]))."""

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    samples: dict[str, np.ndarray]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.samples)


class _Named(nn.Module):
    """Calls a transformers model with keyword tensors and returns its ``logits``."""

    def __init__(self, model: nn.Module, **call: object) -> None:
        super().__init__()
        self.model, self.call = model, call  # ``call``: fixed keyword arguments, e.g. use_cache=False


class _Text(_Named):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, **self.call).logits


class _MaskedText(_Named):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **self.call).logits


class _Image(_Named):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, **self.call).logits


class _Audio(_Named):
    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=input_values, **self.call).logits


class BoxHead(nn.Module):
    """A small detector head with large-valued outputs: pixel boxes in 175–523 and class logits, as a dict."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.boxes, self.scores = nn.Linear(16, 4), nn.Linear(16, classes)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(pixel_values).mean((2, 3))  # (B, 16)
        return {"boxes": 175.0 + 348.0 * torch.sigmoid(self.boxes(f)), "scores": self.scores(f)}  # (B, 4), (B, C)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def token_samples(n: int = SAMPLES, seq: int = SEQ, vocab: int = VOCAB, seed: int = SEED) -> np.ndarray:
    """(n, seq) int64 token ids in [1, vocab)."""
    return _rng(seed).integers(1, vocab, size=(n, seq), dtype=np.int64)


def mask_samples(n: int = SAMPLES, seq: int = SEQ, seed: int = SEED) -> np.ndarray:
    """(n, seq) int64 attention masks: ones, then trailing zeros (padding); lengths from seq/2 to seq."""
    lengths = _rng(seed + 1).integers(seq // 2, seq + 1, size=n)
    lengths[0] = seq  # the example input (sample 0) is unpadded
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)


def image_samples(n: int, size: int, seed: int = SEED) -> np.ndarray:
    """(n, 3, size, size) float32 images, normalised like a preprocessor's output (smooth + noise)."""
    rng = _rng(seed + 2)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=(n, 3, 1, 1))
    smooth = np.sin(3 * xx[None, None] + phase) * np.cos(2 * yy[None, None] - phase)
    return (smooth + 0.3 * rng.standard_normal((n, 3, size, size))).astype(np.float32)


def audio_samples(n: int, length: int, seed: int = SEED) -> np.ndarray:
    """(n, length) float32 waveforms: a few tones plus noise, zero mean and unit variance per clip."""
    rng = _rng(seed + 3)
    t = np.arange(length) / 16000.0
    freqs = rng.uniform(100, 2000, size=(n, 3, 1))
    wave = np.sin(2 * np.pi * freqs * t).sum(1) + 0.2 * rng.standard_normal((n, length))
    return ((wave - wave.mean(1, keepdims=True)) / wave.std(1, keepdims=True)).astype(np.float32)


def _foreign(module: nn.Module, samples: dict[str, np.ndarray]) -> Foreign:
    """The module in eval mode, its example inputs (sample 0 of each input, batch 1) and the samples."""
    example = tuple(torch.from_numpy(a[:1].copy()) for a in samples.values())
    return Foreign(module.eval(), example, samples)


def _seeded(build: Callable[[], Foreign]) -> Callable[[], Foreign]:
    """Run ``build`` with torch's RNG seeded, restoring the caller's RNG state afterwards."""

    def seeded() -> Foreign:
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            return build()

    seeded.__doc__ = build.__doc__
    return seeded


@_seeded
def bert_classifier() -> Foreign:
    """BERT sequence classifier that takes an attention mask (padding at the end)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3,
                        initializer_range=INIT_STD)
    samples = {"input_ids": token_samples(), "attention_mask": mask_samples()}
    samples["input_ids"] = np.where(samples["attention_mask"] == 1, samples["input_ids"], 0)  # pad token 0
    return _foreign(_MaskedText(BertForSequenceClassification(config)), samples)


@_seeded
def llama_lm() -> Foreign:
    """Llama-style causal LM (RoPE, grouped-query attention, SwiGLU), logits for every position."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                         initializer_range=INIT_STD)
    return _foreign(_Text(LlamaForCausalLM(config), use_cache=False), {"input_ids": token_samples()})


@_seeded
def mamba_lm() -> Foreign:
    """Mamba (selective state-space) causal LM, transformers' sequential path (no CUDA kernels)."""
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2,
                         conv_kernel=4)
    return _foreign(_Text(MambaForCausalLM(config), use_cache=False), {"input_ids": token_samples(seq=8)})


@_seeded
def vit_classifier() -> Foreign:
    """Vision Transformer image classifier, 32×32 images in 8×8 patches."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=5, initializer_range=INIT_STD)
    return _foreign(_Image(ViTForImageClassification(config)), {"pixel_values": image_samples(SAMPLES, 32)})


@_seeded
def mobilenet_classifier() -> Foreign:
    """MobileNetV2 image classifier (the MobileNet slot: torchvision does not install, see the module doc)."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    config = MobileNetV2Config(image_size=64, depth_multiplier=0.35, num_labels=10)
    model = MobileNetV2ForImageClassification(config)
    _fan_in_init(model)
    return _foreign(_Image(model), {"pixel_values": image_samples(SAMPLES, 64)})


def _fan_in_init(model: nn.Module) -> None:
    """Re-initialise for O(1) outputs that int8 weights keep. transformers' default init (normal, std 0.02)
    shrinks activations ~50× per convolution: after MobileNetV2's 50-odd layers the logits are ~1e-19, the same
    for every input, which verification rightly calls not meaningful. He init (std sqrt(2 / fan_in)) with fresh
    BatchNorm statistics gives O(1) logits but a chaotic net: int8 weight rounding grows layer by layer to a
    20 dB SNR, which no trained MobileNet shows. Starting each residual branch small (its last BatchNorm's scale
    0.1, as ResNet recipes start it at 0) keeps it well-conditioned: ~33 dB with per-channel int8 weights."""
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight[0].numel()
            nn.init.normal_(layer.weight, std=math.sqrt(2.0 / fan_in))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            layer.reset_running_stats()
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    for block in model.modules():
        if getattr(block, "use_residual", False):  # transformers' MobileNetV2InvertedResidual with a skip
            nn.init.constant_(block.reduce_1x1.normalization.weight, 0.1)


@_seeded
def wav2vec2_classifier() -> Foreign:
    """Wav2Vec2 audio classifier: a conv feature encoder over raw 16 kHz audio, then a Transformer."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
                            num_labels=4, classifier_proj_size=16, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4, initializer_range=INIT_STD)
    model = Wav2Vec2ForSequenceClassification(config)
    return _foreign(_Audio(model), {"input_values": audio_samples(SAMPLES, 1600)})


@_seeded
def box_detector() -> Foreign:
    """A small conv net with large-valued outputs: {"boxes": pixels in 175–523, "scores": logits}."""
    return _foreign(BoxHead(), {"pixel_values": image_samples(SAMPLES, 32)})


FOREIGN_MODELS: dict[str, Callable[[], Foreign]] = {
    "bert": bert_classifier,
    "llama": llama_lm,
    "mamba": mamba_lm,
    "vit": vit_classifier,
    "mobilenet": mobilenet_classifier,
    "wav2vec2": wav2vec2_classifier,
    "boxes": box_detector,
}
DICT_OUTPUTS = {"boxes": ("boxes", "scores")}  # model → the names of its dict outputs, in order


def save_foreign(name: str, folder: Path) -> tuple[Path, Path, Foreign]:
    """Build model ``name``, write ``<name>.pt2`` (torch.export.save at batch 1) and ``<name>_samples.npz``
    (its sample inputs keyed by input name) in ``folder``; return both paths and the model."""
    model = FOREIGN_MODELS[name]()
    folder.mkdir(parents=True, exist_ok=True)
    pt2, npz = folder / f"{name}.pt2", folder / f"{name}_samples.npz"
    with torch.no_grad():
        program = torch.export.export(model.module, model.example_inputs)
    torch.export.save(program, pt2)
    np.savez(npz, **model.samples)
    return pt2, npz, model
