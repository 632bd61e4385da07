"""``matchreplay token``: issue a signed access token with the server's secret."""

from __future__ import annotations

import argparse

from server import auth, config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("token", help="issue an access token")
    parser.add_argument("player", help="player id (the token's subject)")
    parser.add_argument("--role", choices=("player", "spectator", "admin"), default="player")
    parser.add_argument("--match", default=auth.ANY_MATCH, help="match id, or * for any")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    parser.add_argument("--secret", default=None, help="env MATCHREPLAY_SECRET")
    parser.add_argument("--secret-file", dest="secret_file", default=None)
    parser.add_argument("--data-dir", dest="data_dir", default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    s = config.from_args(args)
    secret = auth.load_secret(s.secret, s.secret_file, s.data_dir)
    print(auth.issue(secret, args.player, args.role, args.match, args.ttl))
    return 0
