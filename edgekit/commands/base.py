"""The CLI's command registry: each subcommand is one module that registers a Command."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from edgekit.registry import Registry


@dataclass(frozen=True)
class Command:
    """A subcommand: ``configure`` adds its arguments, ``run`` does the work and returns an exit code."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Decorator for a command's run function: ``@command("train", "…", add_args)``."""

    def add(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.register(name)(Command(name, help, configure, run))
        return run

    return add
