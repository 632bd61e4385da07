"""``matchreplay keyframes rebuild [MATCH] --db PATH``: (re)build keyframes from the events.

Keyframes are derived data: rebuilding folds each match once from tick 0 and
writes a keyframe every interval, replacing whatever was there (corrupt,
missing, or made with another interval or state format).
"""

from __future__ import annotations

import argparse
import asyncio

from tqdm import tqdm

from replay.keyframes import DEFAULT_KEYFRAME_SECONDS, rebuild_keyframes
from server.commands.common import UsageError, plural, store_opened
from server.config import configured_games

PAGE = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keyframes", help="manage replay keyframes")
    sub = parser.add_subparsers(dest="keyframes_command", required=True, metavar="ACTION")
    rebuild = sub.add_parser("rebuild", help="rebuild the keyframes of one match or of all")
    rebuild.add_argument("match", nargs="?", help="match id (default: every match)")
    rebuild.add_argument("--db", required=True, help="event store (SQLite file)")
    rebuild.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_KEYFRAME_SECONDS,
        help=f"match seconds between keyframes (default {DEFAULT_KEYFRAME_SECONDS:g})",
    )
    rebuild.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        raise UsageError(f"--seconds must be > 0, not {args.seconds}")
    return asyncio.run(_rebuild(args.db, args.match, args.seconds))


async def _rebuild(db: str, match_id: str | None, seconds: float) -> int:
    games = configured_games()
    async with store_opened(db, create=False, catalogs=games.catalogs()) as store:
        if match_id is not None:
            ids = [match_id]
        else:
            ids, offset = [], 0
            while page := await store.list_matches(limit=PAGE, offset=offset):
                ids += [m.match_id for m in page]
                offset += PAGE
        for mid in ids:
            record = await store.get_match(mid)
            with tqdm(total=record.last_tick + 1, desc=mid, unit="tick", leave=False) as bar:
                n = await rebuild_keyframes(store, games, mid, seconds=seconds, progress=bar.update)
            # The count simulate prints: ticks 1..last_tick (tick 0 is the initial state).
            print(f"{mid}: {plural(n, 'keyframe')} over {plural(record.last_tick, 'tick')}")
    return 0
