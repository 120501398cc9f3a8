"""Canaries for the private API edgekit uses: one test per function (or relied-on name) of each format's
``_compat.py``, run for real on a tiny model. A failure names the library, the version the function was
written against and the installed one, so an upgrade that moves a private name fails here, by name."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from edgekit.converters.coreml import _compat as coreml_compat
from edgekit.converters.onnx import _compat as onnx_compat
from edgekit.converters.tflite import _compat as tflite_compat


@contextlib.contextmanager
def canary(package: str, written_against: str) -> Iterator[None]:
    """Turn any failure inside into one naming ``package``, the version written against and the installed one."""
    try:
        yield
    except Exception as exc:  # an AssertionError too: the private API answered, but not as it used to
        installed = importlib.metadata.version(package)
        pytest.fail(f"{package} private-API canary failed (written against {written_against}, installed "
                    f"{installed}): {type(exc).__name__}: {exc}", pytrace=True)


def coreml(written: str = coreml_compat.WRITTEN_AGAINST) -> contextlib.AbstractContextManager:
    """The canary context for coremltools."""
    return canary("coremltools", written)


class TwoLayer(torch.nn.Module):
    """The tiny model every canary converts: linear → relu → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


X = (torch.randn(1, 4),)


@pytest.fixture(scope="module")
def mlmodel() -> Any:
    """TwoLayer converted by coremltools to an ML program (not saved, not loaded)."""
    ct = pytest.importorskip("coremltools")
    torch.manual_seed(0)
    program = torch.export.export(TwoLayer().eval(), X).run_decompositions({})
    return ct.convert(program, inputs=[ct.TensorType(name="x", shape=X[0].shape)], convert_to="mlprogram",
                      minimum_deployment_target=ct.target.iOS16, skip_model_load=True)


@pytest.fixture(scope="module")
def mlpackage(mlmodel: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted TwoLayer saved as an .mlpackage."""
    path = tmp_path_factory.mktemp("coreml") / "two_layer.mlpackage"
    mlmodel.save(str(path))
    return path


def _op_types(program: Any) -> list[str]:
    """The op types of a MIL program's main function, in order."""
    return [op.op_type for op in program.functions["main"].operations]


def test_coreml_mil_program(mlmodel):
    with coreml():
        ops = _op_types(coreml_compat.mil_program(mlmodel))
        assert "linear" in ops and "relu" in ops, ops


def test_coreml_apply_graph_passes_runs_each_pass(mlmodel):
    seen: list[list[str]] = []
    with coreml():
        recorder = coreml_compat.graph_pass(lambda prog: seen.append(_op_types(prog)))
        rebuilt = coreml_compat.apply_graph_passes(mlmodel, [recorder])
        assert len(seen) == 1 and "linear" in seen[0]
        assert rebuilt.get_spec().WhichOneof("Type") == "mlProgram"


def test_coreml_pass_registry_and_dedup_threshold_is_restored():
    with coreml():
        registry = coreml_compat.pass_registry()
        assert "common::dead_code_elimination" in registry and "common::const_deduplication" in registry
        shared = registry["common::const_deduplication"]
        before = shared.const_threshold
        with coreml_compat.const_dedup_threshold(1) as dedup:
            assert dedup.const_threshold == 1 and type(dedup)().const_threshold == 1  # the class holds it
        assert shared.const_threshold == before  # and it is put back for every later conversion


def test_coreml_input_vars_of_an_op(mlmodel):
    with coreml():
        op = next(o for o in coreml_compat.mil_program(mlmodel).functions["main"].operations if o.op_type != "const")
        bound = op._input_vars  # what set_input_var replaces, on a copy
        assert bound and set(bound) <= set(op.inputs)
        copy_ = __import__("copy").copy(op)
        name = next(iter(bound))
        coreml_compat.set_input_var(copy_, name, "x")
        assert copy_._input_vars[name] == "x" and op._input_vars[name] != "x"


def test_coreml_register_graph_pass_twice_is_one_pass_that_runs(mlmodel):
    ct = pytest.importorskip("coremltools")
    ran: list[str] = []
    with coreml():
        name = coreml_compat.register_graph_pass("canary_pass", lambda prog: ran.append("first"))
        again = coreml_compat.register_graph_pass("canary_pass", lambda prog: ran.append("second"))
        assert name == again == "edgekit::canary_pass" and name in coreml_compat.pass_registry()
        pipeline = ct.PassPipeline.EMPTY
        pipeline.append_pass(name)
        program = torch.export.export(TwoLayer().eval(), X).run_decompositions({})
        ct.convert(program, inputs=[ct.TensorType(name="x", shape=X[0].shape)], convert_to="mlprogram",
                   pass_pipeline=pipeline, skip_model_load=True)
        assert ran == ["first"]  # the first registration stays; the second is a no-op


def test_coreml_block_context_edits_a_block(mlmodel):
    mb = pytest.importorskip("coremltools.converters.mil.mil").Builder

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))])
    def prog(x):
        return mb.relu(x=mb.relu(x=x))

    @coreml_compat.block_context
    def drop_second_relu(block) -> None:
        first, second = block.operations
        second.enclosing_block.replace_uses_of_var_after_op(anchor_op=second, old_var=second.outputs[0],
                                                            new_var=first.outputs[0])
        block.remove_ops([second])

    with coreml():
        drop_second_relu(prog.functions["main"])
        assert _op_types(prog) == ["relu"]


class Counter(torch.nn.Module):
    """A stateful step: a buffer updated in place (what Core ML holds as an MLState)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.total.copy_(self.total + x)
        return self.total * 2.0


def test_coreml_fixed_state_canonicalization_converts_a_stateful_graph():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil.mil.passes.defs.optimize_state import canonicalize_inplace_pattern

    with coreml():
        name = coreml_compat.register_fixed_state_canonicalization("canary_state_updates")
        assert coreml_compat.register_fixed_state_canonicalization("canary_state_updates") == name
        assert isinstance(coreml_compat.pass_registry()[name], canonicalize_inplace_pattern)
        pipeline = ct.PassPipeline.DEFAULT
        pipeline.remove_passes(["common::canonicalize_inplace_pattern"])
        pipeline.append_pass(name)
        program = torch.export.export(Counter().eval(), X).run_decompositions({})
        state = ct.StateType(wrapped_type=ct.TensorType(shape=(1, 4), dtype=np.float16), name="total")
        model = ct.convert(program, inputs=[ct.TensorType(name="x", shape=(1, 4), dtype=np.float16)],
                           states=[state], convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                           compute_precision=ct.precision.FLOAT16, pass_pipeline=pipeline, skip_model_load=True)
        assert "coreml_update_state" in _op_types(coreml_compat.mil_program(model))


def test_coreml_load_milproto_of_a_saved_package(mlpackage):
    ct = pytest.importorskip("coremltools")
    with coreml():
        saved = ct.models.MLModel(str(mlpackage), skip_model_load=True)
        program = coreml_compat.load_milproto(saved.get_spec(), saved.weights_dir)
        ops = _op_types(program)
        assert "linear" in ops and "relu" in ops, ops


def test_coreml_blob_reader_reads_a_saved_weight(mlpackage):
    ct = pytest.importorskip("coremltools")
    spec = ct.models.utils.load_spec(str(mlpackage))
    block = spec.mlProgram.functions["main"].block_specializations["CoreML6"]
    blob = next(op for op in block.operations if op.type == "const"
                and op.attributes["val"].WhichOneof("value") == "blobFileValue")
    shape = [d.constant.size for d in blob.outputs[0].type.tensorType.dimensions]
    with coreml():
        reader = coreml_compat.blob_reader(str(mlpackage / "Data/com.apple.CoreML/weights/weight.bin"))
        values = np.frombuffer(reader.read_fp16_data(blob.attributes["val"].blobFileValue.offset).tobytes(), np.float16)
    assert values.size == int(np.prod(shape)) > 1 and np.isfinite(values).all() and np.abs(values).max() > 0


def test_coreml_has_own_value_inference():
    mb = pytest.importorskip("coremltools.converters.mil.mil").Builder

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 1, 4, 4))])
    def prog(x):
        return mb.avg_pool(x=mb.relu(x=x), kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid")

    with coreml():
        ops = {op.op_type: op for op in prog.functions["main"].operations}
        assert coreml_compat.has_own_value_inference(ops["relu"])  # relu folds constants itself
        assert not coreml_compat.has_own_value_inference(ops["avg_pool"])  # pooling never does


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TwoLayer converted by litert-torch to a .tflite file."""
    litert_torch = pytest.importorskip("litert_torch")
    path = tmp_path_factory.mktemp("tflite") / "two_layer.tflite"
    litert_torch.convert(TwoLayer().eval(), X).export(str(path))
    return path


def tflite(package: str) -> contextlib.AbstractContextManager:
    """The canary context for LiteRT (``ai-edge-litert``) or ``litert-torch``."""
    return canary(package, tflite_compat.WRITTEN_AGAINST[package])


def test_tflite_ops_details_lists_the_operators(tflite_file):
    from ai_edge_litert.interpreter import Interpreter

    with tflite("ai-edge-litert"):
        names = [op["op_name"] for op in tflite_compat.ops_details(Interpreter(model_path=str(tflite_file)))]
        assert names.count("FULLY_CONNECTED") == 2, names


def test_tflite_has_lowering():
    pytest.importorskip("litert_torch")
    with tflite("litert-torch"):
        assert tflite_compat.has_lowering(torch.ops.aten.add.Tensor)
        assert tflite_compat.has_lowering(torch.ops.aten.convolution.default)
        assert not tflite_compat.has_lowering(torch.ops.aten.linalg_eigh.default)  # no TFLite kernel for it


@pytest.mark.parametrize("module, name", [(m, n) for m, names in onnx_compat.RELIED_ON.items() for n in names])
def test_onnx_relied_on_names_exist(module, name):
    package = module.split(".")[0]
    with canary(package, onnx_compat.WRITTEN_AGAINST[package]):
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone"


def test_a_failing_canary_names_the_library_and_both_versions():
    installed = importlib.metadata.version("onnx")
    with pytest.raises(pytest.fail.Exception, match=rf"onnx private-API canary failed \(written against 1\.0, "
                                                    rf"installed {installed}\): AttributeError: gone"):
        with canary("onnx", "1.0"):
            raise AttributeError("gone")
