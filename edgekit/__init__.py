"""edgekit: one PyTorch model in; verified, quantized, benchmarked phone artifacts out.

The public API is loaded on first use, so ``import edgekit`` and the CLI stay quick:
verbs (``convert``, ``run``, ``train``, ``adapt``, ``load``, ``bench``, ``bench_graph``, ``create_model``,
``load_recipe``, ``print_table``, ``open_step_session``, ``adb_devices``), types (``Bundle``, ``QuantSpec``,
``AdbBenchOptions``, ``EdgekitError``, …) and the registries a user extends (``CONVERTERS``, ``FAMILIES``,
``DATASETS``, ``DOMAINS``, ``AUGMENTATIONS``, ``DEVICE_BENCHES``, ``DEVICE_LISTERS``). The CLI uses nothing else.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name → the module that defines it
_PUBLIC = {
    **dict.fromkeys(["convert", "Bundle", "VerifyReport", "train", "Trained", "adapt", "load", "run", "load_recipe",
                     "create_model", "bench", "BenchReport", "bench_graph", "Adapted", "reference"],
                    "edgekit.api"),
    "write_html_report": "edgekit.report.html", "QuantSpec": "edgekit.quant.spec", "EdgekitError": "edgekit.errors", "print_table": "edgekit.report.table",
    "RunnerUnavailable": "edgekit.graph", "time_interleaved": "edgekit.benchmarking.stats",
    "ADAPTER_SIZE_GOAL": "edgekit.adapter_bundle", "AdbBenchOptions": "edgekit.devices.adb_bench",
    "bundled_recipes": "edgekit.recipe", "adb_devices": "edgekit.devices.device_info", "check_npu_target": "edgekit.npu", "app_code": "edgekit.appcode", "open_step_session": "edgekit.generate",
    **dict.fromkeys(["ACCELERATORS", "Placement", "PlacementGateFailed"], "edgekit.placement"),
    # registries a user extends, from the modules that fill them with the built-in entries
    **dict.fromkeys(["CONVERTERS", "Converter", "register_converter"], "edgekit.converters"),
    **dict.fromkeys(["FAMILIES", "EdgeModel"], "edgekit.models"), "register_family": "edgekit.models.base",
    "DATASETS": "edgekit.data", "DOMAINS": "edgekit.lora.domains", "AUGMENTATIONS": "edgekit.training.augment",
    **dict.fromkeys(["DEVICE_BENCHES", "DEVICE_LISTERS", "DeviceBackend"], "edgekit.benchmarking.targets"),
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
