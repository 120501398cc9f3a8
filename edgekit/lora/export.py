"""`edgekit convert CKPT --adapter A`: the base with one adapter merged, exported like any model and
verified on the adapter's own held-out domain data."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from edgekit.checkpoint import Checkpoint, load_checkpoint
from edgekit.graph import ModelSource
from edgekit.data import Split
from edgekit.errors import EdgekitError
from edgekit.lora.adapter import Adapter, load_adapter
from edgekit.lora.domains import DOMAINS, load_domain, load_user_data
from edgekit.sources import load_source, reference_for
from edgekit.verify import ReferenceData, reference_from_model


def merged_source(checkpoint: str | Path, adapter_path: str | Path) -> tuple[ModelSource, Adapter, Checkpoint]:
    """A ModelSource of the checkpoint's model with the adapter merged into its weights (refuses a
    different base). Its sha256 combines base and adapter, so the bundle never mixes it with the base."""
    base = load_source(checkpoint)
    if base.kind != "checkpoint":
        raise EdgekitError(f"--adapter needs an edgekit checkpoint folder, not {base.origin}")
    ckpt = load_checkpoint(checkpoint)
    adapter = load_adapter(adapter_path)
    model = adapter.applied_to(ckpt, merge=True)
    digest = hashlib.sha256(f"{ckpt.sha256}+{adapter.sha256}".encode()).hexdigest()
    source = dataclasses.replace(base, name=f"{base.name}_{adapter.name}", module=model, exported=None,
                                 sha256=digest, example_inputs=model.example_inputs())
    return source, adapter, ckpt


def domain_test_split(adapter: Adapter, ckpt: Checkpoint) -> tuple[Split, str] | None:
    """The adapter's held-out test split (its registered domain or its --data), when it can be rebuilt here."""
    meta = adapter.meta
    seed = int(meta.get("seed", 0))
    if meta.get("domain") and meta["domain"] in DOMAINS:
        data = load_domain(meta["domain"], ckpt, 1, seed)
    elif meta.get("data") and Path(meta["data"]).exists():
        data = load_user_data(meta["data"], ckpt, 1, seed)
    else:
        return None
    return data.test, f"{data.name} test split"


def reference_on(source: ModelSource, split: Split, description: str) -> ReferenceData:
    """PyTorch outputs of ``source`` (one graph) on a split's inputs, with labels when they still apply."""
    samples = source.samples(split.inputs) if source.samples else [(x[None],) for x in split.inputs]
    labels = split.labels.numpy()[:len(samples)] if source.labelled and split.labels.dim() == 1 else None
    where = f" → {source.graph}" if source.graph else ""
    return reference_from_model(source.module, samples, labels, f"{description}{where} ({len(samples)})",
                                output_names=source.output_names)


def adapter_references(sources: list[ModelSource], adapter: Adapter, ckpt: Checkpoint) -> list[ReferenceData]:
    """Per graph: the adapter's domain test split, else the base recipe's test split."""
    found = domain_test_split(adapter, ckpt)
    if found is None:
        return [reference_for(s) for s in sources]
    split, description = found
    return [reference_on(s, split, description) for s in sources]
