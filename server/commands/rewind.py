"""``matchreplay rewind MATCH --to TICK``: an admin rewinds a live match on a running server
(``POST /api/matches/{id}/rewind``; docs/replay.md "Rewinds and forks")."""

from __future__ import annotations

import argparse

from server.commands.admin_http import add_server_arguments, match_path, post


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rewind",
        help="rewind a live match to an earlier tick",
        description="The match goes on from the exact state of TICK at its next tick.",
    )
    parser.add_argument("match", help="match id")
    parser.add_argument("--to", type=int, required=True, help="the tick to go back to")
    parser.add_argument("--reason", default="", help="why (stored in the rewound event)")
    add_server_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return post(
        args, "rewind", match_path(args.match, "rewind"), {"to": args.to, "reason": args.reason}
    )
