"""The import graph of edgekit points one way: no cycle, no import from a higher layer, and imports of
edgekit's own modules inside functions only where start-up time asks for them (the CLI, the lazy public face).

The allowed order is written here, low to high; docs/architecture.md explains it. A new module belongs to the
layer of the longest prefix below that names it; a module no prefix names fails the test, so it gets placed.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edgekit": ROOT / "edgekit", "edgekit.converters": ROOT / "converters"}

LAYERS: list[tuple[str, ...]] = [
    # 0 foundation: no edgekit imports above it
    ("edgekit.errors", "edgekit.registry", "edgekit.config", "edgekit.progress", "edgekit.versions",
     "edgekit.debuglog", "edgekit.io", "edgekit.outdir", "edgekit.artifact", "edgekit.graph", "edgekit.quant.spec",
     "edgekit.quiet", "edgekit._reaper", "edgekit.benchmarking.stats", "edgekit.benchmarking.result", "edgekit.report.table",
     "edgekit.verify.tolerances", "edgekit.placement"),
    # 1 the model side: families, data, checkpoints, .pt2 reading, numeric parity
    ("edgekit.models", "edgekit.data", "edgekit.checkpoint", "edgekit.pt2", "edgekit.sample_inputs", "edgekit.verify.parity",
     "edgekit.verify", "edgekit.training.augment", "edgekit.training.tasks"),
    # 2 formats and quantization
    ("edgekit.converters", "edgekit.quant"),
    # 3 using artifacts: sources, bundle verification, benchmarks, reports, devices
    ("edgekit.sources", "edgekit.verify.bundle", "edgekit.verify.variants", "edgekit.benchmarking", "edgekit.report",
     "edgekit.devices", "edgekit.generate", "edgekit.appcode"),
    # 4 training and specialization, recipes
    ("edgekit.lora", "edgekit.training", "edgekit.recipe"),
    # 5 orchestration: conversion into bundles, the pipeline, the public API
    ("edgekit.conversion", "edgekit.documents", "edgekit.adapter_bundle", "edgekit.pipeline", "edgekit.npu", "edgekit.api"),
    # 6 the command line
    ("edgekit.commands", "edgekit.cli", "edgekit.__main__"),
]
# whatever their layer, these never import from the modules named beside them
NEVER = {
    ("edgekit.verify", "edgekit.benchmarking", "edgekit.converters", "edgekit.quant"):
        ("edgekit.lora", "edgekit.commands", "edgekit.conversion", "edgekit.pipeline", "edgekit.api"),
}
# where an edgekit import inside a function is fine: CLI start-up time, the lazy public face
LAZY_OK = ("edgekit.cli", "edgekit.commands", "edgekit.api")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """A package ``__init__`` sits at the highest layer it imports from (an empty one at 0): importing any
    submodule runs it. Any other module sits where the longest prefix in LAYERS puts it."""
    if module in MODULES and MODULES[module].name == "__init__.py" and module != "edgekit":
        return max((layer_of(t) or 0 for t, _, _ in EDGES.get(module, ())), default=0)
    best = None
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if _under(module, prefix) and (best is None or len(prefix) > len(best[1])):
                best = (level, prefix)
    return None if best is None else best[0]


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST, in_function: bool = False):
    """(imported module, line, inside a function) for each edgekit import, TYPE_CHECKING blocks skipped."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, in_function
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield (full if full in MODULES else node.module), node.lineno, in_function
        yield from _imports(node, inner)


def _edges() -> dict[str, set[tuple[str, int, bool]]]:
    """module → (imported edgekit module, line, inside a function); a submodule import also runs its
    parent packages' ``__init__``, so those count too (the lazy root ``edgekit`` does not)."""
    edges: dict[str, set[tuple[str, int, bool]]] = defaultdict(set)
    for module, path in MODULES.items():
        for name, line, lazy in _imports(ast.parse(path.read_text())):
            target = _resolve(name) if name.startswith("edgekit") else None
            while target and target != "edgekit":
                if target != module and not _under(module, target):
                    edges[module].add((target, line, lazy))
                target = target.rpartition(".")[0]
    return edges


EDGES = _edges()


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if m != "edgekit" and layer_of(m) is None] == []


def test_no_import_from_a_higher_layer() -> None:
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)}) at line {line}"
              for m, targets in EDGES.items() for t, line, _ in targets
              if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m)]
    assert upward == []


def test_lower_packages_never_import_orchestration() -> None:
    bad = [f"{m} imports {t} (line {line})" for low, high in NEVER.items() for m, targets in EDGES.items()
           if any(_under(m, p) for p in low) for t, line, _ in targets if any(_under(t, p) for p in high)]
    assert bad == []


def test_no_import_cycle() -> None:
    graph = {m: {t for t, _, _ in targets} for m, targets in EDGES.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert [" → ".join(c) for c in cycles] == []


def test_edgekit_imports_inside_functions_only_where_start_up_needs_them() -> None:
    lazy = [f"{m}:{line} imports {t}" for m, targets in EDGES.items() for t, line, inside in targets
            if inside and not any(_under(m, p) for p in LAZY_OK) and m != "edgekit"]
    assert sorted(set(lazy)) == []


@pytest.mark.parametrize("module", ["edgekit.converters.base", "edgekit.quant.spec", "edgekit.registry"])
def test_the_checker_sees_imports(module: str) -> None:
    """Guards the test itself: known edges are found, so an empty violation list means something."""
    assert any(t == "edgekit.errors" for t, _, _ in EDGES[module]), EDGES[module]


def test_every_package_folder_is_installed() -> None:
    """pyproject lists packages by hand (converters/ installs as edgekit.converters): a folder missing there
    would import here, from the source tree, and be absent from a wheel or a fresh install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {m for m, path in MODULES.items() if path.name == "__init__.py"}
    assert folders - listed == set()


def test_the_cli_tests_support_and_benchmarks_use_only_the_public_face() -> None:
    """The command line, tests/support.py and benchmarks/ import edgekit's public names (``import edgekit``,
    ``from edgekit import X`` with X in ``edgekit.__all__``) and no internal module; the CLI may also import its
    own plumbing: the command modules, the command registry's class, terminal status lines, the debug log."""
    import edgekit

    cli_plumbing = ("edgekit.commands", "edgekit.registry", "edgekit.progress", "edgekit.debuglog")
    users = {"edgekit/cli.py": cli_plumbing, "edgekit/commands/*.py": cli_plumbing, "tests/support.py": (),
             "benchmarks/*.py": ()}
    bad = []
    for pattern, allowed in users.items():
        paths = sorted(ROOT.glob(pattern))
        assert paths, pattern
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module == "edgekit" and node.level == 0:
                    names = [f"edgekit.{alias.name}" for alias in node.names if alias.name not in edgekit.__all__]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {name}" for name in names
                        if _under(name, "edgekit") and name != "edgekit" and not any(_under(name, p) for p in allowed)]
    assert bad == []
