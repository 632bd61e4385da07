"""``matchreplay token``: issue a signed access token with the server's secret.

The secret is read, never made up: a secret generated here (say, in another working
directory) would sign tokens the server refuses.
"""

from __future__ import annotations

import argparse

from server import auth, config
from server.commands.common import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "token",
        help="issue an access token",
        description="Print a token signed with the server's secret: --secret, --secret-file,"
        " MATCHREPLAY_SECRET(_FILE), else <data dir>/secret as the server created it.",
    )
    parser.add_argument("player", help="player id (the token's subject)")
    parser.add_argument(
        "--role",
        choices=("player", "spectator", "admin"),
        default="player",
        help="what the token allows (default player)",
    )
    parser.add_argument("--match", default=auth.ANY_MATCH, help="match id, or * for any")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    add_secret_arguments(parser)
    parser.set_defaults(func=run)


def add_secret_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret", default=None, help="the signing key (env MATCHREPLAY_SECRET)")
    parser.add_argument(
        "--secret-file",
        dest="secret_file",
        default=None,
        help="a file holding the key, as the server prints it at start",
    )
    parser.add_argument(
        "--data-dir",
        dest="data_dir",
        default=None,
        help="the server's data directory, holding its generated secret (default data)",
    )


def server_secret(args: argparse.Namespace) -> str:
    """The server's signing secret as the arguments and environment locate it."""
    s = config.from_args(args)
    return auth.load_secret(s.secret, s.secret_file, s.data_dir, create=False)


def run(args: argparse.Namespace) -> int:
    secret = server_secret(args)
    try:
        token = auth.issue(secret, args.player, args.role, args.match, args.ttl)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(token)
    return 0
