"""Parse the text that LiteRT/TFLite ``benchmark_model`` prints into a plain dict.

Handles the current ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …,
Inference (avg): …`` summary and the older ``Average inference timings in us: Warmup: …, Init: …,
no stats: …``; the ``count=… first=… curr=… min=… max=… avg=… std=… [p5=… median=… p95=…]``
lines (also ``count=N curr=X`` when all runs took the same time); numbers in scientific notation;
memory lines; delegate coverage (``Replacing N out of M node(s) with delegate (…)``,
``… delegate: N nodes delegated out of M nodes``, ``Explicitly applied … delegate …`` and
``Though … delegate is explicitly applied, the model graph will not be executed by the delegate``).
Log prefixes (``INFO:``, logcat timestamps) are ignored. All times are microseconds.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from edgekit.placement import OpPlacement, Placement, Where

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf"
_PAIR = re.compile(rf"(\w+)=({NUM})")
_RUNNING = re.compile(r"Running benchmark for at least (\d+) iterations")
_TIMINGS = re.compile(r"(?<!Average )Inference timings in us:(.*)$")
_OLD_TIMINGS = re.compile(r"Average inference timings in us:(.*)$")
_TIMING_KEYS = {"Init": "init", "First inference": "first_inference", "Warmup (avg)": "warmup_avg",
                "Inference (avg)": "inference_avg", "Warmup": "warmup_avg"}
_MEMORY = [
    (re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init=({NUM}) overall=({NUM})"),
     ("delta_init", "delta_overall")),
    (re.compile(rf"Peak memory footprint \(MB\): init=({NUM}) overall=({NUM})"), ("peak_init", "peak_overall")),
    (re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({NUM})"), ("peak_monitored",)),
]


def _num(text: str) -> float:
    return float(text)


def parse_stat(line: str) -> dict[str, float]:
    """``count=50 first=… curr=… min=… max=… avg=… std=… p5=… median=… p95=…`` as a dict.

    ``count=N curr=X`` (printed when every run took the same time) yields min = max = avg = X, std = 0.
    """
    stat: dict[str, float] = {k: _num(v) for k, v in _PAIR.findall(line[line.index("count="):])}
    stat["count"] = int(stat.get("count", 0))
    if stat["count"] and "min" not in stat and "curr" in stat:
        stat.update(min=stat["curr"], max=stat["curr"], avg=stat["curr"], std=0.0, all_same=True)
    return stat


def _stat_blocks(lines: list[str]) -> list[dict[str, Any]]:
    """The stat line after each ``Running benchmark for at least N iterations`` line."""
    blocks: list[dict[str, Any]] = []
    waiting: int | None = None
    for line in lines:
        running = _RUNNING.search(line)
        if running:
            waiting = int(running.group(1))
        elif waiting is not None and "count=" in line:
            blocks.append({"min_iterations": waiting, **parse_stat(line)})
            waiting = None
        elif _TIMINGS.search(line) or _OLD_TIMINGS.search(line):
            waiting = None
    return blocks


def _timings(lines: list[str]) -> tuple[str | None, dict[str, float]]:
    for line in lines:
        new, old = _TIMINGS.search(line), _OLD_TIMINGS.search(line)
        match = new or old
        if not match:
            continue
        values = {}
        for part in match.group(1).split(","):
            label, _, value = part.strip().rpartition(":")
            if label and re.fullmatch(NUM, value.strip()):
                values[_TIMING_KEYS.get(label.strip(), "inference_avg")] = _num(value.strip())
        return ("inference_timings" if new else "average_inference_timings"), values
    return None, {}


def _memory(text: str) -> dict[str, float]:
    out = {}
    for pattern, names in _MEMORY:
        match = pattern.search(text)
        if match:
            out.update({f"{name}_mb": _num(v) for name, v in zip(names, match.groups())})
    return out


# Delegate lines: (pattern, builder of a record from the match). One list, one loop.
_DELEGATE_LINES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], dict[str, Any]]]] = [
    (re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\)(?: node, yielding (\d+) "
                r"partitions(?: for subgraph (\d+))?)?"),
     lambda m: {"delegate": m[3], "delegated_nodes": int(m[1]), "total_nodes": int(m[2]),
                "partitions": int(m[4]) if m[4] else None, "subgraph": int(m[5]) if m[5] else None}),
    (re.compile(r"Replacing (\d+) node\(s\) with delegate \(([^)]+)\) node, yielding (\d+) partitions"),
     lambda m: {"delegate": m[2], "delegated_nodes": int(m[1]), "total_nodes": None, "partitions": int(m[3]),
                "subgraph": None}),
    (re.compile(r"(\w+) delegate: (\d+) nodes delegated out of (\d+) nodes(?: with (\d+) partitions)?"),
     lambda m: {"delegate": m[1], "delegated_nodes": int(m[2]), "total_nodes": int(m[3]),
                "partitions": int(m[4]) if m[4] else None, "subgraph": None}),
]
_APPLICATION_LINES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], dict[str, Any]]]] = [
    (re.compile(r"Explicitly applied (\w+) delegate, and the model graph will be completely executed"),
     lambda m: {"delegate": m[1], "execution": "complete", "delegate_kernels": None}),
    (re.compile(r"Explicitly applied (\w+) delegate, and the model graph will be partially executed by the "
                r"delegate w/ (\d+) delegate kernels"),
     lambda m: {"delegate": m[1], "execution": "partial", "delegate_kernels": int(m[2])}),
    (re.compile(r"Though (\w+) delegate is explicitly applied, the model graph will not be executed"),
     lambda m: {"delegate": m[1], "execution": "none", "delegate_kernels": 0}),
]
_ERROR = re.compile(r"\bERROR\b|\bFailed to\b|\bfailed to\b|Aborted|Segmentation fault")


def _records(lines: list[str], table) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        for pattern, build in table:
            match = pattern.search(line)
            if match:
                out.append(build(match))
                break
    return out


def parse_benchmark_log(text: str) -> dict[str, Any]:
    """Everything ``benchmark_model`` reported, as plain JSON-ready data (times in microseconds)."""
    lines = text.splitlines()
    blocks = _stat_blocks(lines)
    fmt, timings = _timings(lines)
    return {
        "timings_format": fmt,
        "timings_us": timings,
        "warmup": blocks[0] if blocks else None,
        "inference": blocks[1] if len(blocks) > 1 else None,
        "memory": _memory(text),
        "delegates": _records(lines, _DELEGATE_LINES),
        "delegate_application": _records(lines, _APPLICATION_LINES),
        "errors": [line.strip() for line in lines if _ERROR.search(line)][:20],
        "op_profile": op_profile_rows(lines),
        "complete": fmt is not None,
    }


_PROFILE_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_RUN_ORDER_ROW = re.compile(rf"^\s*(?:INFO:\s+)?(\S+)\s+(?:(?:{NUM})%?\s+){{7}}(.+?)\s*$")


def op_profile_rows(lines: list[str]) -> list[dict[str, str]]:
    """The "Run Order" table of ``--enable_op_profiling=true`` for the regular runs: one ``{"type", "name"}``
    per executed node, in order. A delegate's partition is one row named after the delegate
    (``TfLiteXNNPackDelegate``, ``TfLiteQnnDelegate``, ...); every other row is an op the CPU ran."""
    rows: list[dict[str, str]] = []
    state = "before"  # → "section" → "table" (after the column header) → "done"
    for line in lines:
        if state == "before" and _PROFILE_SECTION in line:
            state = "section"
        elif state == "section" and "[node type]" in line:
            state = "table"
        elif state == "table":
            match = _RUN_ORDER_ROW.match(line)
            if not match:
                break
            rows.append({"type": match[1], "name": match[2]})
    return rows


def _matches(name: str, names: Sequence[str]) -> bool:
    return any(n.lower() in name.lower() for n in names)


def delegate_coverage(parsed: dict[str, Any], names: Sequence[str]) -> dict[str, Any] | None:
    """How much of the graph the delegate called any of ``names`` took, or None if the log is silent.

    ``percent`` is None when only "partially executed" is known (no node counts).
    """
    counts = [d for d in parsed["delegates"] if _matches(d["delegate"], names) and d["total_nodes"]]
    applied = [a for a in parsed["delegate_application"] if _matches(a["delegate"], names)]
    execution = applied[-1]["execution"] if applied else None
    if counts:
        done, total = sum(d["delegated_nodes"] for d in counts), sum(d["total_nodes"] for d in counts)
        return {"delegate": counts[0]["delegate"], "delegated_nodes": done, "total_nodes": total,
                "percent": round(100.0 * done / total, 2), "execution": execution or _execution(done, total)}
    if applied:
        percent = {"complete": 100.0, "none": 0.0}.get(execution)
        return {"delegate": applied[-1]["delegate"], "delegated_nodes": None, "total_nodes": None,
                "percent": percent, "execution": execution, "delegate_kernels": applied[-1]["delegate_kernels"]}
    return None


def _execution(done: int, total: int) -> str:
    return "none" if done == 0 else "complete" if done == total else "partial"


def delegate_placement(parsed: dict[str, Any], names: Sequence[str], accelerator: str, source: str,
                       fix: str = "") -> Placement:
    """The coverage of the delegate called any of ``names`` as a ``Placement`` on ``accelerator``.

    The log counts nodes (``Replacing N out of M``) and partitions, but does not say which node went where:
    the report has N ON and M-N OFF entries arranged in as many islands as the log's partitions. The OFF
    entries are named after the CPU rows of the op-profiling table when the run had
    ``--enable_op_profiling=true``; otherwise they are unnamed. A log with no counts gives a whole-graph
    answer ("completely executed" / "not executed") or, for "partially executed", not run."""
    cov = delegate_coverage(parsed, names)
    if cov is None:
        return Placement(accelerator, source, not_run="the log does not say how much of the graph the delegate took")
    label = cov["delegate"]
    if cov["total_nodes"] is None:
        where = {"complete": Where.ON, "none": Where.OFF}.get(cov["execution"])
        if where is None:
            return Placement(accelerator, source, not_run=f"the log says {label} ran part of the graph "
                                                          f"({cov.get('delegate_kernels')} delegate kernels) but "
                                                          "gives no node counts")
        op = OpPlacement(label, "(whole graph)", where, "" if where == Where.ON else f"{label} took no node", fix)
        said = {"complete": "completely executed", "none": "not executed"}[cov["execution"]]
        return Placement(accelerator, source, [op], notes=[f"the log says the graph is {said} by {label}; it "
                                                           "gives no node counts"])
    done, off = cov["delegated_nodes"], cov["total_nodes"] - cov["delegated_nodes"]
    cpu_rows = [r for r in parsed.get("op_profile", []) if not _matches(r["type"], [*names, "delegate"])]
    reason = f"{label} did not take it: it ran on the CPU ({source})"
    offs = [OpPlacement(r["type"], r["name"], Where.OFF, reason, fix) for r in cpu_rows[:off]]
    offs += [OpPlacement("(not named in the log)", f"cpu node {i + 1}", Where.OFF, reason, fix)
             for i in range(len(offs), off)]
    partitions = _partitions(parsed, names) or (1 if done else 0)
    ops = _islands([OpPlacement(label, f"{label} node {i + 1}", Where.ON) for i in range(done)], offs, partitions)
    named = "named from the op-profiling table" if cpu_rows else "unnamed (run with --enable_op_profiling=true)"
    return Placement(accelerator, source, ops, notes=[
        f"{label}: {done} of {done + off} nodes in {partitions} partition(s), from the log's counts; which node "
        f"went where is not in the log (order reconstructed); CPU nodes {named}"])


def _partitions(parsed: dict[str, Any], names: Sequence[str]) -> int | None:
    counts = [d["partitions"] for d in parsed["delegates"] if _matches(d["delegate"], names) and d["total_nodes"]]
    return sum(counts) if counts and None not in counts else None


def _islands(on: list[OpPlacement], off: list[OpPlacement], islands: int) -> list[OpPlacement]:
    """``on`` split into ``islands`` runs separated by ``off`` entries (the rest of ``off`` at the end)."""
    islands = max(1, min(islands, len(on), len(off) + 1)) if on else 0
    if not islands:
        return off
    size, extra = divmod(len(on), islands)
    ops, start = [], 0
    for k in range(islands):
        end = start + size + (k < extra)
        ops += on[start:end] + off[k:k + 1] * (k < islands - 1)
        start = end
    return ops + off[islands - 1:]
