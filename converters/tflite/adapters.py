"""TFLite/LiteRT: one .tflite with one signature per variant (``litert_torch.signature`` chained).

The converter stores each distinct constant once, so the folded base weights that every signature
uses appear once and each adapter adds only its lora_A/lora_B tensors. Weight-only int8/int4 bundles
quantize the written file with ai-edge-quantizer, which quantizes a shared constant once. Apps pick a variant with
``interpreter.get_signature_runner(name)`` (Kotlin: ``interpreter.runSignature(inputs, outputs, name)``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters._quiet import quiet
from edgekit.converters.base import Runner, RunnerUnavailable, conversion_error
from edgekit.errors import EdgekitError, require
from edgekit.lora.pack_base import Packager, VariantGraph, Written, register_packager
from edgekit.quant.spec import QuantSpec


def _index(name: str) -> int:
    """``args_3`` / ``output_3`` → 3 (signature tensors are named by position)."""
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else 0


@register_packager("tflite")
class TFLitePackager(Packager):
    suffix = ".tflite"
    # weight-only schemes quantize the written file (ai-edge-quantizer): shared base weights stay shared
    schemes = ("fp32", "int8-weight", "int4-weight")

    def write(self, variants: list[VariantGraph], path: Path, spec: QuantSpec, metadata: dict[str, Any]) -> Written:
        litert_torch = require("litert_torch", "tflite")
        from edgekit.converters.tflite.export import embed_metadata, write_flatbuffer
        from edgekit.converters.tflite.weights import RECIPES, quantize_weights

        try:
            with quiet():
                first, *rest = variants
                converter = litert_torch.signature(first.name, first.source.module, first.source.example_inputs)
                for v in rest:
                    converter = converter.signature(v.name, v.source.module, v.source.example_inputs)
                write_flatbuffer(converter.convert(), path)
                if spec.scheme.value in RECIPES:
                    quantize_weights(path, spec)
        except EdgekitError:
            raise
        except Exception as exc:
            raise conversion_error(self.name, exc) from exc
        embed_metadata(path, metadata)
        return Written({v.name: {"signature": v.name} for v in variants})

    def _interpreter(self, path: Path, threads: int):
        interp_mod = require("ai_edge_litert.interpreter", "tflite")
        try:
            with quiet():
                return interp_mod.Interpreter(model_path=str(path), num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise EdgekitError(f"the LiteRT interpreter cannot load {path}: {str(exc).splitlines()[0][:200]}") from None

    def runner(self, path: Path, variant: str, threads: int) -> Runner | RunnerUnavailable:
        return _signature_runner(self._interpreter(path, threads), variant)

    def switcher(self, path: Path, threads: int):
        """One interpreter, one signature runner per variant: switching is calling another runner."""
        interpreter = self._interpreter(path, threads)
        runners: dict[str, Runner] = {}

        def run(variant: str, inputs: list) -> list:
            if variant not in runners:
                runners[variant] = _signature_runner(interpreter, variant)
            return runners[variant](inputs)

        return run


def _signature_runner(interpreter, variant: str) -> Runner:
    names = interpreter.get_signature_list()
    if variant not in names:
        raise EdgekitError(f"the .tflite has no signature {variant!r}; it has: {', '.join(sorted(names))}")
    with quiet():
        sig = interpreter.get_signature_runner(variant)
    in_names = sorted(sig.get_input_details(), key=_index)
    out_names = sorted(sig.get_output_details(), key=_index)

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        result = sig(**dict(zip(in_names, inputs)))
        return [result[n] for n in out_names]

    return run
