"""Matches for the leaderboard tests, recorded into a real SQLite store: arena's
(the offline generator's bots, several matches played at once, interleaved in the
global order the way a server running them concurrently would write them) and
tug of war's (tests/games/tug.py: the proof that boards need no arena)."""

from __future__ import annotations

import asyncio
import random
import time

from games import ARENA, GAMES, open_test_store

from replay.offline import simulate
from replay.rules import JOIN, START, Command, Rejection
from replay.store.base import EventStore, MatchRecord

PUBLIC = {"public_spectating": True, "spectator_delay": 0.0}
"""The options of a match anyone may watch live: its results reach the boards at once."""


async def record_matches(
    store: EventStore,
    count: int = 4,
    *,
    players: int = 8,
    seconds: float = 20.0,
    tick_rate: int = 30,
    seed: int = 1,
    prefix: str = "m",
    created_at: float | None = None,
    end: bool = True,
    options: dict[str, object] = PUBLIC,
) -> list[str]:
    """Play ``count`` matches tick-interleaved into ``store``; returns their ids."""
    rules = ARENA
    created_at = time.time() if created_at is None else created_at
    ids, runs, versions = [], [], []
    for i in range(count):
        mid = f"{prefix}{i}"
        settings = ARENA.bot_match_settings(players, seconds, tick_rate)
        await store.create_match(
            MatchRecord(
                mid,
                "arena",
                rules.version,
                tick_rate,
                settings=settings,
                seed=seed + i,
                status="running",
                created_at=created_at,
                options=dict(options),
            )
        )
        ids.append(mid)
        runs.append(simulate(ARENA, players, settings, seed + i))
        versions.append(0)
    live = list(range(count))
    while live:
        wave = []
        for _ in range(50):
            for i in list(live):
                out = next(runs[i], None)
                if out is None:
                    live.remove(i)
                    continue
                if out.events:
                    wave.append(store.append(ids[i], out.events, versions[i]))
                    versions[i] += len(out.events)
        await asyncio.gather(*wave)
    if end:
        for mid in ids:
            await store.update_match(mid, status="ended", ended_at=time.time())
    return ids


async def fill(path: str, **kwargs: object) -> list[str]:
    store = open_test_store(path, synchronous="NORMAL")
    await store.open()
    try:
        return await record_matches(store, **kwargs)  # type: ignore[arg-type]
    finally:
        await store.close()


TUG_POOL = tuple(f"puller-{i:02d}" for i in range(10))
"""Tug players recur across matches, so their boards add up."""


async def record_tug_matches(
    store: EventStore,
    count: int = 4,
    *,
    players: int = 4,
    seed: int = 1,
    prefix: str = "tug",
    options: dict[str, object] = PUBLIC,
    end: bool = True,
) -> list[str]:
    """Play ``count`` tug-of-war matches (random pulls, seeded) into ``store``, one
    after the other; returns their ids. Each is played to a won rope."""
    rules = GAMES["tug"]
    ids = []
    for i in range(count):
        mid, rng = f"{prefix}{i}", random.Random(seed + i)
        names = rng.sample(TUG_POOL, players)
        settings = rules.normalize_settings({"target": 25})
        await store.create_match(
            MatchRecord(
                mid,
                "tug",
                rules.version,
                settings["tick_rate"],
                players=tuple(names),
                settings=settings,
                seed=seed + i,
                status="running",
                options=dict(options),
            )
        )
        state, version = rules.initial_state(settings, seed + i), 0
        commands = [Command(JOIN, p, {"team": k % 2}) for k, p in enumerate(names)]
        tick = 0
        while not rules.is_over(state):
            tick += 1
            events = []
            for c in commands if tick == 1 else [Command(START, "")] if tick == 2 else []:
                decided = rules.decide(state, tick, c)
                assert not isinstance(decided, Rejection), decided
                rules.evolve(state, decided, tick)
                events += decided
            inputs = {p: rules.validate_input(state, p, [rng.random()]) for p in names}
            ticked = rules.tick(state, tick, inputs)
            rules.evolve(state, ticked, tick)
            events += ticked
            if events:
                await store.append(mid, events, version)
                version += len(events)
        if end:
            await store.update_match(mid, status="ended", ended_at=time.time())
        ids.append(mid)
    return ids
