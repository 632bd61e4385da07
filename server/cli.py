"""The ``matchreplay`` command line.

Each subcommand lives in its own module under ``server/commands/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed arguments, returning an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "server.commands.demo",
    "server.commands.keyframes",
    "server.commands.replay_file",
    "server.commands.serve",
    "server.commands.token",
    "server.commands.bots",
    "server.commands.leaderboards",
    "server.commands.simulate",
    "server.commands.store",
    "server.commands.rewind",
    "server.commands.fork",
    "server.commands.audit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


if __name__ == "__main__":
    sys.exit(main())
