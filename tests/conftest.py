"""Shared fixtures: one real pipeline run of the default recipe, reused by many tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from adb_emulator.testing import private_adb_server
from edgekit.pipeline import RunOutcome, run_pipeline
from edgekit.recipe import load_recipe


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunOutcome]:
    """`edgekit run cnn_digits` as a user would run it (the real recipe, all three formats)."""
    out = tmp_path_factory.mktemp("run") / "cnn_digits"
    outcome = run_pipeline(load_recipe("cnn_digits"), out)
    return out, outcome


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
