"""TFLite/LiteRT with several named graphs (``TFLiteConverter.export_many``): one .tflite with one
signature per graph (``litert_torch.signature`` chained).

The converter stores each distinct constant once, so the folded base weights that every signature
uses appear once and each adapter adds only its lora_A/lora_B tensors. Weight-only int8/int4 artifacts
quantize the written file with ai-edge-quantizer, which quantizes a shared constant once. Apps pick a graph with
``interpreter.get_signature_runner(name)`` (Kotlin: ``interpreter.runSignature(inputs, outputs, name)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.converters.base import Runner, Switcher
from edgekit.converters.tflite.tensors import IONames, feed_value
from edgekit.errors import EdgekitError, require
from edgekit.graph import NamedGraph
from edgekit.quiet import quiet


def signature_model(graphs: list[NamedGraph]) -> Any:
    """The litert_torch model holding one signature per graph, named like the graph."""
    litert_torch = require("litert_torch", "tflite")
    first, *rest = graphs
    converter = litert_torch.signature(first.name, first.source.module, first.source.example_inputs)
    for g in rest:
        converter = converter.signature(g.name, g.source.module, g.source.example_inputs)
    return converter.convert()


def signature_runner(interpreter: Any, variant: str, order: dict[str, IONames]) -> Runner:
    """Run one signature of a loaded interpreter, inputs and outputs in model order (``order``: each
    signature's keys in that order, ``tensors.signature_order``); integer inputs are cast to what the
    signature stores."""
    names = interpreter.get_signature_list()
    if variant not in names or variant not in order:
        raise EdgekitError(f"the .tflite has no signature {variant!r}; it has: {', '.join(sorted(names))}")
    with quiet():
        sig = interpreter.get_signature_runner(variant)
    in_names, out_names = order[variant]
    details = sig.get_input_details()

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        result = sig(**{n: feed_value(details[n], x) for n, x in zip(in_names, inputs)})
        return [result[n] for n in out_names]

    return run


def signature_switcher(interpreter: Any, order: dict[str, IONames]) -> Switcher:
    """One interpreter, one signature runner per variant: switching is calling another runner."""
    runners: dict[str, Runner] = {}

    def run(variant: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if variant not in runners:
            runners[variant] = signature_runner(interpreter, variant, order)
        return runners[variant](inputs)

    return run
