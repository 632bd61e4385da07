"""``matchreplay bots``: bot players (through the client SDK) for a running match."""

from __future__ import annotations

import argparse
import asyncio
import secrets

from client_sdk.bots import run_bots
from server import auth, config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bots", help="play a match with bot players")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/")
    parser.add_argument("--match", required=True)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds (default: to the end)"
    )
    parser.add_argument(
        "--secret", default=None, help="signs the bots' tokens (env MATCHREPLAY_SECRET)"
    )
    parser.add_argument("--secret-file", dest="secret_file", default=None)
    parser.add_argument("--data-dir", dest="data_dir", default=None)
    parser.set_defaults(func=run)


def bot_tokens(secret: str, match: str, count: int) -> list[str]:
    tag = secrets.token_hex(3)
    return [auth.issue(secret, f"bot-{tag}-{i}", "player", match, 24 * 3600) for i in range(count)]


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= 256:
        raise SystemExit("--count must be in 1..256")
    s = config.from_args(args)
    secret = auth.load_secret(s.secret, s.secret_file, s.data_dir)
    clients = asyncio.run(
        run_bots(
            args.url, args.match, bot_tokens(secret, args.match, args.count), duration=args.duration
        )
    )
    print(f"{len(clients)} bots done; reconnects: {sum(c.reconnects for c in clients)}")
    return 0
