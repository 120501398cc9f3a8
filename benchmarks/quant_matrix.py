"""Does int8 keep accuracy on every model family? Quantization method × calibration method × format, per model.

    python benchmarks/quant_matrix.py CKPT_OR_NAME [...] [--methods fp32,int8,int8-weight,...]
        [--calib-methods histogram,minmax,nncf,nncf-smoothquant,nncf-bias-correction] [--calib-samples 128]
        [--formats onnx,tflite,coreml] [--no-latency] [--runs 100] [--lm-windows N]
        [--out benchmarks/results/quant_matrix.json]
    python benchmarks/quant_matrix.py --model mobilenet224      # helper H2's int8 speed run (int8_speed.py)

A model is an edgekit checkpoint folder or a bundled recipe's name (its ``runs/<name>/checkpoint``). Static
``int8`` is converted once per calibration method; other methods once. Per artifact: edgekit's own
verification status (of the graph measured, and of the model's other graphs: a sequence model's step), size,
the model's metric on the graph it needs, its change against PyTorch fp32 and the SQNR (dB) of the first
output against PyTorch fp32 on the same inputs:

- classifiers: top-1 accuracy on the recipe's test split, drop in points (goal ≤ 1.0); image models also on
  a noisy+shifted copy (shown, not a goal);
- byte LMs: bits per byte of next-byte predictions over the test text in windows of the prefill length,
  relative increase in % (goal ≤ 3%).

fp32 is each format's baseline row. Quantized artifacts are converted with a tolerance that keeps them
unless their output is NaN/inf or below 0 dB SNR (``KEEP``), so that a failing one is measured too; their
status is then ``Bundle.verify()``'s, at the precision's default tolerance (a manifest's overrides never
apply there). An artifact without a file gets the accuracy and SQNR its verification measured (marked ``*``).
Core ML runs by the MIL reference evaluator (no latency on Linux). Latency (optional, ``--no-latency`` skips
it) is timed round-robin over every runnable artifact of the measured graph and PyTorch eager
(``edgekit.time_interleaved``), so load on a shared machine reaches all alike.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).parent))
from quant_metrics import (METRICS, EvalSet, eval_sets, first_outputs, sqnr_db,  # noqa: E402
                           torch_first_outputs)

import edgekit  # noqa: E402

METHODS = "fp32,int8,int8-dynamic,int8-weight,int4-weight,palettize4"
CALIB_METHODS = "histogram"
# kept for measurement: judge every output by SNR ≥ 0 dB only (NaN/inf still fail, no file is then left)
KEEP = ["kind=values,snr=0"]
SPEED_MODELS = {"mobilenet224": "int8_speed"}  # --model name → benchmarks/<module>.py with run(args) -> dict


def resolve(name: str, runs: Path) -> Path:
    """A checkpoint folder as given, or a bundled recipe's ``runs/<name>/checkpoint``."""
    path = Path(name)
    if path.exists():
        return path
    recipes = edgekit.bundled_recipes()
    if name not in recipes:
        raise edgekit.EdgekitError(f"{name}: no such checkpoint folder nor bundled recipe; "
                                   f"recipes: {', '.join(recipes)}")
    if (runs / name / "checkpoint").exists():
        return runs / name / "checkpoint"
    raise edgekit.EdgekitError(f"{name}: no checkpoint at {runs / name / 'checkpoint'}; "
                               f"train it with `edgekit run {name}` or pass its checkpoint folder")


def conversions(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(method, calibration method or None) to convert: static int8 once per calibration method."""
    calibs = args.calib_methods.split(",")
    return [(m, c) for m in args.methods.split(",") for c in (calibs if m == "int8" else [None])]


def label(row: dict) -> str:
    return f"{row['method']} {row['calib']}" if row.get("calib") else row["method"]


class Model:
    """One checkpoint: its measured graph, evaluation sets and PyTorch fp32's outputs and scores on them."""

    def __init__(self, checkpoint: Path, args: argparse.Namespace) -> None:
        self.checkpoint = checkpoint
        graph = edgekit.load(checkpoint).export_graphs()[0]  # the only graph, or the first prefill
        self.graph, self.module = graph.name, graph.module
        self.sets = eval_sets(checkpoint, graph.name, graph.example_inputs[0].shape[-1], args.lm_windows)
        self.metric = METRICS[self.sets[0].metric]
        self.torch_outputs = [torch_first_outputs(self.module, s.inputs) for s in self.sets]
        self.pytorch = {"values": [self.metric.score(o, s.labels) for o, s in zip(self.torch_outputs, self.sets)]}

    def score(self, run: Callable, row: dict) -> None:
        """Metric on every set, change against PyTorch, SQNR on the main set, goal."""
        values, sqnr = [], None
        for k, (s, ref) in enumerate(zip(self.sets, self.torch_outputs)):
            outs = first_outputs(run, s.inputs)
            values.append(self.metric.score(outs, s.labels))
            sqnr = sqnr_db(ref, outs) if k == 0 else sqnr
        self.record(row, values, sqnr)

    def record(self, row: dict, values: list[float | None], sqnr: float | None) -> None:
        base = self.pytorch["values"]
        row["values"] = values
        row["changes"] = [None if v is None else self.metric.change(v, b) for v, b in zip(values, base)]
        row["sqnr_db"] = sqnr
        row["goal_met"] = None if row["changes"][0] is None else row["changes"][0] <= self.metric.limit

    def from_verification(self, entry: dict, row: dict) -> None:
        """A failed artifact (no file): accuracy and SQNR as its verification measured them."""
        v = entry.get("verification") or {}
        first = (v.get("outputs") or [{}])[0]
        same = self.sets[0].metric == "accuracy" and v.get("accuracy") is not None
        self.record(row, [v["accuracy"] if same else None] + [None] * (len(self.sets) - 1), first.get("snr_db"))
        row["measured"] = f"verification ({v.get('inputs')} inputs)"


def convert_rows(model: Model, method: str, calib: str | None, args: argparse.Namespace, out: Path,
                 runners: dict[Any, Callable[[], object]]) -> list[dict]:
    """Convert with one method to every format that supports it; one scored row per format."""
    head = {"method": method, "calib": calib}
    try:
        calibration = {"calib_method": calib} if calib else {}
        spec = edgekit.QuantSpec.parse(method, calib_samples=args.calib_samples, **calibration)
    except edgekit.EdgekitError as exc:
        return [{**head, "format": "—", "status": "not available", "error": str(exc)}]
    formats = [f for f in args.formats.split(",") if spec.scheme in edgekit.CONVERTERS.get(f).quant_methods]
    if not formats:
        return []
    try:  # quantized artifacts are kept even when they fail (to be measured); verify() then judges them
        bundle = edgekit.convert(model.checkpoint, to=formats, quant=spec, out=out, threads=args.threads,
                                 tolerance=KEEP if spec.quantizes else None)
        verdicts = strict_verdicts(bundle) if spec.quantizes else {}
    except Exception as exc:  # one method's crash (e.g. a calibration algorithm) must not end the matrix
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return [{**head, "format": f, "status": "failed", "error": error} for f in formats]
    rows = []
    for fmt in formats:
        entries = [a for a in bundle.artifacts if a["format"] == fmt and a["precision"] == spec.tag]
        for a in entries:
            a["status"], a["error"] = verdicts.get(a["file"], (a["status"], a["error"]))
        entry = next(a for a in entries if a.get("graph", "") == model.graph)
        rows.append(score_entry(model, bundle, entry, entries, {**head, "format": fmt}, args, runners))
    return rows


def strict_verdicts(bundle: Any) -> dict[str, tuple[str, str | None]]:
    """file → (status, error) from ``Bundle.verify()``: edgekit's own parity check at the precision's default
    tolerance (it never applies the overrides a manifest records, so KEEP does not loosen it)."""
    verdicts = {}
    for result in bundle.verify().results:
        v = result.get("verification") or {}
        status = {"passed": "verified"}.get(v.get("status"), v.get("status") or result["status"])
        failures = [f"{o['name']}: {'; '.join(o['failures'])}" for o in v.get("outputs", []) if o.get("failures")]
        if result["file"]:
            verdicts[result["file"]] = (status, "; ".join(failures) or (None if v else result.get("reason")))
    return verdicts


def score_entry(model: Model, bundle: Any, entry: dict, entries: list[dict], row: dict, args: argparse.Namespace,
                runners: dict[Any, Callable[[], object]]) -> dict:
    """Status, size, metric, change, SQNR (and a runner for latency) of one artifact of the measured graph."""
    row |= {"graph": model.graph, "status": entry["status"], "size_bytes": entry["size_bytes"], "error": entry["error"],
            "other_graphs": {a.get("graph") or a["file"]: a["status"] for a in entries if a is not entry},
            "other_errors": {a.get("graph") or a["file"]: a["error"] for a in entries if a is not entry and a["error"]}}
    if not entry["file"]:
        model.from_verification(entry, row)
        return row
    run = bundle.runner(entry["file"], args.threads)
    if isinstance(run, edgekit.RunnerUnavailable):  # Core ML on Linux: the MIL reference, no latency
        run = edgekit.CONVERTERS.get(row["format"]).reference_runner(bundle.path / entry["file"])
        row["measured"] = "mil-reference"
    elif not args.no_latency:
        first = list(model.sets[0].inputs[0])
        runners[(label(row), row["format"])] = lambda run=run, first=first: run(first)
    if run is not None:
        model.score(run, row)
    return row


def add_latency(rows: list[dict], runners: dict[Any, Callable[[], object]], model: Model,
                args: argparse.Namespace) -> None:
    """Median latency of every runnable artifact and of PyTorch eager, timed round-robin, and the ratios."""
    x = tuple(torch.from_numpy(v) for v in model.sets[0].inputs[0])
    with torch.inference_mode():
        stats = edgekit.time_interleaved({**runners, "pytorch": lambda: model.module(*x)}, warmup=args.runs // 5,
                                         runs=args.runs, threads=args.threads)
    model.pytorch["median_ms"] = torch_ms = stats["pytorch"].median_ms
    for r in rows:
        found = stats.get((label(r), r["format"]))
        r["median_ms"] = found.median_ms if found else None
    base = {r["format"]: r for r in rows if r["method"] == "fp32"}
    for r in rows:
        fp32_ms, ms = base.get(r["format"], {}).get("median_ms"), r.get("median_ms")
        r["speedup_vs_fp32"] = fp32_ms / ms if ms and fp32_ms else None
        r["speedup_vs_pytorch"] = torch_ms / ms if ms else None


def measure(checkpoint: Path, args: argparse.Namespace) -> dict:
    """Every conversion of one checkpoint, scored; the model's JSON entry."""
    model = Model(checkpoint, args)
    rows: list[dict] = []
    runners: dict[Any, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, calib in conversions(args):
            start = time.perf_counter()
            done = convert_rows(model, method, calib, args, Path(tmp) / f"{method}_{calib}", runners)
            for r in done:
                r["seconds"] = round(time.perf_counter() - start, 1)  # convert + verify + score, all formats
            print(f"  {checkpoint}: {method} {calib or ''}: {time.perf_counter() - start:.0f} s", flush=True)
            rows += done
        if runners:
            add_latency(rows, runners, model, args)
    sizes = {r["format"]: r.get("size_bytes") for r in rows if r["method"] == "fp32"}
    for r in rows:
        fp32 = sizes.get(r["format"])
        r["size_vs_fp32"] = r["size_bytes"] / fp32 if r.get("size_bytes") and fp32 else None
    return {"checkpoint": str(checkpoint), "name": Path(checkpoint).resolve().parent.name, "graph": model.graph,
            "metric": model.sets[0].metric, "goal": model.metric.goal,
            "eval_sets": [s.description for s in model.sets], "set_names": [s.name for s in model.sets],
            "pytorch": model.pytorch, "rows": rows}


def _f(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def print_model(result: dict) -> None:
    """A table per model: one row per artifact of the measured graph."""
    metric, sets = METRICS[result["metric"]], result["eval_sets"]
    torch_ms = result["pytorch"].get("median_ms")
    print(f"\n== {result['name']} · graph {result['graph'] or '(only)'} · {result['metric']} on "
          f"{'; '.join(sets)} · goal {result['goal']}")
    print("pytorch fp32: " + ", ".join(f"{name} {_f(v, metric.value_format)}"
                                       for name, v in zip(result["set_names"], result["pytorch"]["values"]))
          + (f", median {torch_ms:.3f} ms" if torch_ms else ""))
    extra = "".join(f"{name:>10}{metric.change_name:>8}" for name in result["set_names"][1:])
    print(f"{'method':<26}{'format':<8}{'status':<10}{'size':>10}{'×fp32':>6}{result['metric'][:9]:>10}"
          f"{metric.change_name:>8}{extra}{'SQNR dB':>8}{'goal':>5}{'ms':>8}{'×fp32':>6}  other graphs")
    for r in result["rows"]:
        values, changes = r.get("values") or [None] * len(sets), r.get("changes") or [None] * len(sets)
        mark = "*" if str(r.get("measured", "")).startswith("verification") else " "
        cells = "".join(f"{_f(v, metric.value_format):>9}{mark}{_f(c, '+.2f'):>8}" for v, c in zip(values, changes))
        goal = {True: "✓", False: "✗", None: "—"}[r.get("goal_met")]
        others = ", ".join(f"{g}: {s}" for g, s in r.get("other_graphs", {}).items())
        print(f"{label(r):<26}{r['format']:<8}{str(r['status'])[:9]:<10}{_f(r.get('size_bytes'), ',d'):>10}"
              f"{_f(r.get('size_vs_fp32'), '.2f'):>6}{cells}{_f(r.get('sqnr_db'), '.1f'):>8}{goal:>5}"
              f"{_f(r.get('median_ms'), '.3f'):>8}{_f(r.get('speedup_vs_fp32'), '.2f'):>6}  {others}"
              + (f"  [{r['error'][:160]}]" if r.get("error") else ""))


def speed_run(name: str, args: argparse.Namespace) -> dict | None:
    """``--model mobilenet224``: helper H2's speed run in benchmarks/int8_speed.py, imported only now."""
    module = SPEED_MODELS[name]
    if not (Path(__file__).parent / f"{module}.py").exists():
        print(f"--model {name}: benchmarks/{module}.py is missing (the int8 speed run); nothing run")
        return None
    speed = importlib.import_module(module)
    if not hasattr(speed, "run"):
        raise edgekit.EdgekitError(f"benchmarks/{module}.py has no run(args) function; cannot run --model {name}")
    argv = ["--model", name, "--threads", str(args.threads), "--runs", str(args.runs)]
    return speed.run(speed.parse_args(argv) if hasattr(speed, "parse_args") else args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="checkpoint folders or bundled recipe names")
    parser.add_argument("--model", action="append", default=[], help="a model by name; mobilenet224: the speed run")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--calib-methods", default=CALIB_METHODS, help="for int8: QuantSpec.calib_method values")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--formats", default="onnx,tflite,coreml")
    parser.add_argument("--no-latency", action="store_true", help="accuracy only: skip the timed runs")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lm-windows", type=int, default=None, help="at most this many test windows per byte LM")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where named recipes were trained")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quant_matrix.json"))
    args = parser.parse_args()
    if not args.models and not args.model:
        parser.error("give at least one checkpoint or --model NAME")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    names = [*args.models, *(m for m in args.model if m not in SPEED_MODELS)]
    try:
        checkpoints = [resolve(n, args.runs_dir) for n in names]  # all checked before any work
    except edgekit.EdgekitError as exc:
        sys.exit(f"error: {exc}")
    result: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "settings": {k: str(v) for k, v in vars(args).items()}, "models": []}
    for checkpoint in checkpoints:
        result["models"].append(measure(checkpoint, args))
        print_model(result["models"][-1])
    for name in (m for m in args.model if m in SPEED_MODELS):
        result.setdefault("speed", {})[name] = speed_run(name, args)
    if result["models"]:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
