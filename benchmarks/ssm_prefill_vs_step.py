"""SSM latency: prefill at several static L and the one-token step, in PyTorch / ONNX Runtime / LiteRT.

    python benchmarks/ssm_prefill_vs_step.py [--lengths 64,256,1024] [--runs 30] [--checkpoint DIR]
        [--out benchmarks/results/ssm_prefill_vs_step.json]

Default model: a byte LM of the issue's size (d_model 128, 4 layers, d_state 16), random weights
(latency does not depend on them); ``--checkpoint`` times a trained one instead. Each graph is exported
with the real converters, checked against PyTorch (max |Δ| printed), then timed at a fixed thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.bench import time_calls
from edgekit.converters import CONVERTERS, ModelSource

FORMATS = ("onnx", "tflite")


def _graphs(args: argparse.Namespace):
    if args.checkpoint:
        from edgekit.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint).model
    else:
        from edgekit.models import create_model

        torch.manual_seed(0)
        model = create_model("ssm", {"head": "byte_lm", "d_model": 128, "n_layers": 4, "d_state": 16})
    return model.eval(), model.eval().export_graphs(tuple(args.lengths))


def _time_graph(graph, folder: Path, args: argparse.Namespace) -> dict:
    inputs = [x.numpy() for x in graph.example_inputs]
    with torch.inference_mode():
        want = [o.numpy() for o in graph.module(*graph.example_inputs)]
        torch_ms = time_calls(lambda: graph.module(*graph.example_inputs), warmup=args.warmup, runs=args.runs,
                              threads=args.threads)
    row = {"graph": graph.name, "torch": torch_ms.to_dict()}
    source = ModelSource(graph.name, graph.module, graph.example_inputs, graph.input_names, graph.output_names,
                         "benchmark", "benchmark", "checkpoint")
    for fmt in FORMATS:
        conv = CONVERTERS.get(fmt)
        path = folder / conv.artifact_name(graph.name, "fp32")
        start = time.perf_counter()
        conv.export(source, path, "fp32", {})
        seconds = time.perf_counter() - start
        run = conv.runner(path, args.threads)
        err = max(float(np.abs(g - w).max()) for g, w in zip(run(inputs), want))
        stats = time_calls(lambda: run(inputs), warmup=args.warmup, runs=args.runs, threads=args.threads)
        row[fmt] = stats.to_dict() | {"export_seconds": round(seconds, 1), "max_abs_diff": err}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="64,256,1024", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--checkpoint", help="an edgekit ssm byte-LM checkpoint (default: random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ssm_prefill_vs_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, graphs = _graphs(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for graph in graphs:
            rows.append(_time_graph(graph, Path(tmp), args))
            r = rows[-1]
            print(f"{r['graph']:>14}  torch {r['torch']['median_ms']:8.3f} ms  " + "  ".join(
                f"{f} {r[f]['median_ms']:8.3f} ms (export {r[f]['export_seconds']} s, |Δ| {r[f]['max_abs_diff']:.1e})"
                for f in FORMATS), flush=True)
    result = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(model.config).items()},
              "params": sum(p.numel() for p in model.parameters()), "threads": args.threads, "runs": args.runs,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average": os.getloadavg()}, "torch": torch.__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
