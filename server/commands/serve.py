"""``matchreplay serve``: the match server (websockets + HTTP on one port)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from server import config
from server.app import event_loop_factory
from server.app import run as run_server


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the match server")
    config.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = config.from_args(args)

    loop_factory = event_loop_factory()

    async def ready(app: object) -> None:
        loop = "uvloop" if loop_factory is not None else "asyncio"
        print(
            f"matchreplay serving on ws://{settings.host}:{app.port}/ (db {settings.db},"
            f" {loop} event loop)",
            flush=True,
        )  # type: ignore[attr-defined]

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run_server(settings, on_ready=ready))
    return 0
