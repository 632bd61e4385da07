"""Many writers at once against one store (SQLite, PostgreSQL), watched by subscribers
throughout, one of them through a second store instance (no in-process signal)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from store_contract import record, tick_batch

from replay.errors import ConcurrencyError
from replay.events import RecordedEvent
from replay.store import open_store
from replay.store.base import AppendResult, EventIds, EventStore

MATCHES = 50
BATCHES = 30
RACE_ROUNDS = 40


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    return request.getfixturevalue("pg_url")


async def test_concurrent_matches_racing_writers_and_gapless_subscribers(shared_url: str) -> None:
    db = shared_url
    async with open_store(db) as store, open_store(db, read_only=True) as other_process_view:
        ms = [await store.create_match(record()) for _ in range(MATCHES)]
        raced = await store.create_match(record())
        expected_total = MATCHES * BATCHES * 4 + RACE_ROUNDS * 4
        seen_here: list[RecordedEvent] = []
        seen_there: list[RecordedEvent] = []

        async def follow(s: EventStore, into: list[RecordedEvent]) -> None:
            # The second store instance gets no in-process commit signal: it polls.
            async for event in s.subscribe(0, batch_size=500, poll_interval=0.05):
                into.append(event)
                if len(into) == expected_total:
                    return

        async def write(match_id: str, rng: random.Random) -> None:
            ids = EventIds()
            for b in range(BATCHES):
                await store.append(match_id, tick_batch(b), b * 4, first_id=ids.take(4))
                if rng.random() < 0.3:
                    await asyncio.sleep(0)

        async def race() -> list[int]:
            winners = []
            for r in range(RACE_ROUNDS):
                version = (await store.get_match(raced.match_id)).version
                results = await asyncio.gather(
                    store.append(raced.match_id, tick_batch(r), version),
                    store.append(raced.match_id, tick_batch(r), version),
                    return_exceptions=True,
                )
                ok = [i for i, x in enumerate(results) if isinstance(x, AppendResult)]
                lost = [x for x in results if isinstance(x, ConcurrencyError)]
                assert len(ok) == 1 and len(lost) == 1, results
                winners.append(ok[0])
            return winners

        followers = [
            asyncio.create_task(follow(store, seen_here)),
            asyncio.create_task(follow(other_process_view, seen_there)),
        ]
        rng = random.Random(7)
        await asyncio.gather(*(write(m.match_id, random.Random(rng.random())) for m in ms), race())
        await asyncio.wait_for(asyncio.gather(*followers), 60)

        everything = await store.read_all(0, limit=expected_total + 1)
        assert len(everything) == expected_total
        for seen in (seen_here, seen_there):
            assert seen == everything  # every event exactly once, in order
            positions = [e.position for e in seen]
            assert positions == list(range(1, expected_total + 1))
        for m in [*ms, raced]:
            seqs = [e.seq for e in await store.read(m.match_id)]
            assert seqs == list(range(1, len(seqs) + 1))
        assert store.commits < expected_total // 4  # appends were grouped
