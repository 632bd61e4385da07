"""``matchreplay demo`` (``make run``): the server with a demo match of bots.

Starts the real server on 127.0.0.1:8765 (``make run PORT=...`` for another port;
SQLite under ./data/), creates a match of the default game (its
``Rules.demo_settings``) played by bots through the client SDK (a new one whenever the
last ends), prints where to look and ready-made tokens, and runs until Ctrl-C
(a graceful shutdown: the match in progress is flushed and marked interrupted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from client_sdk.bots import run_bots
from server import auth, config
from server.app import App, event_loop_factory
from server.commands.bots import bot_tokens
from server.commands.common import UsageError, check_server_store
from server.commands.serve import configure_logging, how_to_use, serve_until_stopped

SPECTATING = {"public_spectating": True, "spectator_delay": 3.0}
"""Anyone may open the viewer without a token, a few seconds behind (anti-ghosting)."""


def _demo_game() -> tuple[str, dict, range]:
    """The default game, its demo settings, and the bots a match may have: at least its
    minimum to have a match, at most its seats."""
    games = config.configured_games()
    rules = games[games.default]
    limits = rules.limits(rules.normalize_settings(rules.demo_settings))
    return rules.name, dict(rules.demo_settings), range(limits.min_players, limits.max_players + 1)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the server with a demo match of bots",
        description="Run the server with a match of the default game played by bots, a new one"
        " whenever"
        " the last ends, until Ctrl-C. Other settings come from the MATCHREPLAY_* environment"
        " variables (docs/operations.md).",
    )
    parser.add_argument(
        "--host", default=None, help="listen address (env MATCHREPLAY_HOST, default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="listen port (env MATCHREPLAY_PORT, default 8765; 0: any free port)",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="the SQLite event store (env MATCHREPLAY_DB, default data/matchreplay.db)",
    )
    parser.add_argument(
        "--bots",
        type=int,
        default=None,
        help="bots per match, from the game's minimum to its seats (default: its seats - 2)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    game, settings_, allowed = _demo_game()
    bots = args.bots if args.bots is not None else max(allowed.start, allowed.stop - 3)
    if bots not in allowed:
        raise UsageError(f"--bots must be in {allowed.start}..{allowed.stop - 1}, not {bots}")
    configure_logging(logging.WARNING)
    overrides = {k: v for k in ("host", "port", "db") if (v := getattr(args, k)) is not None}
    settings = config.from_args(None, **overrides)
    check_server_store(settings.db)
    serve_until_stopped(
        settings, lambda: _demo(settings, game, settings_ | SPECTATING, bots), event_loop_factory()
    )
    return 0


async def _demo(settings: config.Settings, game: str, match_settings: dict, bots: int) -> None:
    app = App(settings)
    await app.start()
    base = f"http://{settings.host}:{app.port}"
    admin = auth.issue(app.secret, "admin", "admin", ttl=7 * 24 * 3600)
    spectator = auth.issue(app.secret, "viewer", "spectator", ttl=7 * 24 * 3600)
    print(
        f"""matchreplay demo is running (Ctrl-C stops it gracefully)
{how_to_use(app, settings)}
  health      {base}/healthz
  metrics     {base}/metrics
  matches     {base}/api/matches
  event store {settings.db}
  admin token     {admin}
  spectator token {spectator}
  bots: {bots} per match, a new match whenever one ends""",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def matches() -> None:
        while True:
            match = await app.lobby.create(game, match_settings, start_players=bots)
            print(
                f"  match {match.match_id}: {bots} bots playing, watch at"
                f" {base}/?match={match.match_id}",
                flush=True,
            )
            await run_bots(
                f"ws://{settings.host}:{app.port}/ws",
                match.match_id,
                bot_tokens(app.secret, match.match_id, bots),
            )
            info = await app.lobby.describe(match.match_id)
            print(f"  match {match.match_id}: {info['status']} at tick {info['tick']}", flush=True)

    player = asyncio.create_task(matches())
    await stop.wait()
    player.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await player
    await app.stop()
    print("stopped; every event is stored", flush=True)
