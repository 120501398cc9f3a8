"""CLI subcommands. Importing this package registers every command."""

from edgekit.commands import adapt, app_code, bench, convert, devices, generate, list, report, run, train, verify  # noqa: F401  (register commands)
from edgekit.commands.base import COMMANDS, Command, command

__all__ = ["COMMANDS", "Command", "command"]
