"""``matchreplay store``: event store maintenance.

* ``copy SRC DST``: copy a whole store between backends, resumable and verified
  (replay/store/copy.py).
* ``verify [--db DB]``: check a whole store (replay/store/verify.py); exit status 0
  when nothing is damaged, 1 listing the damage found, 2 for a usage error.
* ``backup DST [--db DB]``: a consistent online backup of a live SQLite store into
  one new file, verified. PostgreSQL stores are backed up with ``pg_dump``.

See docs/operations.md, "Store integrity".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

from tqdm import tqdm

from replay.errors import ReplayError
from replay.keyframes import load_keyframe
from replay.rules import GameRegistry
from replay.store import open_store, store_file
from replay.store.base import EventStore, Keyframe
from replay.store.copy import copy_store
from replay.store.sqlite import SQLiteRecorder
from replay.store.verify import VerifyReport, verify_store
from server.commands.common import CliError, UsageError, plural, store_opened
from server.config import configured_games

DEFAULT_DB = "data/matchreplay.db"


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
    v = sub.add_parser(
        "verify",
        help="check a whole store: checksums, continuity, match rows, keyframes, the file",
        description="Read every match, batch and keyframe of the store and check them;"
        " exit status 0: no damage, 1: damage found (listed), 2: usage error. Read-only:"
        " runs beside a live server.",
    )
    v.add_argument("--db", default=DEFAULT_DB, help=f"the store (default {DEFAULT_DB})")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=run_verify)
    b = sub.add_parser(
        "backup",
        help="a consistent online backup of a live SQLite store into one file, verified",
        description="Copy the SQLite store as of one moment into the new file DST while"
        " a server keeps writing, then verify the copy. For PostgreSQL use pg_dump.",
    )
    b.add_argument("dst", help="the backup file to create (must not exist)")
    b.add_argument("--db", default=DEFAULT_DB, help=f"the store (default {DEFAULT_DB})")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run_backup)


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


def run_verify(args: argparse.Namespace) -> int:
    async def run() -> VerifyReport:
        # Without catalogs: stored events are checked as stored, not upcast.
        async with store_opened(args.db, create=False, read_only=True) as store:
            return await _verify(store, configured_games(), not args.no_progress)

    report = asyncio.run(run())
    return _print_report(args.db, report)


def run_backup(args: argparse.Namespace) -> int:
    if store_file(args.db) is None:
        raise UsageError(
            f"{args.db} is not an SQLite store: back up PostgreSQL with pg_dump"
            " (docs/operations.md, Store integrity)"
        )
    if os.path.lexists(args.dst):
        raise UsageError(f"{args.dst} exists: a backup is written to a new file")
    partial = args.dst + ".partial"

    async def run() -> VerifyReport:
        async with store_opened(args.db, create=False, read_only=True) as store:
            assert isinstance(store.recorder, SQLiteRecorder)
            await store.recorder.backup(partial)
        async with store_opened(partial, create=False, read_only=True) as copy:
            return await _verify(copy, configured_games(), not args.no_progress)

    try:
        report = asyncio.run(run())
    except BaseException:
        for leftover in (partial, partial + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
    if report.damage:  # the copy is kept for inspection
        print("\n".join(report.damage))
        raise CliError(
            f"the backup does not verify (kept at {partial}): the store itself is likely"
            f" damaged; run matchreplay store verify --db {args.db}",
            "backup_damaged",
        )
    os.replace(partial, args.dst)
    print(
        f"backed up {args.db} to {args.dst}: {_matches(report.matches)},"
        f" {plural(report.events, 'event')}, {plural(report.keyframes, 'keyframe')}; verified"
    )
    return 0


async def _verify(store: EventStore, games: GameRegistry, show_progress: bool) -> VerifyReport:
    with tqdm(unit="ev", unit_scale=True, disable=not show_progress, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return await verify_store(store, _keyframe_check(games), progress)


def _keyframe_check(games: GameRegistry):
    """Loads a keyframe with its game's rules; the reason is what the loader logs."""
    reasons: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reasons.append(record.getMessage())

    logger = logging.getLogger("replay.keyframes")
    logger.addHandler(_Catch())
    logger.propagate = False  # reported in the verify listing, not twice

    def check(game: str, keyframe: Keyframe) -> str | None:
        if game not in games:
            return None  # a game this installation does not know: not checkable here
        reasons.clear()
        state: Any = load_keyframe(games[game], keyframe)
        if state is None:
            return reasons[-1] if reasons else "cannot be loaded"
        return None

    return check


def _print_report(db: str, report: VerifyReport) -> int:
    summary = (
        f"{_matches(report.matches)}, {plural(report.events, 'event')},"
        f" {plural(report.keyframes, 'keyframe')}"
    )
    if not report.damage:
        print(f"{db}: {summary}: no damage found")
        return 0
    for line in report.damage:
        print(line)
    print(f"{db}: {summary}: {plural(len(report.damage), 'problem')} found", file=sys.stderr)
    return 1


def _matches(n: int) -> str:
    return f"{n} match" if n == 1 else f"{n} matches"
