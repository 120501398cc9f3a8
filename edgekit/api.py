"""The public Python API: a small face over the library, the same steps the CLI runs.

    bundle = edgekit.convert(model, (x,), to=["onnx", "tflite"], quant=edgekit.QuantSpec.parse("int8"),
                             calib=calib_array, out="my_bundle")
    bundle.verify().ok; bundle.bench(threads=2); edgekit.Bundle.load("my_bundle")

The pipeline and its steps as verbs (``run``, ``train``, ``adapt``, ``bench``, ``bench_graph``, ``create_model``,
``load_recipe``), a bundle's golden data and runners (``Bundle.reference``, ``Bundle.runner``). Imports of edgekit's
own modules stay inside the functions so that ``import edgekit`` stays light.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from edgekit.artifact import Manifest, load_manifest
from edgekit.converters import ModelSource
from edgekit.errors import EdgekitError
from edgekit.graph import Runner, RunnerUnavailable
from edgekit.quant import QuantSpec

if TYPE_CHECKING:
    from edgekit.benchmarking.result import BenchResult
    from edgekit.models import EdgeModel
    from edgekit.pipeline import RunOutcome
    from edgekit.recipe import Recipe
    from edgekit.verify import ReferenceData

Model = str | Path | torch.nn.Module | torch.export.ExportedProgram


@dataclass
class VerifyReport:
    """``Bundle.verify()``: one result per artifact and the inputs parity ran on."""

    results: list[dict[str, Any]]
    reference: str

    @property
    def ok(self) -> bool:
        """Every artifact passed (none failed, at least one checked)."""
        return bool(self.results) and all(r["status"] != "failed" for r in self.results)


@dataclass
class Bundle:
    """An artifact bundle on disk: its folder and its manifest."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Open a bundle folder (its manifest is checked like any untrusted input)."""
        return cls(Path(path), load_manifest(path))

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.manifest.artifacts]

    def reference(self, graph: str = "") -> ReferenceData:
        """The golden data saved beside the artifacts (of ``graph``): ``.inputs`` (one tuple of batch-1 arrays
        per sample), PyTorch's ``.outputs`` and ``.labels`` where known."""
        from edgekit.verify.bundle import golden_reference

        return golden_reference(self.path, graph)

    def runner(self, artifact: str, threads: int = 2, *, graph: str | None = None) -> Runner | RunnerUnavailable:
        """A callable running one artifact (a format name, or a file name of this bundle; ``graph`` picks among a
        sequence model's graphs) on a list of arrays; ``RunnerUnavailable(reason)`` where its runtime cannot run
        here. A failed artifact, or a file that is not the one verified, raises EdgekitError."""
        from edgekit.artifact import FAILED, bundle_path
        from edgekit.converters import CONVERTERS
        from edgekit.verify.bundle import artifact_problem

        entry = (next((a for a in self.manifest.artifacts if a.file == artifact), None)
                 or self.manifest.entry(artifact, graph))
        if entry is None:
            files = ", ".join(a.file or a.format for a in self.manifest.artifacts) or "(none)"
            raise EdgekitError(f"{self.path} has no artifact {artifact!r}"
                               f"{f' of graph {graph!r}' if graph is not None else ''}; it has: {files}")
        failed = entry.status == FAILED or not entry.file
        problem = (f"{entry.file or entry.format} failed: {entry.error}" if failed
                   else artifact_problem(self.path, entry))
        if problem:
            raise EdgekitError(f"{self.path}: {problem}; not run")
        return CONVERTERS.get(entry.format).runner(bundle_path(self.path, entry.file), threads)

    def verify(self, *, threads: int = 2, source: str | Path | None = None) -> VerifyReport:
        """Re-check files against the manifest and re-run parity, as ``edgekit verify``."""
        from edgekit.verify.bundle import verify_bundle

        self.manifest, results, reference = verify_bundle(self.path, threads=threads, source=source)
        return VerifyReport(results, reference)

    def bench(self, *, threads: int | None = None, warmup: int | None = None, runs: int | None = None,
              device: str = "host", options: Any = None) -> list[dict[str, Any]]:
        """Latency of every artifact: the rows of ``edgekit bench BUNDLE [--device DEVICE]``.

        ``device="host"`` times each artifact here on its golden inputs; ``"adb"`` / ``"adb:SERIAL"`` runs the
        bundle's artifacts on that device with ``options`` (``edgekit.devices.adb_bench.AdbBenchOptions``).
        threads, warmup and runs default to 2, 20 and 200, as in the CLI; with ``options`` they may be left out."""
        from edgekit.benchmarking.host import bench_bundle
        from edgekit.benchmarking.targets import bench_on_device, device_options, parse_device
        from edgekit.report.rows import build_rows
        from edgekit.verify.bundle import golden_reference

        timing = {"threads": threads, "warmup": warmup, "runs": runs}
        if options is None:  # the CLI's defaults for what is not given
            timing = {k: {"threads": 2, "warmup": 20, "runs": 200}[k] if v is None else v for k, v in timing.items()}
        if parse_device(device)[0] != "host":
            results, _ = bench_on_device(self.path, device, device_options(device, options, **timing))
            return build_rows(self.manifest, results, unbenched=False)
        if options is not None:
            raise EdgekitError("Bundle.bench: options= is for a device such as device='adb'; "
                               "on the host give threads, warmup and runs")
        for name, least in (("threads", 1), ("runs", 1), ("warmup", 0)):
            if timing[name] < least:
                raise EdgekitError(f"Bundle.bench: {name} must be at least {least}, got {timing[name]}")
        inputs = list(golden_reference(self.path).inputs[0]) if (self.path / "golden.npz").is_file() else []
        results = bench_bundle(self.path, self.manifest, inputs, **timing)
        return build_rows(self.manifest, results)


def convert(model: Model, example_inputs: Sequence[torch.Tensor] | None = None, *,
            to: Sequence[str] = ("onnx", "tflite", "coreml"), quant: str | QuantSpec = "fp32",
            calib: str | Path | np.ndarray | None = None, out: str | Path, threads: int = 2,
            overwrite: bool = False, name: str = "model") -> Bundle:
    """Export ``model`` to each format in ``to``, verify every artifact against PyTorch, write a bundle.

    ``model`` is an ``nn.Module`` (with ``example_inputs``), a ``torch.export.ExportedProgram``, a ``.pt2``
    path or an edgekit checkpoint folder. ``calib`` (int8) is an array of samples, a ``.npy``/``.npz`` or an
    image folder. A failed format is recorded in the manifest and raises nothing; check ``bundle.artifacts``."""
    from edgekit.conversion import convert_graphs
    from edgekit.converters import CONVERTERS
    from edgekit.sources import graph_sources, reference_for

    spec = QuantSpec.parse(quant)
    calib_array = calib if isinstance(calib, np.ndarray) else None
    if calib is not None and calib_array is None:  # a path: part of the spec (the manifest records it)
        if spec.calib_source is not None:
            raise EdgekitError(f"calibration data given twice: quant.calib_source {spec.calib_source!r} and "
                               f"calib={str(calib)!r}; give one")
        spec = QuantSpec.parse(spec, calib_source=calib)
    formats = list(to)
    if not formats:
        raise EdgekitError(f"to= names no format; give one or more of: {', '.join(CONVERTERS.names())}")
    for fmt in formats:
        CONVERTERS.get(fmt).check_precision(spec)
    sources = graph_sources(_source(model, example_inputs, name))
    manifest = convert_graphs(sources, formats, out, [reference_for(s) for s in sources], quant=spec,
                              calib_array=calib_array, threads=threads, overwrite=overwrite)
    return Bundle(Path(out), manifest)


def _source(model: Model, example_inputs: Sequence[torch.Tensor] | None, name: str) -> ModelSource:
    """A ModelSource for any model the API takes."""
    from edgekit.sources import load_source

    if isinstance(model, (str, Path)):
        return load_source(model)
    if isinstance(model, torch.export.ExportedProgram):
        args = tuple(example_inputs) if example_inputs is not None else tuple((model.example_inputs or ((),))[0])
        return _in_memory(model.module(), args, name, exported=model)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise EdgekitError("edgekit.convert(module, example_inputs): an nn.Module needs its example inputs, "
                               "e.g. (torch.randn(1, 3, 224, 224),)")
        return _in_memory(model.eval(), tuple(example_inputs), name)
    raise EdgekitError(f"edgekit.convert: model is a {type(model).__name__}; expected an nn.Module, an "
                       "ExportedProgram, a .pt2 path or an edgekit checkpoint folder")


def _in_memory(module: torch.nn.Module, args: tuple, name: str,
               exported: torch.export.ExportedProgram | None = None) -> ModelSource:
    from edgekit.sources import default_output_names

    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise EdgekitError("example_inputs must be a non-empty tuple of tensors (batch 1), e.g. (x,)")
    state = (exported.state_dict if exported is not None else module.state_dict()).items()
    digest = hashlib.sha256()
    for key, tensor in sorted(state):
        digest.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    with torch.no_grad():
        out = module(*args)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    return ModelSource(
        name=name, module=module, example_inputs=args, input_names=tuple(f"input_{i}" for i in range(len(args))),
        output_names=default_output_names(n_out),
        sha256=digest.hexdigest(), origin=f"<in-memory {type(module).__name__}>", kind="module", exported=exported)


@dataclass
class Trained:
    """``edgekit.train`` (or ``Trained.load(checkpoint)``): the checkpoint folder, its held-out metrics, the model
    family and its config values."""

    checkpoint: Path
    metrics: dict[str, Any]
    family: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, checkpoint: str | Path) -> Trained:
        """What an existing checkpoint folder records (weights and meta.json are checked, nothing unpickled)."""
        from edgekit.checkpoint import load_checkpoint
        from edgekit.models import config_to_dict

        ckpt = load_checkpoint(checkpoint)
        return cls(ckpt.path, dict(ckpt.meta.get("metrics") or {}), ckpt.meta["family"],
                   config_to_dict(ckpt.model.config))


def load_recipe(recipe: str | Path | Recipe) -> Recipe:
    """A recipe, validated: a bundled name (``cnn_digits``) or a .toml path; a loaded ``Recipe`` is returned as is.
    Change one with ``dataclasses.replace`` before ``edgekit.train`` / ``edgekit.run``."""
    from edgekit.recipe import Recipe, load_recipe as parse

    return recipe if isinstance(recipe, Recipe) else parse(recipe)


def train(recipe: str | Path | Recipe, out: str | Path | None = None, *, overwrite: bool = False) -> Trained:
    """Train a recipe (a bundled name, a .toml path or a loaded ``Recipe``) into ``out/checkpoint`` (default
    ``runs/<name>``)."""
    from edgekit.io import check_output_dir
    from edgekit.training.run import train_recipe

    loaded = load_recipe(recipe)
    out = _run_folder(loaded, out)
    check_output_dir(out, "run", overwrite)
    path, _ = train_recipe(loaded, out)
    return Trained.load(path)


def _run_folder(recipe: Recipe, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("runs") / recipe.name


def run(recipe: str | Path | Recipe, out: str | Path | None = None, *, overwrite: bool = False) -> RunOutcome:
    """The whole pipeline, as ``edgekit run``: train, convert to the recipe's formats, verify, bench and write
    ``out/report.json`` (default ``runs/<name>``). Returns ``.rows`` (the report table), ``.report``,
    ``.report_path`` and ``.ok``."""
    from edgekit.pipeline import run_pipeline

    loaded = load_recipe(recipe)
    return run_pipeline(loaded, _run_folder(loaded, out), overwrite=overwrite)


def adapt(checkpoint: str | Path, *, domain: str | None = None, data: str | Path | None = None,
          out: str | Path | None = None, overwrite: bool = False, **options: Any) -> Path:
    """Train a LoRA adapter (``options``: rank, alpha, targets, steps, examples, lr, seed) for a checkpoint
    on a registered ``domain`` or your ``data``; returns the adapter folder."""
    from edgekit.checkpoint import load_checkpoint
    from edgekit.config import dataclass_from_dict
    from edgekit.io import check_output_dir
    from edgekit.lora import AdaptOptions, adapt_checkpoint
    from edgekit.lora.adapter import safe_name

    ckpt = load_checkpoint(checkpoint)
    adapter_name = safe_name(domain or Path(data or "adapter").stem)
    out = Path(out) if out is not None else ckpt.path.parent / "adapters" / adapter_name
    check_output_dir(out, "adapter", overwrite)
    checked = dataclass_from_dict(AdaptOptions, dict(options), "edgekit.adapt")  # unknown keys and ranges named
    return adapt_checkpoint(ckpt, out, domain=domain, data=data, options=checked, name=adapter_name).path


def load(checkpoint: str | Path) -> torch.nn.Module:
    """The eval-mode model of an edgekit checkpoint folder (safetensors + JSON; nothing unpickled)."""
    from edgekit.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint).model


def create_model(family: str, **config: Any) -> EdgeModel:
    """A new model of a registered family (``edgekit.FAMILIES``: cnn, ssm, transformer, …) from its config values,
    e.g. ``create_model("ssm", head="byte_lm", d_model=128)``; a wrong key or value names it and the options."""
    from edgekit.models import create_model as build

    return build(family, config)


def bench_graph(model: EdgeModel, graph: str = "", *, formats: Sequence[str] = ("onnx", "tflite"), threads: int = 2,
                warmup: int = 5, runs: int = 10, memory: bool = False) -> dict[str, dict[str, Any]]:
    """Export one graph of an edgekit model (``graph``: its name or the start of it, e.g. "prefill", "step"; "" =
    the first) to each format, check it against PyTorch on its example inputs and time it beside PyTorch eager.

    Returns ``{"pytorch": stats, fmt: {export_seconds, size_bytes, max_abs_diff, median_ms, …}}``; with ``memory``
    also each artifact's peak memory in MB. A format that fails to convert or run is ``{"error": "..."}``, not an
    exception (one bad point must not lose a sweep)."""
    import tempfile

    from edgekit.benchmarking.seq import measure_graph, torch_latency
    from edgekit.converters import CONVERTERS

    graphs = model.export_graphs() if hasattr(model, "export_graphs") else []
    exact = [g for g in graphs if g.name == graph]
    chosen = (exact or [g for g in graphs if g.name.startswith(graph)] or [None])[0]
    if chosen is None:
        names = ", ".join(repr(g.name) for g in graphs) or "none (not an edgekit model)"
        raise EdgekitError(f"bench_graph: {type(model).__name__} has no graph {graph!r}; its graphs: {names}")
    _check_timing("bench_graph", threads=threads, warmup=warmup, runs=runs)
    for fmt in formats:
        CONVERTERS.get(fmt)  # an unknown name is the caller's mistake: raised (listing the formats), not recorded
    timings = {"pytorch": torch_latency(chosen, threads=threads, warmup=warmup, runs=runs)}
    with tempfile.TemporaryDirectory() as folder:
        for fmt in formats:
            timings[fmt] = measure_graph(chosen, fmt, Path(folder), threads=threads, warmup=warmup, runs=runs,
                                         memory=memory)
    return timings


@dataclass
class BenchReport:
    """``edgekit.bench``: the report rows (the table ``edgekit bench`` prints), the raw results and the manifest."""

    rows: list[dict[str, Any]]
    results: list[BenchResult]
    manifest: Manifest | None

    @property
    def ok(self) -> bool:
        """No row failed."""
        return all(r["status"] != "failed" for r in self.rows)


def bench(target: str | Path, *, device: str = "host", threads: int | None = None, warmup: int | None = None,
          runs: int | None = None, options: Any = None, source: str | Path | None = None,
          out: str | Path | None = None, overwrite: bool = False) -> BenchReport:
    """Time an artifact file, or every artifact of a bundle folder, in its runtime: what ``edgekit bench`` does.

    On the host (threads, warmup, runs default to 2, 20, 200) a bundle's golden inputs feed the artifacts and its
    source model gives the PyTorch row when it may be loaded (``source``: a checkpoint or .pt2 whose sha256 is the
    recorded one). ``device="adb"`` / ``"adb:SERIAL"`` (any registered ``edgekit.DEVICE_BENCHES`` backend) runs
    them there with ``options`` (its options object). ``out`` also writes the JSON report (checked first)."""
    from edgekit.benchmarking.targets import bench_on_device, device_options, parse_device
    from edgekit.io import check_output_dir
    from edgekit.pipeline import write_report
    from edgekit.report.rows import build_rows

    if out is not None:
        check_output_dir(out, "report", overwrite)  # before anything runs
    target, host = Path(target), parse_device(device)[0] == "host"
    if not target.exists():
        raise EdgekitError(f"{target} does not exist; expected an artifact file or a bundle folder")
    if host:
        if options is not None:
            raise EdgekitError("edgekit.bench: options= is for a device such as device='adb'; on the host give "
                               "threads, warmup and runs")
        given = {"threads": threads, "warmup": warmup, "runs": runs}
        timing = {k: {"threads": 2, "warmup": 20, "runs": 200}[k] if v is None else v for k, v in given.items()}
        _check_timing("edgekit.benchmarking", **timing)
        results, manifest, reference = _bench_host(target, source, timing)
    else:
        chosen = device_options(device, options, threads=threads, warmup=warmup, runs=runs)
        (results, manifest), reference = bench_on_device(target, device, chosen), None
    rows = build_rows(manifest, results, unbenched=target.is_dir() and host)
    if out is not None:
        write_report(Path(out), results, manifest, reference, rows=rows)
    return BenchReport(rows, results, manifest)


def _check_timing(who: str, **timing: int) -> None:
    """threads and runs at least 1, warmup at least 0."""
    for name, value in timing.items():
        least = 0 if name == "warmup" else 1
        if value < least:
            raise EdgekitError(f"{who}: {name} must be at least {least}, got {value}")


def _bench_host(target: Path, source: str | Path | None,
                timing: dict[str, int]) -> tuple[list[BenchResult], Manifest | None, ReferenceData | None]:
    """A bundle (every artifact) or one artifact file on this machine, after the PyTorch row where allowed."""
    from edgekit.artifact import MANIFEST
    from edgekit.benchmarking.host import bench_artifact, bench_bundle
    from edgekit.benchmarking.targets import refused
    from edgekit.verify.bundle import golden_reference

    is_bundle = target.is_dir() and (target / MANIFEST).is_file()
    folder = target if is_bundle else target.parent
    manifest = load_manifest(folder) if (folder / MANIFEST).is_file() else None
    reference = golden_reference(folder) if (folder / "golden.npz").is_file() else None
    results = [row for row in [_torch_row(folder, manifest, reference, source, timing)] if row is not None]
    if is_bundle:
        results += bench_bundle(folder, manifest, list(reference.inputs[0]) if reference else [], **timing)
    else:
        fmt = _format_of(target)
        rejected = refused(folder, manifest, target.name, "host")
        inputs = [] if rejected else list(reference.inputs[0]) if reference else _random_inputs(fmt, target)
        results.append(rejected or bench_artifact(fmt, target, inputs, **timing))
    return results, manifest, reference


def _torch_row(bundle: Path, manifest: Manifest | None, reference: ReferenceData | None,
               source: str | Path | None, timing: dict[str, int]) -> BenchResult | None:
    """PyTorch eager on the bundle's source model, when it may be loaded (``verify.bundle.trusted_source``)."""
    from edgekit.benchmarking.host import bench_torch
    from edgekit.progress import status
    from edgekit.verify.bundle import trusted_source

    if manifest is None:
        if source:
            raise EdgekitError(f"source= needs a bundle to check it against, and {bundle} has no manifest.json")
        return None
    model, why_not = trusted_source(bundle, manifest, source)
    if model is None or reference is None:
        status(f"PyTorch baseline not run: {why_not or f'{bundle} has no golden.npz inputs'}")
        return None
    return bench_torch(model.module, tuple(torch.from_numpy(x) for x in reference.inputs[0]), **timing)


def _format_of(path: Path) -> str:
    """The registered format whose suffix ``path`` has."""
    from edgekit.converters import CONVERTERS

    for name in CONVERTERS:
        if path.name.endswith(CONVERTERS.get(name).suffix):
            return name
    suffixes = ", ".join(CONVERTERS.get(n).suffix for n in CONVERTERS)
    raise EdgekitError(f"{path} is not an artifact edgekit can run; expected one of: {suffixes}")


def _random_inputs(fmt: str, path: Path) -> list[np.ndarray]:
    """Seeded random inputs of the artifact's own shapes and dtypes (an artifact without golden data)."""
    from edgekit.converters import CONVERTERS

    rng = np.random.default_rng(0)
    return [rng.standard_normal(t.shape).astype(t.dtype) for t in CONVERTERS.get(fmt).inspect(path).inputs]
