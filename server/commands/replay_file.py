"""``matchreplay export MATCH -o FILE --db PATH`` and ``matchreplay import FILE --db PATH``.

The file format is docs/replay-format.md. Errors print ``error [code]: message``
and exit with status 1; a failed export leaves no file, a failed import
imports nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from replay.errors import ReplayError
from replay.replay_file import export_match, import_replay
from replay.store import open_store
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
        async with open_store(args.db, catalogs=configured_games().catalogs()) as store:
            info = await export_match(store, args.match, args.output)
        size = os.path.getsize(args.output)
        print(f"{args.match}: {info.events} events, {info.keyframes} keyframes, {size} bytes")

    return _report(run())


def run_import(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with open_store(args.db, catalogs=configured_games().catalogs()) as store:
            record = await import_replay(args.file, store)
        print(f"{record.match_id}: imported {record.version} events up to tick {record.last_tick}")

    return _report(run())


def _report(job: object) -> int:
    try:
        asyncio.run(job)  # type: ignore[arg-type]
    except ReplayError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error [io]: {exc}", file=sys.stderr)
        return 1
    return 0
