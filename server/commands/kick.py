"""``matchreplay kick MATCH PLAYER --reason WHY``: an admin removes a player from a live
match on a running server (``POST /api/matches/{id}/kick``; docs/protocol.md section 8)."""

from __future__ import annotations

import argparse

from server.commands.admin_http import add_server_arguments, match_path, post


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kick",
        help="remove a player from a live match",
        description="PLAYER gives its seat up at the next tick and may not sit in MATCH again.",
    )
    parser.add_argument("match", help="match id")
    parser.add_argument("player", help="the player id to remove")
    parser.add_argument("--reason", default="", help="why (stored in the audit trail)")
    add_server_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return post(
        args, "kick", match_path(args.match, "kick"), {"player": args.player, "reason": args.reason}
    )
