"""``matchreplay store copy SRC DST``: copy a whole event store between backends.

SRC and DST are store URLs (an SQLite file path or ``sqlite:///path``,
``postgresql://...``). The copy is resumable (run the same command again after an
interruption) and verified at the end (event counts and per-match stream hashes);
see replay/store/copy.py and docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tqdm import tqdm

from replay.errors import ReplayError
from replay.store import open_store
from replay.store.copy import copy_store


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "store", help="event store maintenance", description="Event store maintenance."
    )
    sub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    c = sub.add_parser(
        "copy",
        help="copy a whole store to another (SQLite <-> PostgreSQL), resumable and verified",
        description="Copy every match, event and keyframe of SRC into DST (empty, or a"
        " partial copy of SRC to resume), then verify event counts and stream hashes.",
    )
    c.add_argument("src", help="source store URL (a file path, sqlite:///path, postgresql://...)")
    c.add_argument("dst", help="destination store URL")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(_copy(args.src, args.dst, not args.no_progress))
    except ReplayError as exc:
        print(f"matchreplay store copy: {exc}", file=sys.stderr)
        return 1
    print(
        f"copied {report.matches} matches, {report.events} events"
        f" ({report.copied_events} by this run), {report.keyframes} keyframes; verified"
    )
    return 0


async def _copy(src_url: str, dst_url: str, show_progress: bool):
    # The source without catalogs: events are copied with their stored versions.
    async with open_store(src_url) as src, open_store(dst_url) as dst:
        with tqdm(unit="ev", unit_scale=True, disable=not show_progress) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            return await copy_store(src, dst, progress)
