"""Sequence-length scaling: SSM (Mamba-2 SSD) vs Transformer of equal width and depth, ORT and LiteRT.

    python benchmarks/seq_scaling.py [--lengths 256,1024,4096,16384] [--contexts 128,1024,4096,16384]
        [--d-model 128 --layers 4] [--runs 10] [--out benchmarks/results/seq_scaling.json]

For each family: the prefill graph at every static L (latency vs L) and the one-token step graph at
every context length (latency vs context; the Transformer's KV cache has that many slots, the SSM's
state does not grow). Random weights: latency does not depend on them. Each graph is exported with
the real converters and checked against PyTorch before it is timed. Writes JSON and a PNG plot, and
prints the issue's goals: t(4096)/t(1024) of the SSM, its step spread over contexts, and the SSM's
speed-up over the Transformer at L=4096.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

import edgekit

FORMATS = ("onnx", "tflite")
ATTENTION_BYTES_LIMIT = 2 * 2**30  # skip Transformer prefills whose attention scores need more than this
STEP_RUNS = 300  # a step takes ~0.1 ms: time many more calls than a prefill for a stable median
# config key that must hold the sequence length (the Transformer's KV cache has a fixed number of slots)
CONTEXT_KEY = {"transformer": "max_context"}


def default_configs(args: argparse.Namespace) -> dict[str, dict]:
    """Byte LMs of equal width and depth (the issue's d_model 128, 4 layers, d_state 16)."""
    common = {"head": "byte_lm", "d_model": args.d_model, "n_layers": args.layers}
    return {"ssm": common | {"d_state": 16, "head_dim": 32}, "transformer": common | {"n_heads": args.heads}}


def build(family: str, config: dict, length: int) -> torch.nn.Module:
    """A model of ``family`` with ``config``, ready for static length (or context) ``length``."""
    torch.manual_seed(0)
    sized = {"export_lengths": [length]} | ({CONTEXT_KEY[family]: length} if family in CONTEXT_KEY else {})
    return edgekit.create_model(family, **(config | sized)).eval()


def attention_bytes(config: dict, length: int) -> int:
    return 4 * config.get("n_heads", 1) * length * length  # fp32 scores of one layer


def sweep(configs: dict[str, dict], args: argparse.Namespace, memory: bool = False) -> list[dict]:
    """Prefill at every L in ``args.lengths`` and step at every context in ``args.contexts``, per family
    (``memory``: also the step artifacts' peak memory)."""
    rows = []
    for family, config in configs.items():
        for kind, points in (("prefill", args.lengths), ("step", args.contexts)):
            for n in points:
                row = {"family": family, "graph": kind, "length": n}
                if family in CONTEXT_KEY and kind == "prefill" and attention_bytes(config, n) > ATTENTION_BYTES_LIMIT:
                    row["skipped"] = f"attention scores need {attention_bytes(config, n) / 2**30:.1f} GiB per layer"
                else:
                    model = build(family, config, n)
                    row["params"] = sum(p.numel() for p in model.parameters())
                    runs = args.runs if kind == "prefill" else max(args.runs, STEP_RUNS)
                    row |= edgekit.bench_graph(model, kind, formats=FORMATS, threads=args.threads, warmup=5,
                                               runs=runs, memory=memory and kind == "step")
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    head = f"{row['family']:>11} {row['graph']:>7} {row['length']:>6}"
    if "skipped" in row:
        return f"{head}  skipped: {row['skipped']}"
    parts = [f"torch {row['pytorch']['median_ms']:9.3f}"]
    for fmt in FORMATS:
        r = row[fmt]
        parts.append(f"{fmt} " + (f"{r['median_ms']:9.3f} ms |Δ| {r['max_abs_diff']:.0e}" if "median_ms" in r
                                   else (r.get("error") or r["status"])[:80]))
    return f"{head}  " + "  ".join(parts)


def median(rows: list[dict], family: str, kind: str, n: int, fmt: str) -> float | None:
    for r in rows:
        if (r["family"], r["graph"], r["length"]) == (family, kind, n):
            return r.get(fmt, {}).get("median_ms")
    return None


def goals(rows: list[dict], args: argparse.Namespace) -> dict:
    """The issue's three goals, per runtime (None where a point is missing)."""
    out = {}
    for fmt in FORMATS:
        t1k, t4k = median(rows, "ssm", "prefill", 1024, fmt), median(rows, "ssm", "prefill", 4096, fmt)
        tr4k = median(rows, "transformer", "prefill", 4096, fmt)
        steps = [median(rows, "ssm", "step", c, fmt) for c in args.contexts]
        steps = [s for s in steps if s]
        out[fmt] = {
            "ssm_prefill_t4096_over_t1024": t4k / t1k if t1k and t4k else None,
            "ssm_step_spread": (max(steps) - min(steps)) / min(steps) if steps else None,
            "ssm_speedup_over_transformer_L4096": tr4k / t4k if tr4k and t4k else None,
        }
    return out


PANELS = {  # name → (graph, row key, x label, y label)
    "prefill": ("prefill", "median_ms", "sequence length L", "prefill median latency (ms)"),
    "step": ("step", "median_ms", "context length", "per-token step median latency (ms)"),
    "memory": ("step", "peak_memory_mb", "context length", "step artifact peak memory (MB)"),
}


def plot(rows: list[dict], path: Path, panels: tuple[str, ...] = ("prefill", "step"), title: str = "") -> None:
    """Log-log panels (see ``PANELS``), one line per family × runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        kind, key, xlabel, ylabel = PANELS[panel]
        for family, style in (("ssm", "-o"), ("transformer", "--s")):
            for fmt in FORMATS:
                pts = [(r["length"], r[fmt][key]) for r in rows
                       if r["family"] == family and r["graph"] == kind and r.get(fmt, {}).get(key)]
                if pts:
                    ax.plot(*zip(*pts), style, label=f"{family} {fmt}")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=ints, default=[256, 1024, 4096, 16384])
    parser.add_argument("--contexts", type=ints, default=[128, 1024, 4096, 16384])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/seq_scaling.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = sweep(default_configs(args), args)
    result = {"d_model": args.d_model, "layers": args.layers, "heads": args.heads, "threads": args.threads,
              "runs": args.runs, "goals": goals(rows, args), "rows": rows,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(json.dumps(result["goals"], indent=2))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
