"""Progress bars and console output. Progress goes to stderr so `--json` stdout stays clean."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

stderr_console = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator["Bar"]:
    """A progress bar on stderr; ``bar.advance()`` and ``bar.note("text")`` update it."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, console=stderr_console, transient=False) as prog:
        task = prog.add_task(description, total=total, note="")
        yield Bar(prog, task)


class Bar:
    def __init__(self, prog: Progress, task: int) -> None:
        self._prog, self._task = prog, task

    def advance(self, steps: int = 1) -> None:
        self._prog.advance(self._task, steps)

    def note(self, text: str) -> None:
        self._prog.update(self._task, note=text)


def status(message: str) -> None:
    """A one-line status message on stderr."""
    stderr_console.print(message, highlight=False)
