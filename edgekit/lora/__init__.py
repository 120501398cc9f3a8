"""LoRA specialization, the model side: train adapters for a base checkpoint, merge one, or build the export
forms of base + N adapters (``fold``) that ``edgekit.adapter_bundle`` packages into one artifact per format.

    result = adapt_checkpoint("runs/cnn_digits/checkpoint", "adapters/inv", domain="digits_inverted_rotated")
    adapter = load_adapter("adapters/inv")          # refuses another base (sha256 mismatch)
    model = adapter.applied_to(load_checkpoint(...), merge=True)
"""

from edgekit.lora.adapter import Adapter, AdapterMismatchError, load_adapter, load_adapters, save_adapter
from edgekit.lora.domains import DOMAINS, AdaptData, load_domain, load_user_data
from edgekit.lora.layers import LoraLayer, inject_lora, lora_state_dict, merge_lora, resolve_targets
from edgekit.lora.train import DEFAULT_TARGETS, AdaptOptions, AdaptResult, adapt_checkpoint

__all__ = [
    "DEFAULT_TARGETS", "DOMAINS", "AdaptData", "AdaptOptions", "AdaptResult", "Adapter", "AdapterMismatchError",
    "LoraLayer", "adapt_checkpoint", "inject_lora", "load_adapter", "load_adapters", "load_domain", "load_user_data",
    "lora_state_dict", "merge_lora", "resolve_targets", "save_adapter",
]
