"""``matchreplay leaderboards``: rebuild, catch up and show the leaderboard read model.

``rebuild [BOARD ...]`` folds the event store from position 0 into boards built
aside, then swaps them in with one transaction, and catches up with events
appended since. When a running server holds the read model, the rebuild is
handed to its projection (a request file, see
:func:`~replay.leaderboards.projection.rebuild_request_path`): it builds aside
while its queries keep answering, swaps, and the command follows its progress.
``show BOARD`` prints the top.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from tqdm import tqdm

from replay.leaderboards.definitions import load_definitions
from replay.leaderboards.errors import LeaderboardError, ReadModelBusyError
from replay.leaderboards.projection import (
    LeaderboardProjection,
    boards_path_for,
    rebuild_request_path,
    write_json_atomically,
)
from replay.leaderboards.service import Leaderboards
from replay.store import open_store
from server.config import configured_games


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("leaderboards", help="rebuild or show the leaderboards")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, helptext in [
        ("rebuild", "rebuild boards from position 0 (build aside, then swap)"),
        ("show", "print the top of a board"),
    ]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--db", default="data/matchreplay.db", help="the event store (SQLite)")
        p.add_argument("--boards-db", help="the read model file (default: DB.boards.sqlite)")
        p.add_argument("--config", help="board definitions, TOML or JSON (default: each game's)")
        if name == "rebuild":
            p.add_argument("boards", nargs="*", metavar="BOARD", help="boards (default: all)")
            p.add_argument("--no-progress", action="store_true")
        else:
            p.add_argument("board", metavar="BOARD")
            p.add_argument("--limit", type=int, default=10)
            p.add_argument("--period", default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except LeaderboardError as exc:
        print(f"error: {exc.code}: {exc}")
        return 2


async def _run(args: argparse.Namespace) -> int:
    games = configured_games()
    metrics = games.leaderboard_metrics()
    defs = load_definitions(args.config, metrics) if args.config else games.default_boards()
    store = open_store(args.db, catalogs=games.catalogs())
    await store.open()
    try:
        path = args.boards_db or boards_path_for(args.db)
        projection = LeaderboardProjection(store, path, defs, metrics)
        try:
            await projection.open()
        except ReadModelBusyError:
            if args.action == "show":
                raise
            return await _hand_over(path, args.boards, args.no_progress)
        try:
            if args.action == "show":
                await projection.catch_up()
                page = Leaderboards(projection).top(
                    args.board, limit=args.limit, period=args.period
                )
                print(
                    f"{page['board']} {page['period']} at position {page['position']}, "
                    f"{page['count']} entries"
                )
                for e in page["entries"]:
                    print(f"{e['rank']:>6}  {e['owner']:<24} {e['value']:>10} {e['subscore']:>8}")
                return 0
            last = await store.last_position()
            with tqdm(total=last, unit="ev", unit_scale=True, disable=args.no_progress) as bar:
                read = await projection.rebuild(args.boards or None, progress=bar.update)
                read += await projection.catch_up(progress=bar.update)
            names = ", ".join(args.boards) if args.boards else "all boards"
            print(f"rebuilt {names} from {read} events; position {projection.position}")
            return 0
        finally:
            await projection.close()
    finally:
        await store.close()


async def _hand_over(path: str, boards: list[str], quiet: bool) -> int:
    """Ask the projection of the running server to rebuild, and follow it."""
    request = rebuild_request_path(path)
    if os.path.exists(request):
        print(f"error: a rebuild is already pending ({request})")
        return 2
    write_json_atomically(request, {"boards": boards or None, "state": "requested"})
    print("the read model is held by a running server: its projection rebuilds aside")
    with tqdm(unit="ev", unit_scale=True, disable=quiet) as bar:
        while os.path.exists(request):
            try:
                with open(request) as f:
                    status = json.load(f)
            except (OSError, ValueError):
                status = {}
            if status.get("state") == "failed":
                os.remove(request)
                print(f"error: {status.get('error')}")
                return 2
            if "total" in status:
                bar.total = status["total"]
                bar.n = status.get("done", 0)
                bar.refresh()
            await asyncio.sleep(0.2)
    print(f"rebuilt {', '.join(boards) if boards else 'all boards'} in the running server")
    return 0
