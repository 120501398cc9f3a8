"""Shared fixtures: one real pipeline run of the default recipe, reused by many tests."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

# Two xdist workers share the CPU cores: OpenMP threads that spin-wait after each parallel region (libgomp's
# default) steal the other worker's cores; measured on 2 cores, test_quant + test_foreign_models took 362 s wall,
# 11.0 min CPU spinning and 301 s, 6.8 min CPU passive. libgomp reads this once, when torch loads it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from adb_emulator.testing import private_adb_server  # noqa: E402  (torch loads below: the policy is set first)
from edgekit.pipeline import RunOutcome, run_pipeline  # noqa: E402
from edgekit.recipe import load_recipe  # noqa: E402


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, RunOutcome]:
    """`edgekit run cnn_digits` as a user would run it (the real recipe, all three formats), built once per test
    session: under xdist the first worker to ask builds it under a file lock and the others read its report.
    Tests treat it as read-only (they copy a bundle before changing it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    out = shared / "default_run" / "cnn_digits"
    with _exclusive(shared / "default_run.lock"):
        report_path = out / "report.json"
        if report_path.is_file():
            report = json.loads(report_path.read_text())
            return out, RunOutcome(report_path, report, report["rows"])
        return out, run_pipeline(load_recipe("cnn_digits"), out, overwrite=out.exists())


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock`` (one holder across the xdist worker processes)."""
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def checkpoint(default_run) -> Path:
    return default_run[0] / "checkpoint"


@pytest.fixture(scope="session")
def bundle(default_run) -> Path:
    return default_run[0] / "bundle"


@pytest.fixture(scope="module")
def adb_server():
    """A private adb server (own port, HOME, TMPDIR) for one test module; killed afterwards."""
    with private_adb_server() as env:
        yield env
