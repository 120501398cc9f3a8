"""`edgekit bench ARTIFACT|BUNDLE`: latency in each runtime beside PyTorch eager."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, show_rows
from edgekit.commands.validate import non_negative_int, positive_int
from edgekit.errors import EdgekitError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="an artifact (.onnx, .tflite, .mlpackage) or a bundle folder")
    p.add_argument("--device", default="host", help="host (default) or adb[:SERIAL]")
    p.add_argument("--threads", type=positive_int, default=2, help="fixed thread count (default 2)")
    p.add_argument("--warmup", type=non_negative_int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--runs", type=positive_int, default=200, help="timed runs (default 200)")
    p.add_argument("--out", type=Path, help="also write the report as JSON to this file")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace a file that is not an edgekit report (a folder is never replaced)")
    p.add_argument("--source", type=Path, metavar="PATH",
                   help="the bundle's source model for the PyTorch row (checkpoint folder or .pt2; its sha256 must be "
                        "the recorded one); without it, the recorded source only when outside the bundle and unchanged")
    add_json_flag(p)
    from edgekit.commands.devices import add_adb_bench_arguments

    add_adb_bench_arguments(p)


@command("bench", "time artifacts in their runtimes (host, or a phone over adb)", configure)
def run(args: argparse.Namespace) -> int:
    from edgekit.benchmarking.targets import parse_device

    if args.out:
        from edgekit.io import check_output_dir

        check_output_dir(args.out, "report", args.overwrite)  # before benchmarking
    backend, serial = parse_device(args.device)
    target = Path(args.target)
    if not target.exists():
        raise EdgekitError(f"{target} does not exist; expected an artifact file or a bundle folder")
    results, manifest, reference = (_bench_host(target, args) if backend == "host"
                                    else _bench_device(backend, serial, target, args))
    from edgekit.pipeline import write_report
    from edgekit.report.rows import build_rows

    rows = build_rows(manifest, results, unbenched=target.is_dir() and backend == "host")
    if args.out:
        write_report(args.out, results, manifest, reference, rows=rows)
    show_rows(args, rows, f"bench on {args.device}, {args.threads} threads")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def _bench_host(target: Path, args: argparse.Namespace):
    from edgekit.artifact import load_manifest
    from edgekit.benchmarking.host import bench_artifact, bench_bundle, bench_torch
    from edgekit.verify.bundle import golden_reference

    opts = dict(threads=args.threads, warmup=args.warmup, runs=args.runs)
    is_bundle = target.is_dir() and (target / "manifest.json").is_file()
    bundle = target if is_bundle else target.parent
    manifest = load_manifest(bundle) if (bundle / "manifest.json").is_file() else None
    reference = golden_reference(bundle) if (bundle / "golden.npz").is_file() else None
    results = []
    torch_row = _torch_baseline(bundle, manifest, reference, args, opts, bench_torch)
    if torch_row:
        results.append(torch_row)
    if is_bundle:
        results += bench_bundle(bundle, manifest, list(reference.inputs[0]) if reference else [], **opts)
    else:
        fmt = _format_of(target)
        refused = _refusal(bundle, manifest, target.name, "host")
        inputs = [] if refused else list(reference.inputs[0]) if reference else _random_inputs(fmt, target)
        results.append(refused or bench_artifact(fmt, target, inputs, **opts))
    return results, manifest, reference


def _torch_baseline(bundle: Path, manifest, reference, args: argparse.Namespace, opts, bench_torch):
    """PyTorch eager on the bundle's source model, when it may be loaded (``verify.bundle.trusted_source``)."""
    import torch

    from edgekit.progress import status
    from edgekit.verify.bundle import trusted_source

    if manifest is None:
        if args.source:
            raise EdgekitError(f"--source needs a bundle to check it against, and {bundle} has no manifest.json")
        return None
    source, why_not = trusted_source(bundle, manifest, args.source)
    if source is None or reference is None:
        status(f"PyTorch baseline not run: {why_not or f'{bundle} has no golden.npz inputs'}")
        return None
    return bench_torch(source.module, tuple(torch.from_numpy(x) for x in reference.inputs[0]), **opts)


def _refusal(bundle: Path, manifest, name: str, where: str):
    """A failed row for the manifest's artifact ``name`` when its file is not the one verified, else None."""
    from edgekit.benchmarking.targets import refused

    return refused(bundle, manifest, name, where)


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
    """Each runnable artifact (a file, or a bundle's artifacts that the options run) on a device backend:
    the flags become the backend's options object, the library does the rest."""
    from edgekit.benchmarking.targets import bench_on_device
    from edgekit.commands.devices import bench_options

    results, manifest = bench_on_device(target, f"{backend}:{serial}" if serial else backend,
                                        bench_options(backend, args))
    return results, manifest, None
