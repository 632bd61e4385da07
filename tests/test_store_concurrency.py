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
from replay.store.memory import MemoryRecorder

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


class _SlowMemoryRecorder(MemoryRecorder):
    """Two groups in flight, as on PostgreSQL, and a commit that takes loop turns (the
    database's time); it logs when each group goes."""

    pipeline = 2

    def __init__(self, log: list[tuple[str, int]]) -> None:
        super().__init__()
        self.log = log

    async def insert_group(self, rows):  # type: ignore[no-untyped-def]
        self.log.append(("group", len(rows)))
        for _ in range(5):
            await asyncio.sleep(0)
        return await super().insert_group(rows)


async def test_a_group_queued_meanwhile_goes_before_the_acks_wake_their_callers() -> None:
    """Callers that keep two appends in flight: the next group is sent as soon as the
    one before it is decided, before that one's acks wake its callers, so they prepare
    their next appends while it commits (the store's writer overlaps client work and
    the commit); every append still lands in order, at the version it expected."""
    log: list[tuple[str, int]] = []
    async with EventStore(_SlowMemoryRecorder(log)) as store:
        ms = [await store.create_match(record()) for _ in range(3)]

        async def play(match_id: str) -> list[AppendResult]:
            first = store.append_soon(match_id, tick_batch(0, 2), 0)
            await asyncio.sleep(0)  # the next batch one loop turn later, as a ticker
            second = store.append_soon(match_id, tick_batch(1, 2), 2)
            done = [await first]
            log.append(("acked", 1))
            third = store.append_soon(match_id, tick_batch(2, 2), 4)
            return [*done, await second, await third]

        results = await asyncio.gather(*(play(m.match_id) for m in ms))
    assert log[:3] == [("group", 3), ("group", 3), ("acked", 1)]
    assert log.count(("group", 3)) == 3
    for per_match in results:
        assert [(r.first_seq, r.last_seq) for r in per_match] == [(1, 2), (3, 4), (5, 6)]
        positions = [r.last_position for r in per_match]
        assert positions == sorted(positions)


async def test_callers_awaiting_each_append_are_woken_in_two_halves() -> None:
    """Callers that await each append before the next: a group landing with nothing
    else in the database wakes the first half of its callers, whose next appends are
    sent as a group before the second half is woken (so it commits while they
    prepare); from then on the two halves alternate. Every append lands once, in
    order, at the version it expected."""
    log: list[tuple[str, int]] = []
    async with EventStore(_SlowMemoryRecorder(log)) as store:
        ms = [await store.create_match(record()) for _ in range(20)]

        async def play(match_id: str) -> list[AppendResult]:
            results = []
            for tick in range(4):
                results.append(await store.append(match_id, tick_batch(tick, 2), 2 * tick))
                log.append(("acked", 1))
            return results

        results = await asyncio.gather(*(play(m.match_id) for m in ms))
    groups = [n for kind, n in log if kind == "group"]
    assert groups == [20, 10, 10, 10, 10, 10, 10]
    # The first half's next group went before any of the second half was woken.
    second_group = [i for i, entry in enumerate(log) if entry[0] == "group"][1]
    assert log[1:second_group].count(("acked", 1)) == 10
    for per_match in results:
        assert [(r.first_seq, r.last_seq) for r in per_match] == [(1, 2), (3, 4), (5, 6), (7, 8)]
        positions = [r.last_position for r in per_match]
        assert positions == sorted(positions)
    everything = sorted(r.last_position for per_match in results for r in per_match)
    assert everything == list(range(2, 2 * 80 + 1, 2))


async def test_callers_of_a_single_connection_recorder_are_woken_together() -> None:
    """One group in flight at most (SQLite, memory): nothing could commit while the
    others prepare, so a landed group wakes all its callers at once and the groups
    stay whole."""
    log: list[tuple[str, int]] = []
    recorder = _SlowMemoryRecorder(log)
    recorder.pipeline = 1
    async with EventStore(recorder) as store:
        ms = [await store.create_match(record()) for _ in range(20)]

        async def play(match_id: str) -> None:
            for tick in range(3):
                await store.append(match_id, tick_batch(tick, 2), 2 * tick)

        await asyncio.gather(*(play(m.match_id) for m in ms))
    assert [n for kind, n in log if kind == "group"] == [20, 20, 20]
