"""The CLI boundary: an unexpected crash is one line (traceback in the debug log), warnings and library log
records stay off the terminal without --debug, and --debug still shows everything."""

from __future__ import annotations

import logging
import sys
import warnings

import pytest

from edgekit.cli import main
from edgekit.debuglog import LOG_ENV


@pytest.fixture
def crashing_list(monkeypatch):
    """`edgekit list models` made to warn, then crash with a non-edgekit exception deep inside."""
    import edgekit.commands.list as listing

    def crash():
        warnings.warn("a chatty third-party library warning", UserWarning)
        library = logging.getLogger("some.library")  # configured like torch's: its own stderr handler
        library.propagate, library.handlers = False, [logging.StreamHandler(sys.stderr)]
        library.warning("a library's log record on stderr")
        raise ValueError("boom inside a library\nsecond line of the library's message")

    monkeypatch.setitem(listing.LISTINGS._items, "models", crash)


def test_crash_is_one_line_and_the_traceback_goes_to_the_debug_log(crashing_list, capsys, tmp_path, monkeypatch):
    log = tmp_path / "debug.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    assert main(["list", "models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgekit: error: ValueError: boom inside a library")
    assert str(log) in err and "Traceback" not in err and "chatty" not in err and "log record" not in err
    text = log.read_text()
    assert "Traceback" in text and "second line of the library's message" in text and "chatty" in text
    assert "WARNING some.library: a library's log record on stderr" in text


def test_debug_shows_the_traceback_and_the_warning(crashing_list, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "debug.log"))
    with pytest.raises(ValueError, match="boom"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        main(["--debug", "list", "models"])
    assert any("chatty" in str(w.message) for w in seen)
    assert not (tmp_path / "debug.log").exists()


def test_an_unwritable_debug_log_does_not_hide_the_error(crashing_list, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "no" / "such" / "folder" / "debug.log"))
    assert main(["list", "models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: ValueError: boom") and "run with --debug" in err


def test_a_reader_that_leaves_the_pipe_is_not_an_error():
    """`edgekit list formats --json | head -1`: the closed pipe ends edgekit quietly with 141, no traceback line."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "list", "formats", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before edgekit writes (its start-up takes far longer than this)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "error" not in err and "Traceback" not in err, err
