"""Where benchmarks run besides the host: device backends register here (``adb`` is built in).

A backend benches one artifact with its own typed options (``DeviceBackend``); ``bench_on_device`` runs an
artifact, or every runnable artifact of a bundle, on it. The built-in backends (``BUILTIN_BACKENDS``) register
themselves the first time a registry is read, so importing this module stays cheap (no torch) and a Python user gets
them without the command line:

    results, manifest = bench_on_device(Path("bundle"), "adb:SERIAL", AdbBenchOptions(threads=2))
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from edgekit.artifact import FAILED, MANIFEST, Manifest, artifact_problem, bundle_path, load_manifest
from edgekit.benchmarking.result import BenchResult
from edgekit.errors import EdgekitError
from edgekit.registry import Registry

T = TypeVar("T")

# modules that register a backend when imported (read on first use of DEVICE_BENCHES / DEVICE_LISTERS)
BUILTIN_BACKENDS = ("edgekit.devices.adb_backend",)
_loaded = False


def _load_builtin_backends() -> None:
    global _loaded
    if not _loaded:
        _loaded = True  # first: a backend module that reads a registry while it loads does not recurse
        for module in BUILTIN_BACKENDS:
            importlib.import_module(module)


class BackendRegistry(Registry[T]):
    """A Registry that imports the built-in backends before it is first read."""

    def get(self, name: str) -> T:
        _load_builtin_backends()
        return super().get(name)

    def names(self) -> list[str]:
        _load_builtin_backends()
        return super().names()

    def __contains__(self, name: object) -> bool:
        _load_builtin_backends()
        return super().__contains__(name)


@dataclass(frozen=True)
class DeviceBackend:
    """One place benchmarks run besides the host."""

    options: type  # its frozen options dataclass; options(threads=, warmup=, runs=) gives the defaults for the rest
    bench: Callable[[Path, str | None, Any], BenchResult]  # (artifact, device serial or None, options) → one row
    formats: Callable[[Any], tuple[str, ...]]  # the artifact formats it runs with these options


# backend name → function listing its attached devices as {"name", "description"} rows
DEVICE_LISTERS: Registry[Callable[[], list[dict[str, str]]]] = BackendRegistry("device backend")

# backend name → DeviceBackend
DEVICE_BENCHES: Registry[DeviceBackend] = BackendRegistry("device backend")


def parse_device(text: str) -> tuple[str, str | None]:
    """``host`` → ("host", None); ``adb`` → ("adb", None); ``adb:SERIAL`` → ("adb", "SERIAL")."""
    backend, _, serial = text.partition(":")
    return backend, serial or None


def device_options(device: str, options: Any = None, **timing: int | None) -> Any:
    """The options for ``device`` (``adb``, ``adb:SERIAL``): ``options`` as given, or the backend's defaults with
    ``timing`` (threads, warmup, runs; None: the default). A timing given beside ``options`` must match it."""
    backend = DEVICE_BENCHES.get(parse_device(device)[0])
    given = {name: value for name, value in timing.items() if value is not None}
    if options is None:
        return backend.options(**given)
    if not isinstance(options, backend.options):
        raise EdgekitError(f"options for device {device!r} must be {backend.options.__name__}, "
                           f"not {type(options).__name__}")
    clash = [f"{name}={value} (options has {getattr(options, name)})" for name, value in given.items()
             if getattr(options, name) != value]
    if clash:
        raise EdgekitError(f"{', '.join(clash)}: give each setting once, in options or as an argument")
    return options


def refused(bundle: Path, manifest: Manifest | None, name: str, where: str) -> BenchResult | None:
    """A failed row for the manifest's artifact ``name`` when its file is not the one verified, else None."""
    entry = next((e for e in manifest.artifacts if e.file == name), None) if manifest else None
    problem = artifact_problem(bundle, entry) if entry else None
    if problem is None:
        return None
    return BenchResult(name, entry.format, entry.runtime, where, status=f"failed: {problem}; not run")


def bench_on_device(target: Path, device: str, options: Any) -> tuple[list[BenchResult], Manifest | None]:
    """Each runnable artifact (a file, or a bundle's artifacts in the formats ``options`` run) on ``device``
    (``adb`` or ``adb:SERIAL``); the bundle's manifest, or None for a single file. An artifact that is not the
    one its manifest records is refused (a failed row), never run."""
    name, serial = parse_device(device)
    backend = DEVICE_BENCHES.get(name)
    where = f"{name}:{serial}" if serial else name
    if not target.is_dir():  # an artifact of a bundle must still be the one its manifest records
        beside = load_manifest(target.parent) if (target.parent / MANIFEST).is_file() else None
        return [refused(target.parent, beside, target.name, where) or backend.bench(target, serial, options)], None
    manifest = load_manifest(target)
    wanted = backend.formats(options)
    entries = [e for e in manifest.artifacts
               if e.format in wanted and e.file and e.status != FAILED and not e.compiled_for]
    if not entries:
        raise EdgekitError(f"{target} has no {' or '.join(wanted)} artifact to run on {name}")
    paths = [bundle_path(target, e.file) for e in entries]  # all inside the bundle before anything is pushed
    return [refused(target, manifest, e.file, where) or backend.bench(path, serial, options)
            for e, path in zip(entries, paths)], manifest
