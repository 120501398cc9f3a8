"""Reference evaluation of Core ML ML programs in NumPy, on any OS ("mil-reference").

Core ML models only run on Apple hardware. The ML program (MIL) inside a saved
``.mlpackage`` is, however, a plain list of typed ops with its weights; this package runs
it op by op in NumPy, rounding every result to the dtype the program declares, so an fp16
export is checked with fp16 arithmetic. It proves that the converted program computes
what the PyTorch model computes; it says nothing about Apple's runtime kernels or the
Neural Engine (see docs/coreml-verification.md).

    program = load_program("model.mlpackage")
    outputs = evaluate(program, {"image": x})            # {"logits": array}
    run = MilEvaluator(program, "main")                  # reuse the plan for many inputs
    outputs = run({"image": x})
    state = run.make_state()                             # a stateful (iOS 18) program: states
    logits = run({"tokens": t}, state)["logits"]         # carry over from call to call

coremltools is needed at call time only (``pip install -e '.[coreml]'``).
"""

from __future__ import annotations

from edgekit.converters.coreml.mil_reference.evaluator import MilEvaluator, evaluate, load_program
from edgekit.converters.coreml.mil_reference.registry import MilEvaluationError, MissingKernel, kernel, kernel_op_types
from edgekit.converters.coreml.mil_reference.state import MilState

__all__ = ["MilEvaluationError", "MilEvaluator", "MilState", "MissingKernel", "evaluate", "kernel", "kernel_op_types",
           "load_program"]
