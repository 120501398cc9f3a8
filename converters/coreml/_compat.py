"""Every use of coremltools' private or internal API, in one place.

Written against coremltools 9.0 (``WRITTEN_AGAINST``). Each function names what it reaches into;
``tests/test_compat.py`` runs one canary per function, so an upgrade that moves one of them fails
there, by name, instead of deep inside a conversion.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from edgekit.errors import require

WRITTEN_AGAINST = "9.0"


def mil_program(mlmodel: Any) -> Any:
    """The MIL program behind a converted (not yet saved) ``MLModel``: ``MLModel._mil_program``."""
    return mlmodel._mil_program


def apply_graph_passes(mlmodel: Any, passes: list[Any]) -> Any:
    """Run MIL graph passes on a converted model and rebuild it: ``coremltools.models.utils._apply_graph_pass``."""
    from coremltools.models.utils import _apply_graph_pass

    return _apply_graph_pass(mlmodel, passes, skip_model_load=True)


def pass_registry() -> Any:
    """coremltools' registry of MIL passes by ``namespace::name`` (internal module)."""
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    return PASS_REGISTRY


@contextlib.contextmanager
def const_dedup_threshold(elements: int) -> Iterator[Any]:
    """``common::const_deduplication`` with a smaller size threshold, for the duration of the block.

    coremltools 9 keeps the threshold on the pass class (``const_deduplication._const_threshold``, which the
    ``const_threshold`` setter writes), so every instance shares it: it is set here and restored on exit, or
    every later conversion in the process would deduplicate tiny constants too."""
    dedup = pass_registry()["common::const_deduplication"]
    before = dedup.const_threshold
    dedup.const_threshold = elements
    try:
        yield dedup
    finally:
        dedup.const_threshold = before


def set_input_var(op: Any, name: str, value: Any) -> None:
    """Bind input ``name`` of (a copy of) a MIL op to ``value`` for its value inference."""
    op._input_vars = {**op._input_vars, name: value}


def _pass_class(name: str, apply: Callable[[Any], None]) -> type:
    """A MIL graph pass class (``passes.graph_pass.AbstractGraphPass``) whose ``apply(prog)`` is ``apply``."""
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass

    return type(name, (AbstractGraphPass,), {"apply": lambda self, prog: apply(prog)})


def register_graph_pass(name: str, apply: Callable[[Any], None]) -> str:
    """Register ``apply(prog)`` as the MIL pass ``edgekit::<name>`` once; returns its pipeline name."""
    from coremltools.converters.mil.mil.passes.pass_registry import register_pass

    full = f"edgekit::{name}"
    if full not in pass_registry():
        register_pass(namespace="edgekit", name=name)(_pass_class(name, apply))
    return full


def graph_pass(apply: Callable[[Any], None]) -> Any:
    """An unregistered MIL pass object running ``apply(prog)`` (for ``apply_graph_passes``)."""
    return _pass_class("EdgekitPass", apply)()


def block_context(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Decorate a function that edits a MIL block: ``passes.helper.block_context_manager``."""
    from coremltools.converters.mil.mil.passes.helper import block_context_manager

    return block_context_manager(fn)


def register_fixed_state_canonicalization(name: str) -> str:
    """Register ``edgekit::<name>``: coremltools' ``canonicalize_inplace_pattern`` with its private
    ``_try_match_and_transform_pattern`` given the live op list (the stock pass indexes a stale copy and
    reorders state updates wrongly on our step graphs). Returns the pipeline name."""
    from coremltools.converters.mil.mil.passes.defs.optimize_state import canonicalize_inplace_pattern
    from coremltools.converters.mil.mil.passes.pass_registry import register_pass

    full = f"edgekit::{name}"
    if full not in pass_registry():
        class _CanonicalizeStateUpdates(canonicalize_inplace_pattern):
            """Each state update right after the op computing its value; indexes the live op list."""

            def _try_match_and_transform_pattern(self, op: Any, block: Any, block_operation_list: list) -> None:
                super()._try_match_and_transform_pattern(op, block, list(block.operations))

        register_pass(namespace="edgekit", name=name)(_CanonicalizeStateUpdates)
    return full


def load_milproto(spec: Any, weights_dir: str) -> Any:
    """Rebuild the MIL program of a saved ML program's spec: ``frontend.milproto.load``."""
    require("coremltools", "coreml")
    from coremltools.converters.mil.frontend.milproto import load as milproto

    return milproto.load(spec, spec.specificationVersion, weights_dir)


def has_own_value_inference(op: Any) -> bool:
    """Whether a MIL op class overrides ``Operation.value_inference`` (internal ``mil.operation``)."""
    from coremltools.converters.mil.mil.operation import Operation

    return type(op).value_inference is not Operation.value_inference


def blob_reader(weight_file: str) -> Any:
    """A reader of a saved ML program's weight file (``read_fp16_data(offset)``, ``read_float_data(offset)``):
    ``coremltools.libmilstoragepython._BlobStorageReader``, which ``frontend.milproto.load`` uses."""
    require("coremltools", "coreml")
    from coremltools.libmilstoragepython import _BlobStorageReader

    return _BlobStorageReader(weight_file)
