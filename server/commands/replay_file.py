"""``matchreplay export MATCH -o FILE --db PATH`` and ``matchreplay import FILE --db PATH``.

The file format is docs/replay-format.md. A failed export leaves no file, a failed
import imports nothing (and leaves no store file it would have created); export needs
an existing store.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from replay.replay_file import export_match, import_replay
from server.commands.common import CliError, plural, store_opened
from server.config import configured_games


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="write one match to a replay file (.mrp)")
    export.add_argument("match", help="match id")
    export.add_argument("-o", "--output", required=True, help="replay file to write")
    export.add_argument("--db", required=True, help="event store (SQLite file)")
    export.set_defaults(func=run_export)
    imp = subparsers.add_parser("import", help="import a replay file (.mrp) into a store")
    imp.add_argument("file", help="replay file to read")
    imp.add_argument("--db", required=True, help="event store (SQLite file)")
    imp.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with store_opened(
            args.db, create=False, read_only=True, catalogs=configured_games().catalogs()
        ) as store:
            info = await export_match(store, args.match, args.output)
        size = os.path.getsize(args.output)
        print(
            f"{args.match}: {plural(info.events, 'event')},"
            f" {plural(info.keyframes, 'keyframe')}, {plural(size, 'byte')}"
        )

    asyncio.run(run())
    return 0


def run_import(args: argparse.Namespace) -> int:
    async def run() -> None:
        if not os.path.isfile(args.file):
            raise CliError(f"no replay file at {args.file}", "no_file")
        async with store_opened(
            args.db, create=True, catalogs=configured_games().catalogs()
        ) as store:
            record = await import_replay(args.file, store)
        print(
            f"{record.match_id}: imported {plural(record.version, 'event')}"
            f" up to tick {record.last_tick}"
        )

    asyncio.run(run())
    return 0
