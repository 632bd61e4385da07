"""``matchreplay audit MATCH --db PATH [--player P] [--from T] [--to T] [--json]``: who did
what to a match, when and why (replay/audit.py), read straight from the event store."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from replay.audit import MAX_AUDIT_PAGE, audit
from replay.engine import ReplayEngine
from replay.errors import ReplayError
from replay.store import open_store
from server.config import configured_games


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="a match's audit trail: applied inputs, joins, sessions, admin actions",
        description="Every input applied (player, seq, tick), seats, sessions and admin actions.",
    )
    parser.add_argument("match", help="match id")
    parser.add_argument("--db", required=True, help="event store: SQLite file path or URL")
    parser.add_argument("--player", default=None, help="only this player's entries")
    parser.add_argument("--from", dest="from_tick", type=int, default=0, help="first tick")
    parser.add_argument("--to", dest="to_tick", type=int, default=None, help="last tick")
    parser.add_argument("--limit", type=int, default=1000, help="entries per page")
    parser.add_argument("--all", action="store_true", help="every page, not only the first")
    parser.add_argument("--json", action="store_true", help="one JSON object per page")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_AUDIT_PAGE:
        print(f"matchreplay audit: --limit must be in [1, {MAX_AUDIT_PAGE}]", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except ReplayError as exc:
        print(f"matchreplay audit: {exc} [{exc.code}]", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    games = configured_games()
    async with open_store(args.db, catalogs=games.catalogs()) as store:
        engine = ReplayEngine(store, games, cache_bytes=0)
        from_tick: int | None = args.from_tick
        while from_tick is not None:
            page = await audit(
                engine,
                args.match,
                player=args.player,
                from_tick=from_tick,
                to_tick=args.to_tick,
                limit=args.limit,
            )
            if args.json:
                print(json.dumps(page))
            else:
                for entry in page["entries"]:
                    print(_line(entry))
                if page["next_from"] is not None and not args.all:
                    print(f"... more from tick {page['next_from']} (--from {page['next_from']})")
            from_tick = page["next_from"] if args.all else None
    return 0


def _line(entry: dict[str, Any]) -> str:
    rest = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("kind", "tick"))
    return f"{entry['tick']:>8} {entry['kind']:<8} {rest}"
