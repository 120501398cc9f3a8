"""The `edgekit` command line: parses arguments, calls library functions, prints."""

from __future__ import annotations

import argparse
import os
import sys

from edgekit import EdgekitError, __version__
from edgekit.commands import COMMANDS
from edgekit.debuglog import log_exception, library_output_to_log


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekit",
        description="Train, adapt, quantize, convert, verify and benchmark models for phones.",
        exit_on_error=False,  # a bad flag value is one `edgekit: error:` line, exit 1 (see main)
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        cmd = COMMANDS.get(name)
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, exit_on_error=False)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except argparse.ArgumentError as exc:  # a flag's value: edgekit/commands/validate.py says what is allowed
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return 1
    with library_output_to_log(enabled=not args.debug) as log:
        return _run(args, log)


def _run(args: argparse.Namespace, log) -> int:
    """Run the command; every error becomes one line (the traceback goes to the debug log, or with
    ``--debug`` to the terminal)."""
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edgekit bench X --json | head`: the reader left; not an error of edgekit's
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 141  # 128 + SIGPIPE, as a shell reports a command the pipe closed on
    except EdgekitError as exc:
        if args.debug:
            _print_captured(exc)
            raise
        log_exception(log, exc)
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI boundary turns crashes into one line
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = log_exception(log, exc)
        details = f"traceback in {where}; " if where else ""
        print(f"edgekit: error: {type(exc).__name__}: {first} ({details}run with --debug to print it)",
              file=sys.stderr)
        return 1


def _print_captured(exc: BaseException) -> None:
    """With --debug, show what a converter library printed before it failed (normally hidden)."""
    while exc is not None:
        captured = getattr(exc, "captured_output", None)
        if captured:
            print(f"--- output of the failed step ---\n{captured}\n---", file=sys.stderr)
            return
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


if __name__ == "__main__":
    sys.exit(main())
