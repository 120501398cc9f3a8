"""Where a LiteRT model's ops run: on XNNPACK (observed here), on a phone's GPU or NPU (not measurable here).

"xnnpack" is measured, not predicted: the LiteRT interpreter that verifies and benchmarks the artifact applies
the XNNPACK delegate when it allocates tensors, and appends one ``DELEGATE`` node per partition it took. Each
such node's outputs are walked back through the original nodes to its inputs: the nodes passed are the ones
XNNPACK runs; every other node runs on LiteRT's reference CPU kernels. LiteRT's ``CompiledModel`` (CPU) says
whether the model is fully accelerated; its answer is checked against the walk and noted.

"gpu": the model analyzer ``ai_edge_litert`` ships (``_pywrap_analyzer_wrapper.ModelAnalyzer(path, True, True)``)
no longer checks GPU compatibility: in google-ai-edge/LiteRT tflite/python/analyzer_wrapper/model_analyzer.cc
the list of incompatible nodes is never filled, so it calls every model "compatible" (it did so here for
CUMSUM, EMBEDDING_LOOKUP and STABLEHLO_SORT). A report built on it would be a false pass: not run.
"npu": needs the phone (``edgekit bench --device adb --delegate qnn``; ``edgekit.devices.benchmark_log``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.converters.tflite._compat import ops_details
from edgekit.errors import EdgekitError, first_line, require
from edgekit.placement import OpPlacement, Placement, Where
from edgekit.quiet import quiet
from edgekit.registry import Registry

XNNPACK_README = "google-ai-edge/LiteRT tflite/delegates/xnnpack/README.md (Limitations and supported operators)"
XNNPACK_VISITOR = "google-ai-edge/LiteRT tflite/delegates/xnnpack/xnnpack_delegate.cc (Subgraph::VisitNode)"
ANALYZER_SOURCE = "google-ai-edge/LiteRT tflite/python/analyzer_wrapper/model_analyzer.cc"
PHONE_HINT = "needs a phone: edgekit bench ARTIFACT --device adb[:SERIAL] --delegate {delegate}"


@dataclass(frozen=True)
class Rule:
    """Why XNNPACK left an op to the CPU, and what would move it on; ``ops`` empty: matches any op."""

    ops: frozenset[str]
    reason: str
    fix: str
    source: str


# Explanations for ops the delegate was *seen* to leave out; they never decide placement (the walk does).
# First match wins: op-type rules, then the tensor-type rule, then the catch-all.
XNNPACK_RULES: tuple[Rule, ...] = (
    Rule(frozenset({"EMBEDDING_LOOKUP", "GATHER", "GATHER_ND"}),
         "XNNPACK has no gather / embedding-lookup kernel: LiteRT's reference kernel runs it",
         "look the rows up in the app and feed embeddings, or accept it (a lookup is cheap)", XNNPACK_VISITOR),
    Rule(frozenset({"CUMSUM"}), "XNNPACK has no cumulative-sum kernel",
         "write the prefix sum as a matmul: cumsum over the last dim of x is x @ torch.ones(n, n).triu()",
         XNNPACK_VISITOR),
    Rule(frozenset({"TOPK_V2", "STABLEHLO_SORT", "ARG_MAX", "ARG_MIN"}), "XNNPACK has no sort / top-k / arg-max kernel",
         "return the scores and sort / take the top k in the app", XNNPACK_VISITOR),
    Rule(frozenset({"SELECT", "SELECT_V2", "WHERE"}), "XNNPACK has no select (where) kernel",
         "mask with float arithmetic (x * m + fill * (1 - m)) instead of torch.where", XNNPACK_VISITOR),
    Rule(frozenset({"BROADCAST_TO"}), "XNNPACK has no broadcast-to kernel",
         "drop the explicit expand(): XNNPACK's elementwise ops broadcast their inputs themselves", XNNPACK_VISITOR),
    Rule(frozenset({"CAST", "EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "LOGICAL_AND",
                    "LOGICAL_OR", "LOGICAL_NOT"}),
         "XNNPACK has no comparison / boolean / cast kernels",
         "compute masks once outside the model (an input), or with float arithmetic", XNNPACK_VISITOR),
)
XNNPACK_FLOAT_TYPES = frozenset({np.float32, np.float16, np.int8, np.uint8})
DTYPE_RULE = Rule(frozenset(), "it has {types} tensors; XNNPACK computes fp32/fp16 and 8-bit quantized tensors only",
                  "keep integer index arithmetic out of the graph (precompute it), or accept it (such ops are cheap)",
                  XNNPACK_README)
FALLBACK_RULE = Rule(frozenset(), "the XNNPACK delegate declined it (unsupported op, parameters or dynamic operands)",
                     "see the op's constraints in the XNNPACK delegate's README; static weights and shapes help",
                     XNNPACK_README)


def explain(op: str, result_types: list[Any]) -> Rule:
    """The rule that explains why XNNPACK left ``op`` (with these result types) to the CPU."""
    for rule in XNNPACK_RULES:
        if op in rule.ops:
            return rule
    others = sorted({np.dtype(t).name for t in result_types if t not in XNNPACK_FLOAT_TYPES})
    if others:
        return Rule(frozenset(), DTYPE_RULE.reason.format(types="/".join(others)), DTYPE_RULE.fix, DTYPE_RULE.source)
    return FALLBACK_RULE


# estimated FLOPs per op: the ops whose work is a reduction over weights; others count one per output element
def _conv_flops(out: int, shapes: list[tuple[int, ...]]) -> float:
    return 2.0 * out * math.prod(shapes[1][1:]) if len(shapes) > 1 and len(shapes[1]) == 4 else float(out)


def _depthwise_flops(out: int, shapes: list[tuple[int, ...]]) -> float:
    return 2.0 * out * math.prod(shapes[1][1:3]) if len(shapes) > 1 and len(shapes[1]) == 4 else float(out)


def _matmul_flops(out: int, shapes: list[tuple[int, ...]]) -> float:
    return 2.0 * out * shapes[0][-1] if shapes and shapes[0] else float(out)


FLOPS: dict[str, Callable[[int, list[tuple[int, ...]]], float]] = {
    "CONV_2D": _conv_flops, "TRANSPOSE_CONV": _conv_flops, "DEPTHWISE_CONV_2D": _depthwise_flops,
    "FULLY_CONNECTED": _matmul_flops, "BATCH_MATMUL": _matmul_flops,
}


def _delegated(ops: list[dict[str, Any]]) -> tuple[set[int], int]:
    """Indices of the original nodes inside a DELEGATE node's partition, and the number of partitions.

    A partition's outputs are walked back through their producers, stopping at the partition's inputs."""
    producer = {int(t): op["index"] for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    taken: set[int] = set()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    for node in partitions:
        boundary = {int(t) for t in node["inputs"]}
        stack, seen = [int(t) for t in node["outputs"]], set()
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor in seen or tensor not in producer:
                continue
            seen.add(tensor)
            index = producer[tensor]
            taken.add(index)
            stack.extend(int(t) for t in ops[index]["inputs"] if t >= 0)
    return taken, len(partitions)


def _op_placement(op: dict[str, Any], on: bool, tensors: dict[int, dict[str, Any]]) -> OpPlacement:
    outs = [tensors.get(int(t), {}) for t in op["outputs"]]
    name = f"#{op['index']} {outs[0].get('name', '?') if outs else '?'}"
    out_elems = sum(int(np.prod(t.get("shape", [0]))) for t in outs)
    shapes = [tuple(int(d) for d in tensors.get(int(t), {}).get("shape", ())) for t in op["inputs"] if t >= 0]
    flops = FLOPS.get(op["op_name"], lambda n, _: float(n))(out_elems, shapes)
    if on:
        return OpPlacement(op["op_name"], name, Where.ON, flops=flops)
    rule = explain(op["op_name"], op["result_types"])
    return OpPlacement(op["op_name"], name, Where.OFF, f"{rule.reason} ({rule.source})", rule.fix, flops)


def xnnpack_placement(path: Path) -> Placement:
    """Which ops of ``path``'s main graph the XNNPACK delegate takes in the LiteRT interpreter, observed."""
    interp_mod = require("ai_edge_litert.interpreter", "tflite")
    try:
        with quiet():
            interpreter = interp_mod.Interpreter(model_path=str(path), num_threads=1)
            interpreter.allocate_tensors()  # applies the default XNNPACK delegate
    except (ValueError, RuntimeError) as exc:
        return Placement("xnnpack", "XNNPACK delegate", not_run=f"the LiteRT interpreter cannot load "
                                                               f"{path.name}: {first_line(exc, 200)}")
    ops = ops_details(interpreter)
    taken, partitions = _delegated(ops)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    placed = [_op_placement(op, op["index"] in taken, tensors) for op in ops if op["op_name"] != "DELEGATE"]
    rest = "; the rest run on LiteRT's reference CPU kernels" if len(taken) < len(placed) else ""
    report = Placement("xnnpack", "XNNPACK delegate (LiteRT interpreter partitions)", placed,
                       notes=[f"{len(taken)} of {len(placed)} nodes in {partitions} XNNPACK partition(s){rest}"])
    if interpreter.num_subgraphs() > 1 and len(interpreter.get_signature_list()) > 1:
        report.notes.append("only the first signature's graph (subgraph 0) is reported: the interpreter exposes "
                            "the nodes of that one")
    report.notes.append(_compiled_model_check(path, report.coverage == 1.0))
    return report


def _compiled_model_check(path: Path, full: bool) -> str:
    """What LiteRT's CompiledModel (CPU accelerator) says about full acceleration, against the walk."""
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator

        with quiet():  # LiteRT logs each accelerator it registers, and again when the environment goes
            model = CompiledModel.from_file(str(path), hardware_accel=HardwareAccelerator.CPU)
            fully, environment = model.is_fully_accelerated(), model.environment
            model.close()
            environment.close()
            del model, environment
    except Exception as exc:  # noqa: BLE001 - a cross-check only; the walk above is the answer
        return f"LiteRT CompiledModel cross-check not run: {first_line(exc, 160)}"
    agree = "agrees" if fully == full else "DISAGREES with the partition walk"
    return f"LiteRT CompiledModel (CPU) is_fully_accelerated() = {fully}: {agree}"


def gpu_placement(path: Path) -> Placement:
    """Not measurable here: the analyzer that ships with ai_edge_litert no longer checks GPU ops."""
    return Placement("gpu", "GPU analyzer", not_run=(
        "ai_edge_litert's model analyzer no longer checks GPU-delegate compatibility (it reports every model "
        f"compatible; {ANALYZER_SOURCE}) and no GPU runs here; " + PHONE_HINT.format(delegate="gpu")))


def npu_placement(path: Path) -> Placement:
    """Not measurable here: a phone's NPU delegate reports its coverage in ``benchmark_model``'s log."""
    return Placement("npu", "QNN delegate log", not_run=PHONE_HINT.format(delegate="qnn"))


ANALYZERS: Registry[Callable[[Path], Placement]] = Registry("LiteRT accelerator")
ANALYZERS.register("xnnpack")(xnnpack_placement)
ANALYZERS.register("gpu")(gpu_placement)
ANALYZERS.register("npu")(npu_placement)


def tflite_placement(path: Path, accelerator: str) -> Placement:
    """``TFLiteConverter.placement``: the analyzer registered for ``accelerator``."""
    if not Path(path).is_file():
        raise EdgekitError(f"{path} is not a .tflite file; placement reads a written LiteRT model")
    return ANALYZERS.get(accelerator)(Path(path))
