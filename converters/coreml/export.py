"""Core ML export (coremltools ML Program). Predicts on macOS; on Linux it is checked as far as possible."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.quiet import quiet
from edgekit.converters.base import (
    ArtifactInfo, Converter, ExtraGraph, ModelSource, Runner, RunnerUnavailable, TensorInfo, Written, conversion_error,
    register_converter,
)
from edgekit.converters.coreml.adapters import write_multifunction
from edgekit.converters.coreml.compress import QUANT
from edgekit.converters.coreml.mil_reference import MilEvaluator, load_program
from edgekit.converters.coreml.placement import ane_placement
from edgekit.converters.coreml.stateful import convert_stateful, state_runner, stateful_graphs
from edgekit.errors import EdgekitError, require
from edgekit.graph import NamedGraph
from edgekit.placement import Placement
from edgekit.quant.spec import QuantSpec

_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}  # ArrayFeatureType
NOT_ON_MACOS = "Core ML prediction needs macOS"


DEBUG_HANDLE_MAP = "executorch_debug_handle_mapping.json"


@register_converter("coreml")
class CoreMLConverter(Converter):
    suffix = ".mlpackage"
    is_directory = True
    runtime = "coreml"
    precisions = tuple(QUANT.names())
    quant_methods = QUANT  # compress.py: one function per QuantSpec scheme
    extra = "coreml"
    # several graphs as functions of one .mlpackage (adapters.py); weight-only schemes quantize each function
    # before merging; W8A8 would need a calibration per graph
    multi_graph_schemes = ("fp32", "fp16", "int8-weight", "int4-weight", "palettize")
    accelerators = ("ane",)  # placement.py: the Neural Engine lint anywhere, MLComputePlan on macOS

    def export(self, source: ModelSource, path: Path, quant: QuantSpec | str, metadata: dict[str, Any],
               *, prepared: Any = None) -> list[str]:
        """Convert, embed ``metadata`` and save; returns the rewrites applied to the torch program (rewrites.py)."""
        require("coremltools", self.extra)
        spec = QuantSpec.parse(quant)
        write = QUANT.get(spec)
        try:
            with quiet():
                # a graph holding states (stateful.py) is always fp16: Core ML states are fp16 only
                mlmodel, rewrites = convert_stateful(source) if source.states else write(source, spec, prepared)
        except EdgekitError:
            raise
        except Exception as exc:
            raise conversion_error(self.name, exc) from exc
        mlmodel.short_description = metadata.get("description", "")
        mlmodel.author = "edgekit"
        mlmodel.version = str(metadata.get("edgekit_version", ""))
        mlmodel.user_defined_metadata["edgekit"] = json.dumps(metadata)
        if metadata.get("labels"):
            mlmodel.user_defined_metadata["labels"] = json.dumps(metadata["labels"])
        with quiet():
            mlmodel.save(str(path))
        # coremltools adds ExecuTorch's op-to-source debug map for torch.export programs; Core ML never reads it
        (path / DEBUG_HANDLE_MAP).unlink(missing_ok=True)
        return rewrites

    def inspect(self, path: Path) -> ArtifactInfo:
        ct = require("coremltools", self.extra)
        try:
            with quiet():
                spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
        except Exception as exc:  # coremltools raises several types for a damaged package
            raise EdgekitError(f"{path} is not a loadable Core ML package: {str(exc).splitlines()[0][:200]}") from None
        desc = spec.description
        return ArtifactInfo(
            inputs=[_feature_info(f) for f in desc.input],
            outputs=[_feature_info(f) for f in desc.output],
            op_histogram=_op_histogram(spec),
            metadata=dict(desc.metadata.userDefined),
            states=[_feature_info(f, "stateType") for f in desc.state],
        )

    def extra_graphs(self, graphs: list[tuple[ModelSource, Any]], precision: QuantSpec) -> list[ExtraGraph]:
        """For a streaming model: the ``step`` graph with its states held by the model (iOS 18 MLState)."""
        return stateful_graphs(graphs, precision)

    def export_many(self, graphs: list[NamedGraph], path: Path, quant: QuantSpec | str,
                    metadata: dict[str, Any]) -> Written:
        """One multifunction .mlpackage, one function per graph (adapters.py); identical weights stored once."""
        require("coremltools", self.extra)
        spec = QuantSpec.parse(quant)
        self.check_many(spec)
        try:
            return write_multifunction(graphs, path, spec, metadata)
        except EdgekitError:
            raise
        except Exception as exc:
            raise conversion_error(self.name, exc) from exc

    def placement(self, path: Path, accelerator: str) -> Placement:
        """Neural Engine placement: MLComputePlan on macOS, else the written-rules lint (placement.py)."""
        if accelerator not in self.accelerators:
            return super().placement(path, accelerator)
        require("coremltools", self.extra)
        return ane_placement(path)

    def reference_runner(self, path: Path, variant: str | None = None) -> Runner | None:
        """The saved ML Program (function ``variant``) evaluated op by op in NumPy (method "mil-reference")."""
        evaluator = MilEvaluator(load_program(path), variant or "main")
        return state_runner(evaluator) if evaluator.states else evaluator.run_list

    def runner(self, path: Path, threads: int, variant: str | None = None) -> Runner | RunnerUnavailable:
        if sys.platform != "darwin":
            return RunnerUnavailable(NOT_ON_MACOS)
        ct = require("coremltools", self.extra)
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY, function_name=variant)
        spec = model.get_spec().description
        in_types = {f.name: np.dtype(_DTYPES.get(f.type.multiArrayType.dataType, "float32")) for f in spec.input}
        out_names = [f.name for f in spec.output]
        state = model.make_state() if len(spec.state) else None  # one stream: states carry across calls

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            # as the model stores them: token ids given as int64 are fed as the int32 the input declares
            feed = {n: np.asarray(x).astype(t, copy=False) for (n, t), x in zip(in_types.items(), inputs)}
            result = model.predict(feed, state=state)
            return [np.asarray(result[n]) for n in out_names]

        return run


def _feature_info(feature, kind: str = "multiArrayType") -> TensorInfo:
    """Name, shape and dtype of an input/output (or, with ``kind="stateType"``, of a state)."""
    array = feature.type.multiArrayType if kind == "multiArrayType" else feature.type.stateType.arrayType
    return TensorInfo(feature.name, tuple(int(d) for d in array.shape), _DTYPES.get(array.dataType, str(array.dataType)))


def _op_histogram(spec) -> dict[str, int]:
    ops: Counter[str] = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            ops.update(op.type for op in block.operations)
    return dict(ops)
