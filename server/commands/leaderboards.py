"""``matchreplay leaderboards``: rebuild, catch up and show the leaderboard read model.

``rebuild [BOARD ...]`` folds the event store from position 0 into boards built
aside, then swaps them in with one transaction, and catches up with events
appended since. When a running server holds the read model, the rebuild is
handed to its projection (a request file, see
:func:`~replay.leaderboards.projection.rebuild_request_path`): it builds aside
while its queries keep answering, swaps, and the command follows its progress.
``show BOARD`` prints the top. It only reads the read model (no lock, nothing
written: it works beside a running server, whose projection keeps the file current)
and folds in memory whatever the store holds beyond its checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from tqdm import tqdm

from replay.leaderboards.definitions import load_definitions
from replay.leaderboards.errors import ReadModelBusyError
from replay.leaderboards.projection import (
    LeaderboardProjection,
    boards_path_for,
    rebuild_request_path,
    write_json_atomically,
)
from replay.leaderboards.service import Leaderboards
from server.commands.common import CliError, UsageError, coded_error, plural, store_opened
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
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
        else:
            p.add_argument("board", metavar="BOARD", help="the board's id (e.g. kills)")
            p.add_argument("--limit", type=int, default=10, help="entries to print (default 10)")
            p.add_argument(
                "--period", default=None, help="a past period's key (default: the current one)"
            )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "show" and not args.limit > 0:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    games = configured_games()
    metrics = games.leaderboard_metrics()
    defs = load_definitions(args.config, metrics) if args.config else games.default_boards()
    # The read model is derived from the store: without a store there is nothing to show.
    # The store is only read (the boards are another file): it works beside a server.
    async with store_opened(
        args.db, create=False, read_only=True, catalogs=games.catalogs()
    ) as store:
        path = args.boards_db or boards_path_for(args.db)
        projection = LeaderboardProjection(
            store, path, defs, metrics, read_only=args.action == "show"
        )
        try:
            await projection.open()
        except ReadModelBusyError:  # a writer (rebuild) beside the server's projection
            return await _hand_over(path, args.boards, args.no_progress)
        try:
            if args.action == "show":
                await projection.catch_up()
                page = Leaderboards(projection).top(
                    args.board, limit=args.limit, period=args.period
                )
                print(
                    f"{page['board']} ({page['period']}) at position {page['position']}:"
                    f" {plural(page['count'], 'entry')}"
                )
                print(_ROW.format("rank", "player", "value", "subscore"))
                for e in page["entries"]:
                    print(_ROW.format(e["rank"], e["owner"], e["value"], e["subscore"]))
                return 0
            last = await store.last_position()
            with tqdm(total=last, unit="ev", unit_scale=True, disable=args.no_progress) as bar:
                read = await projection.rebuild(args.boards or None, progress=bar.update)
                read += await projection.catch_up(progress=bar.update)
            names = ", ".join(args.boards) if args.boards else "all boards"
            print(f"rebuilt {names} from {plural(read, 'event')}; position {projection.position}")
            return 0
        finally:
            await projection.close()


_ROW = "{:>6}  {:<24} {:>10} {:>8}"
"""A row of ``show``: rank, player, value, subscore (the header uses it too)."""


async def _hand_over(path: str, boards: list[str], quiet: bool) -> int:
    """Ask the projection of the running server to rebuild, and follow it."""
    request = rebuild_request_path(path)
    if os.path.exists(request):
        raise CliError(f"a rebuild is already pending ({request})", "rebuild_pending")
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
                code, _, message = str(status.get("error") or "").partition(": ")
                raise coded_error(message or "the server's rebuild failed", code or "failed")
            if "total" in status:
                bar.total = status["total"]
                bar.n = status.get("done", 0)
                bar.refresh()
            await asyncio.sleep(0.2)
    print(f"rebuilt {', '.join(boards) if boards else 'all boards'} in the running server")
    return 0
