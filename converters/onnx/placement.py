"""Which ONNX Runtime execution provider runs each node of an .onnx, from a profiled run.

ONNX Runtime assigns every node to the first provider in the session's list that claims it; the rest fall
back to the CPU EP. A session with profiling on records, per executed node, a ``cat: "Node"`` event whose
``args`` carry ``op_name`` and ``provider``
(https://onnxruntime.ai/docs/performance/tune-performance/profiling-tools.html).
Where the accelerator's EP is in the installed wheel, a session with ``session.disable_cpu_ep_fallback=1``
(https://onnxruntime.ai/docs/api/c/group___global.html, key in onnxruntime_session_options_config_keys.h) is
also tried: it refuses to load when any node would fall back. Where it is not (the PyPI wheel for Linux x86
has CPU and Azure only), the report is not run and names the providers the wheel has; it still notes which
nodes the CPU EP ran in a profiled run here. Nodes are those ONNX Runtime runs after its graph optimizations
(fused nodes such as FusedGemm), named as it names them.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.onnx.session import session_config
from edgekit.errors import EdgekitError, first_line, require
from edgekit.placement import OpPlacement, Placement, Where
from edgekit.registry import Registry

CPU_EP = "CPUExecutionProvider"
NO_FALLBACK = "session.disable_cpu_ep_fallback"
SOURCE = "ORT profile"


@dataclass(frozen=True)
class Target:
    """The execution providers that run an accelerator, and where a user gets a build with one."""

    providers: tuple[str, ...]  # first one in the installed wheel wins
    get_it: str  # how to get an onnxruntime that has one of them
    source: str  # the provider's documentation
    note_cpu: bool = False  # also profile the CPU EP when none is present (the host's own answer)
    options: dict[str, dict[str, str]] = field(default_factory=dict)  # provider → provider options


TARGETS: Registry[Target] = Registry("ONNX Runtime accelerator")
TARGETS.register("xnnpack")(Target(
    ("XnnpackExecutionProvider",), "an onnxruntime built with --use_xnnpack (the onnxruntime-android package "
    "has it)", "https://onnxruntime.ai/docs/execution-providers/Xnnpack-ExecutionProvider.html", note_cpu=True))
TARGETS.register("npu")(Target(
    ("QNNExecutionProvider", "NnapiExecutionProvider"), "a phone's onnxruntime: onnxruntime-android (NNAPI) or "
    "the onnxruntime-qnn build with Qualcomm's QNN HTP libraries",
    "https://onnxruntime.ai/docs/execution-providers/QNN-ExecutionProvider.html, "
    "https://onnxruntime.ai/docs/execution-providers/NNAPI-ExecutionProvider.html",
    options={"QNNExecutionProvider": {"backend_type": "htp"}}))

# ONNX Runtime's input type strings → the numpy dtype of a zero input for the profiled run
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class NodeRun:
    """One node as a profiled run executed it."""

    name: str
    op: str
    provider: str


def profile_nodes(path: Path, providers: list[str], options: dict[str, dict[str, str]] | None = None,
                  config: dict[str, str] | None = None) -> list[NodeRun]:
    """Run ``path`` once on zeros (dynamic dimensions 1) in a profiling session; the nodes in execution order.
    The profile file goes to a temporary folder that is removed."""
    ort = require("onnxruntime", "onnx")
    with tempfile.TemporaryDirectory(prefix="edgekit-ort-profile-") as tmp:
        session = _session(ort, path, providers, options, config, Path(tmp) / "profile")
        session.run(None, {i.name: _zeros(i) for i in session.get_inputs()})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                   key=lambda e: e.get("ts", 0))
    return [NodeRun(e["name"].removesuffix("_kernel_time"), e["args"].get("op_name", "?"),
                    e["args"].get("provider", "?")) for e in nodes]


def _session(ort: Any, path: Path, providers: list[str], options: dict[str, dict[str, str]] | None,
             config: dict[str, str] | None, profile: Path | None = None) -> Any:
    so = ort.SessionOptions()
    so.log_severity_level, so.intra_op_num_threads, so.inter_op_num_threads = 3, 1, 1
    if profile is not None:
        so.enable_profiling, so.profile_file_prefix = True, str(profile)
    for key, value in {**session_config(path), **(config or {})}.items():
        so.add_session_config_entry(key, value)
    provider_options = [(options or {}).get(p, {}) for p in providers]
    return ort.InferenceSession(str(path), so, providers=providers, provider_options=provider_options)


def _zeros(arg: Any) -> np.ndarray:
    if arg.type not in ORT_TYPES:
        raise EdgekitError(f"input {arg.name!r} has type {arg.type}; profiling feeds {', '.join(ORT_TYPES)}")
    return np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in arg.shape], ORT_TYPES[arg.type])


def ep_placement(path: Path, accelerator: str, provider: str, target: Target) -> Placement:
    """Per node, whether ``provider`` ran it (measured): the strict no-fallback session, then a profiled run
    with the CPU EP behind it."""
    ort = require("onnxruntime", "onnx")
    notes = []
    if provider != CPU_EP:  # the CPU EP itself cannot be asked to refuse falling back to itself
        try:
            _session(ort, path, [provider], target.options, {NO_FALLBACK: "1"})
            notes.append(f"{NO_FALLBACK}=1: the session loads on {provider} alone (no node falls back)")
        except Exception as exc:  # noqa: BLE001 - the refusal is the finding
            notes.append(f"{NO_FALLBACK}=1: ONNX Runtime refused the session: {first_line(exc, 200)}")
    runs = profile_nodes(path, list(dict.fromkeys([provider, CPU_EP])), target.options)
    ops = [OpPlacement(r.op, r.name, Where.ON) if r.provider == provider else
           OpPlacement(r.op, r.name, Where.OFF, f"{provider} did not claim it; {r.provider} ran it ({target.source})",
                       f"replace {r.op} by ops {provider} supports (see its documentation), or accept the fallback")
           for r in runs]
    return Placement(accelerator, SOURCE, ops, notes=notes)


def cpu_note(path: Path) -> str:
    """One line: which nodes the CPU EP ran when the model was profiled here."""
    try:
        runs = profile_nodes(path, [CPU_EP])
    except Exception as exc:  # noqa: BLE001 - a note; the report stands without it
        return f"profiling on {CPU_EP} failed: {first_line(exc, 200)}"
    cpu = [r for r in runs if r.provider == CPU_EP]
    kinds = ", ".join(f"{op} ×{n}" for op, n in Counter(r.op for r in cpu).most_common())
    return f"profiled here: {CPU_EP} ran {len(cpu)} of {len(runs)} nodes ({kinds})"


def onnx_placement(path: Path, accelerator: str) -> Placement:
    """``OnnxConverter.placement``: measured where the wheel has the accelerator's EP, else not run with why."""
    ort = require("onnxruntime", "onnx")
    if not Path(path).is_file():
        raise EdgekitError(f"{path} is not an .onnx file; placement reads a written ONNX model")
    target = TARGETS.get(accelerator)
    available = ort.get_available_providers()
    present = [p for p in target.providers if p in available]
    if present:
        return ep_placement(Path(path), accelerator, present[0], target)
    report = Placement(accelerator, SOURCE, not_run=(
        f"onnxruntime {ort.__version__} here has {', '.join(available)}; {accelerator} needs "
        f"{' or '.join(target.providers)}: {target.get_it}"))
    if target.note_cpu:
        report.notes.append(cpu_note(Path(path)))
    return report
