"""Arena matches for the leaderboard tests: the offline generator's bots, several
matches played at once and recorded into a real SQLite store, interleaved in the
global order the way a server running them concurrently would write them."""

from __future__ import annotations

import asyncio
import time

from games import ARENA, open_test_store

from replay.offline import simulate
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
