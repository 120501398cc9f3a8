"""CLI subcommands. Importing this package registers every command."""

from edgekit.commands import adapt, bench, convert, devices, generate, list, run, train, verify  # noqa: F401  (register commands)
from edgekit.commands.base import COMMANDS, Command, command

__all__ = ["COMMANDS", "Command", "command"]
