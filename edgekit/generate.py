"""Stream bytes from a causal LM through its exported ``step`` graph (ORT, LiteRT) or PyTorch.

Works for any streaming model that follows the step-graph convention of ``edgekit.models.seq_graphs``:
inputs (token (1, 1) int32, *states), outputs (logits (1, vocab), *new states in the same order).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgekit.artifact import FAILED, bundle_path, load_manifest
from edgekit.checkpoint import load_checkpoint
from edgekit.converters import CONVERTERS, RunnerUnavailable
from edgekit.errors import EdgekitError

STEP_GRAPH = "step"


@dataclass
class StepSession:
    """One step function with its state: ``run([token, *states]) → [logits, *states]``."""

    run: Callable[[list[np.ndarray]], list[np.ndarray]]
    states: list[np.ndarray]  # current states, zeros at the start
    token_dtype: np.dtype
    runtime: str  # "torch-eager", "onnxruntime", "litert-interpreter", ...
    artifact: str  # file or checkpoint it runs
    step_ms: list[float] = field(default_factory=list)  # wall time of every step

    def __call__(self, token: int) -> np.ndarray:
        """Feed one byte; returns the next-byte logits (vocab,) and keeps the new state."""
        start = time.perf_counter_ns()
        out = self.run([np.array([[token]], dtype=self.token_dtype), *self.states])
        self.step_ms.append((time.perf_counter_ns() - start) / 1e6)
        self.states = [np.asarray(s) for s in out[1:]]
        return np.asarray(out[0]).reshape(-1)

    def generate(self, prompt: bytes, max_bytes: int, *, temperature: float = 0.0, top_k: int = 0,
                 seed: int = 0) -> Iterator[int]:
        """Feed ``prompt``, then yield ``max_bytes`` new bytes (greedy at temperature 0; see ``generate``)."""
        return generate(self, prompt, max_bytes, temperature=temperature, top_k=top_k, seed=seed)


def open_step_session(path: str | Path, fmt: str | None = None, threads: int = 2) -> StepSession:
    """A bundle's verified step artifact (``fmt``, or the first that runs here), or a checkpoint in PyTorch."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return _bundle_session(path, fmt, threads)
    if fmt not in (None, "torch"):
        raise EdgekitError(f"--format {fmt} needs a bundle; {path} is a checkpoint (runs in PyTorch)")
    return _torch_session(path, threads)


def _bundle_session(bundle: Path, fmt: str | None, threads: int) -> StepSession:
    manifest = load_manifest(bundle)
    steps = [e for e in manifest.artifacts if e.graph == STEP_GRAPH and e.file and e.status != FAILED
             and not e.compiled_for and (fmt is None or e.format == fmt)]
    if not steps:
        have = sorted({e.format for e in manifest.artifacts if e.graph == STEP_GRAPH and e.file})
        raise EdgekitError(f"{bundle} has no {fmt or ''} step artifact to stream with"
                           f"{'; it has: ' + ', '.join(have) if have else ' (convert a sequence model first)'}")
    reasons = []
    for entry in steps:
        run = CONVERTERS.get(entry.format).runner(bundle_path(bundle, entry.file), threads)
        if isinstance(run, RunnerUnavailable):
            reasons.append(f"{entry.file}: {run.reason}")
            continue
        states = [np.zeros(t["shape"], dtype=t["dtype"]) for t in entry.inputs[1:]]
        return StepSession(run, states, np.dtype(entry.inputs[0]["dtype"]), entry.runtime, entry.file)
    raise EdgekitError(f"no step artifact of {bundle} runs here: {'; '.join(reasons)}")


def _torch_session(path: Path, threads: int) -> StepSession:
    import torch

    model = load_checkpoint(path).model
    if not hasattr(model, "step") or getattr(model.head, "output_name", "") != "logits" or \
            model.head.step_example_input().is_floating_point():
        raise EdgekitError(f"{path} is not a causal byte language model (it needs a streaming step over tokens)")
    torch.set_num_threads(threads)

    @torch.inference_mode()
    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        out = model.step(*(torch.from_numpy(x) for x in inputs))
        return [o.numpy() for o in out]

    states = [s.numpy() for s in model.init_state(1)]
    return StepSession(run, states, np.dtype(np.int32), "torch-eager", str(path))


def generate(session: StepSession, prompt: bytes, max_bytes: int, *, temperature: float = 0.0,
             top_k: int = 0, seed: int = 0) -> Iterator[int]:
    """Feed ``prompt`` byte by byte, then yield ``max_bytes`` new bytes (greedy at temperature 0)."""
    if not prompt:
        raise EdgekitError("the prompt is empty; give at least one byte with --prompt")
    if not (np.isfinite(temperature) and temperature >= 0) or top_k < 0 or max_bytes < 0:
        raise EdgekitError(f"--temperature {temperature} must be finite and >= 0, --top-k {top_k} and --max-bytes "
                           f"{max_bytes} >= 0")
    rng = np.random.default_rng(seed)
    logits = session(prompt[0])
    if top_k > logits.size:
        raise EdgekitError(f"--top-k {top_k} is larger than the vocabulary ({logits.size} tokens); "
                           f"give 0 (all) to {logits.size}")
    for byte in prompt[1:]:
        logits = session(byte)
    for _ in range(max_bytes):
        byte = _sample(logits, temperature, top_k, rng)
        yield byte
        logits = session(byte)


def _sample(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """Greedy (temperature 0) or softmax sampling, optionally from the ``top_k`` most likely bytes."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64)
    z = (z - z.max()) / temperature  # <= 0 everywhere: a tiny temperature gives -inf, never nan
    if top_k:
        z[z < np.sort(z)[-top_k]] = -np.inf
    p = np.exp(z)
    return int(rng.choice(len(p), p=p / p.sum()))
