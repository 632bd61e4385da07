"""``matchreplay serve``: the match server (websockets + HTTP on one port).

A server that cannot start (the port taken, a file that is not a store, the store
held by another server, a bad setting) ends at once with one line and exit status 1
(2 for a bad setting).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
from collections.abc import Awaitable, Callable

from replay.leaderboards.errors import ReadModelBusyError
from replay.protocol import SUBPROTOCOL
from server import config
from server.app import App, event_loop_factory
from server.app import run as run_server
from server.commands.common import CliError, check_server_store, listen_error


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the match server",
        description="Run the match server: websockets and HTTP on one port.",
    )
    config.add_arguments(parser)
    parser.set_defaults(func=run)


def configure_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # websockets logs every HTTP request and connection at INFO: two lines per request
    # drown what the server itself says.
    logging.getLogger("websockets").setLevel(max(level, logging.WARNING))


def run(args: argparse.Namespace) -> int:
    configure_logging(logging.INFO)
    settings = config.from_args(args)
    check_server_store(settings.db)
    loop_factory = event_loop_factory()

    async def ready(app: App) -> None:
        loop = "uvloop" if loop_factory is not None else "asyncio"
        print(
            # The first line's form is what scripts read (tests, benchmarks): keep it.
            f"matchreplay serving on ws://{settings.host}:{app.port}/ws (db {settings.db},"
            f" {loop} event loop)\n{how_to_use(app, settings)}",
            flush=True,
        )

    serve_until_stopped(settings, lambda: run_server(settings, on_ready=ready), loop_factory)
    return 0


def serve_until_stopped(
    settings: config.Settings,
    server: Callable[[], Awaitable[None]],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> None:
    """Run ``server`` to its end; a failure to start becomes one line (a CliError)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(server())
        except ReadModelBusyError:
            raise CliError(
                f"the store {settings.db} is in use by another server (its leaderboard read"
                " model is locked): one server writes a store at a time",
                "store_busy",
            ) from None
        except OSError as exc:
            raise listen_error(exc, settings.host, settings.port) or exc from None


def how_to_use(app: App, settings: config.Settings) -> str:
    """Where to look and how to begin: the lines printed when the server is up."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{app.port}"
    origin = app.secret_origin
    sign = "" if settings.secret else f" --secret-file {shlex.quote(origin)}"
    bearer = '-H "Authorization: Bearer $ADMIN"'
    create = f"curl -X POST {bearer} '{base}/api/matches?game={app.games.default}'"
    return f"""  viewer      {base}/
  websocket   ws://{host}:{app.port}/ws   (subprotocol {SUBPROTOCOL})
  secret      {origin}
  an admin token:  ADMIN=$(matchreplay token admin --role admin{sign})
  a match:         {create}
  a player token:  matchreplay token alice --match MATCH_ID{sign}"""
