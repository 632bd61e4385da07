"""``matchreplay fork MATCH --at TICK``: a running server starts a new live match from the
exact state of a tick of MATCH (``POST /api/matches/{id}/fork``; docs/replay.md)."""

from __future__ import annotations

import argparse

from server.commands.admin_http import add_server_arguments, match_path, post


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fork",
        help="start a new live match from the state of any tick of a match",
        description="The fork starts at TICK with the parent's state; the parent's players"
        " seated then keep their seats (docs/replay.md).",
    )
    parser.add_argument("match", help="the parent match id (running, ended or imported)")
    parser.add_argument("--at", type=int, required=True, help="the parent's tick")
    parser.add_argument("--match-id", dest="match_id", default=None, help="the fork's id")
    add_server_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return post(
        args, "fork", match_path(args.match, "fork"), {"at": args.at, "match_id": args.match_id}
    )
