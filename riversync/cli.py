"""The ``riversync`` command: a thin layer over the library.

Each subcommand lives in ``riversync/commands/<name>.py`` and exposes
``register(subparsers)``; the handler it sets returns an exit code.  Typed errors become
one line plus a "Try:" hint and a documented exit code (see docs/reference/cli.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from riversync import __version__

# Exit codes (documented in docs/reference/cli.md).
EXIT_OK = 0
EXIT_WARNING = 1  # `riversync status`: warning; other commands: the operation failed
EXIT_CRITICAL = 2  # `riversync status`: critical; other commands: bad usage or input
EXIT_UNAVAILABLE = 3  # a daemon or file the command needs could not be reached

COMMAND_MODULES: list[str] = [
    # one line per module under riversync/commands/, in the order --help lists them
    "cluster",
    "hub",
    "node",
    "status",
    "conflicts",
    "importxlsx",
    "staging",
    "export",
    "ingest",
    "verify",
    "backup",
    "restore",
    "demo",
    "conformance",
    "bench",
]


class CommandError(Exception):
    """A failure the user can act on: printed as one line and a hint, never a traceback."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_WARNING):
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riversync",
        description="Keep the SQLite databases of several offices in sync through one hub.",
    )
    parser.add_argument("--version", action="version", version=f"riversync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"riversync.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_CRITICAL
    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away is handled below
        return code
    except CommandError as e:
        print(f"riversync: {e}", file=sys.stderr)
        if e.hint:
            print(f"Try: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("riversync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`riversync status | head`): not an error of this command.
        # Point stdout at /dev/null so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    # `python -m riversync.cli` runs this file as __main__; call the imported module's main
    # so that the CommandError the commands raise is the class main() catches.
    from riversync.cli import main as _main

    sys.exit(_main())
