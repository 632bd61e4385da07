"""The ``matchreplay`` command line.

Each subcommand lives in its own module under ``server/commands/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed arguments, returning an exit status, raising to fail). Every failure is
one line on stderr, ``matchreplay <command>: <message> [<code>]``, with exit
status 2 for a usage error and 1 for anything else (server/commands/common.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from server.commands.common import USAGE, as_cli_error

COMMAND_MODULES: tuple[str, ...] = (
    "server.commands.demo",
    "server.commands.keyframes",
    "server.commands.replay_file",
    "server.commands.serve",
    "server.commands.cluster",
    "server.commands.token",
    "server.commands.bots",
    "server.commands.leaderboards",
    "server.commands.simulate",
    "server.commands.store",
    "server.commands.rewind",
    "server.commands.fork",
    "server.commands.kick",
    "server.commands.audit",
)


class Parser(argparse.ArgumentParser):
    """argparse with usage errors in the one error format (its subcommands' parsers are
    of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help) [bad_argument]\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="matchreplay",
        description="Event-sourced match recording, replay, spectating and leaderboards.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = as_cli_error(exc)
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"matchreplay {args.command}: {message} [{error.code}]", file=sys.stderr, flush=True)
        return error.status


if __name__ == "__main__":
    sys.exit(main())
