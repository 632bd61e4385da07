"""``matchreplay simulate``: generate a bot match offline, straight into the event store.

No network: the game's bots play through the match machine (replay.offline)
and every tick's events are appended as one batch, exactly the layout the live
server writes, with match metadata. Replay tests and benchmarks use it to get
realistic matches of any size.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from tqdm import tqdm

from replay.codec import encode_batch
from replay.events import NewEvent
from replay.keyframes import rebuild_keyframes
from replay.offline import bot_ids, simulate
from replay.rules import GameRegistry, Rules
from replay.store import MatchRecord
from server.commands.common import UsageError, plural, store_opened
from server.config import configured_games


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="generate a bot match offline into an event store",
        description="Run a game's bots through its rules (no network) and store the match.",
    )
    p.add_argument("--db", required=True, help="event store: SQLite file path or sqlite:///path")
    p.add_argument("--game", default=None, help="the game (default: the first one known)")
    p.add_argument("--players", type=int, default=10, help="bots in the match (2-256)")
    p.add_argument("--minutes", type=float, default=5.0, help="match length (time limit)")
    p.add_argument("--tick-rate", type=int, default=30, help="ticks per second")
    p.add_argument("--seed", type=int, default=0, help="match seed (spawns and bots)")
    p.add_argument("--match-id", default=None, help="default: sim-<seed>-<players>p")
    p.add_argument(
        "--batch-ticks",
        type=int,
        default=None,
        help="ticks per appended batch (default: one second's worth; 1 = like the live server)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    games = configured_games()
    try:
        rules = games[args.game or games.default]
        settings = rules.bot_match_settings(args.players, args.minutes * 60, args.tick_rate)
    except (LookupError, ValueError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    if args.batch_ticks is not None and args.batch_ticks < 1:
        raise UsageError("--batch-ticks must be at least 1")
    if args.players < 2:
        raise UsageError("--players must be at least 2")
    match_id = args.match_id or f"sim-{args.seed}-{args.players}p"
    return asyncio.run(_simulate(args, games, rules, settings, match_id))


async def _simulate(
    args: argparse.Namespace, games: GameRegistry, rules: Rules, settings: dict, match_id: str
) -> int:
    started = time.perf_counter()
    total_ticks = round(args.minutes * 60 * args.tick_rate) + 1  # + the tick of joins and start
    events = nbytes = ticks = 0
    async with store_opened(args.db, create=True, catalogs=games.catalogs()) as store:
        await store.create_match(
            MatchRecord(
                match_id=match_id,
                game=rules.name,
                rules_version=rules.version,
                tick_rate=args.tick_rate,
                players=tuple(bot_ids(args.players)),
                settings=settings,
                seed=args.seed,
                status="running",
            )
        )
        version = 0
        per_batch = args.batch_ticks or args.tick_rate
        batch: list[NewEvent] = []
        pending: asyncio.Task | None = None

        async def flush() -> None:
            nonlocal pending, version, events, nbytes, batch
            # Invariant: at most one append in flight, so batches land in tick order
            # while the next ticks are simulated on this thread.
            if pending is not None:
                await pending
                pending = None
            if batch:
                pending = asyncio.ensure_future(store.append(match_id, batch, version))
                version += len(batch)
                events += len(batch)
                nbytes += len(encode_batch(batch))
                batch = []

        with tqdm(total=total_ticks, unit="tick", desc=match_id, mininterval=0.5) as bar:
            for out in simulate(rules, args.players, settings, args.seed):
                ticks += 1
                bar.update(1)
                batch += out.events
                if ticks % per_batch == 0:
                    await flush()
            await flush()
            await flush()  # waits for the last append
        await store.update_match(match_id, status="ended", ended_at=time.time())
        # Keyframes are derived data: one fold over the stored events (docs/replay.md).
        keyframes = await rebuild_keyframes(store, games, match_id)
        # The match's ticks are 1..last_tick, the count `keyframes rebuild` prints too.
        last_tick = (await store.get_match(match_id)).last_tick
    elapsed = time.perf_counter() - started
    seconds = (ticks - 1) / args.tick_rate
    print(f"match {match_id} ({plural(keyframes, 'keyframe')})")
    print(
        f"{plural(last_tick, 'tick')} ({seconds:.0f} s of play at {args.tick_rate} Hz),"
        f" {plural(events, 'event')}, {plural(nbytes, 'byte')}"
        f" ({nbytes / max(1.0, seconds * args.players):.1f} B/player-s),"
        f" simulated in {elapsed:.1f} s ({seconds / elapsed:.1f}x real time)"
    )
    return 0
