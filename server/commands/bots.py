"""``matchreplay bots``: bot players (through the client SDK) for a running match.

It reports how the match went for them: ended (exit 0), still running when
``--duration`` ran out (exit 0), interrupted or lost (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus

from client_sdk.bots import run_bots
from client_sdk.game_client import ClientClosed, GameClient
from server import auth
from server.commands.common import CliError, UsageError, plural
from server.commands.token import add_secret_arguments, server_secret

MAX_BOTS = 256


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bots",
        help="play a match with bot players",
        description="Connect bot players to a running server's match and play it.",
    )
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:8765/ws",
        help="the server's websocket URL (ws:// or wss://)",
    )
    parser.add_argument(
        "--nodes",
        default="",
        help="other nodes of a cluster, comma-separated websocket URLs: the bots reconnect"
        " through them when their node goes away (they also learn them from GET /api/nodes)",
    )
    parser.add_argument("--match", required=True, help="the match id")
    parser.add_argument("--count", type=int, default=4, help=f"bots, 1..{MAX_BOTS} (default 4)")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds (default: to the end)"
    )
    add_secret_arguments(parser)
    parser.set_defaults(func=run)


def bot_tokens(secret: str, match: str, count: int) -> list[str]:
    tag = secrets.token_hex(3)
    return [auth.issue(secret, f"bot-{tag}-{i}", "player", match, 24 * 3600) for i in range(count)]


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= MAX_BOTS:
        raise UsageError(f"--count must be in 1..{MAX_BOTS}, not {args.count}")
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, not {args.duration}")
    if urlsplit(args.url).scheme not in ("ws", "wss"):
        raise UsageError(f"--url must be a websocket URL (ws://HOST:PORT/ws), not {args.url!r}")
    tokens = bot_tokens(server_secret(args), args.match, args.count)
    try:
        nodes = [u.strip() for u in args.nodes.split(",") if u.strip()]
        clients = asyncio.run(
            run_bots(args.url, args.match, tokens, duration=args.duration, nodes=nodes)
        )
    except ClientClosed as exc:
        raise CliError(
            f"the server closed the connection ({exc.code}): {exc.reason}", "refused"
        ) from None
    except InvalidStatus as exc:
        raise CliError(
            f"the server at {args.url} refused the websocket: HTTP {exc.response.status_code}",
            "refused",
        ) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise CliError(
            f"cannot connect to {args.url}: {getattr(exc, 'strerror', None) or exc or 'timed out'}"
            " (is the server running there?)",
            "unreachable",
        ) from None
    summary = outcome(args.match, clients)
    ended = clients[0].ended
    if ended is not None and ended.status != "ended":
        raise CliError(summary, ended.status)  # interrupted: not what a caller waits for
    if ended is None and args.duration is None:
        raise CliError(f"{summary}: the connection was lost", "connection_lost")
    print(summary)
    return 0


def outcome(match_id: str, clients: list[GameClient]) -> str:
    """What the bots saw of the match, in one line."""
    played = f"{plural(len(clients), 'bot')} played match {match_id}"
    reconnects = plural(sum(c.reconnects for c in clients), "reconnect")
    ended = clients[0].ended
    if ended is None:
        return f"{played} up to tick {clients[0].tick} (not over); {reconnects}"
    return f"{played}: {ended.status} at tick {ended.tick} ({ended.reason}); {reconnects}"
