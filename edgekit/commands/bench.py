"""`edgekit bench ARTIFACT|BUNDLE`: latency in each runtime beside PyTorch eager."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, show_rows
from edgekit.errors import EdgekitError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="an artifact (.onnx, .tflite, .mlpackage) or a bundle folder")
    p.add_argument("--device", default="host", help="host (default) or adb[:SERIAL]")
    p.add_argument("--threads", type=int, default=2, help="fixed thread count (default 2)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--runs", type=int, default=200, help="timed runs (default 200)")
    p.add_argument("--out", type=Path, help="also write the report as JSON to this file")
    add_json_flag(p)
    from edgekit.commands.devices import add_adb_bench_arguments

    add_adb_bench_arguments(p)


@command("bench", "time artifacts in their runtimes (host, or a phone over adb)", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.bench.targets import parse_device

    for name in ("threads", "runs"):
        if getattr(args, name) < 1:
            raise EdgekitError(f"--{name} must be at least 1, got {getattr(args, name)}")
    backend, serial = parse_device(args.device)
    target = Path(args.target)
    if not target.exists():
        raise EdgekitError(f"{target} does not exist; expected an artifact file or a bundle folder")
    results, manifest, reference = (_bench_host(target, args) if backend == "host"
                                    else _bench_device(backend, serial, target, args))
    from edgekit.pipeline import write_report
    from edgekit.report import build_rows

    rows = build_rows(manifest, results, unbenched=target.is_dir() and backend == "host")
    if args.out:
        write_report(args.out, results, manifest, reference, rows=rows)
    show_rows(args, rows, f"bench on {args.device}, {args.threads} threads")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def _bench_host(target: Path, args: argparse.Namespace):
    from edgekit.artifact import load_manifest
    from edgekit.bench import bench_artifact, bench_bundle, bench_torch
    from edgekit.verify.bundle import golden_reference

    opts = dict(threads=args.threads, warmup=args.warmup, runs=args.runs)
    is_bundle = target.is_dir() and (target / "manifest.json").is_file()
    bundle = target if is_bundle else target.parent
    manifest = load_manifest(bundle) if (bundle / "manifest.json").is_file() else None
    reference = golden_reference(bundle) if (bundle / "golden.npz").is_file() else None
    results = []
    torch_row = _torch_baseline(manifest, reference, opts, bench_torch)
    if torch_row:
        results.append(torch_row)
    if is_bundle:
        results += bench_bundle(bundle, manifest, list(reference.inputs[0]) if reference else [], **opts)
    else:
        fmt = _format_of(target)
        inputs = list(reference.inputs[0]) if reference else _random_inputs(fmt, target)
        results.append(bench_artifact(fmt, target, inputs, **opts))
    return results, manifest, reference


def _torch_baseline(manifest, reference, opts, bench_torch):
    """PyTorch eager on the bundle's source model, when that model is still present and unchanged."""
    import torch

    from edgekit.sources import load_source

    if manifest is None or reference is None or not Path(manifest.source.get("path", "")).exists():
        return None
    source = load_source(manifest.source["path"])
    if source.sha256 != manifest.source.get("sha256"):
        return None
    return bench_torch(source.module, tuple(torch.from_numpy(x) for x in reference.inputs[0]), **opts)


def _format_of(path: Path) -> str:
    from edgekit.converters import CONVERTERS

    for name in CONVERTERS:
        if path.name.endswith(CONVERTERS.get(name).suffix):
            return name
    suffixes = ", ".join(CONVERTERS.get(n).suffix for n in CONVERTERS)
    raise EdgekitError(f"{path} is not an artifact edgekit can run; expected one of: {suffixes}")


def _random_inputs(fmt: str, path: Path) -> list[np.ndarray]:
    from edgekit.converters import CONVERTERS

    info = CONVERTERS.get(fmt).inspect(path)
    rng = np.random.default_rng(0)
    return [rng.standard_normal(t.shape).astype(t.dtype) for t in info.inputs]


def _bench_device(backend: str, serial: str | None, target: Path, args: argparse.Namespace):
    """Each runnable artifact (a file, or a bundle's .tflite/.onnx files) on a device backend."""
    from edgekit.artifact import load_manifest
    from edgekit.bench.targets import DEVICE_BENCHES

    bench = DEVICE_BENCHES.get(backend)
    if not target.is_dir():
        return [bench(target, serial, args)], None, None
    manifest = load_manifest(target)
    wanted = ("tflite", "onnx") if getattr(args, "runner", "") == "python" else ("tflite",)
    files = [target / e.file for e in manifest.artifacts
             if e.format in wanted and e.file and e.status != "failed" and not e.compiled_for]
    if not files:
        raise EdgekitError(f"{target} has no {' or '.join(wanted)} artifact to run on {backend}")
    return [bench(path, serial, args) for path in files], manifest, None
