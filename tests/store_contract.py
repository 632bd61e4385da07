"""Behaviour every EventStore backend must have.

A backend's test module subclasses :class:`EventStoreContract` and provides
``make_store()`` returning a new, empty, *unopened* store; the ``store``
fixture opens and closes it. Nothing here knows which backend it runs against.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.errors import (
    ConcurrencyError,
    CorruptEventError,
    EventEncodeError,
    EventTooLargeError,
    InvalidEventError,
    LeaseLostError,
    MatchEndedError,
    MatchExistsError,
    StoreClosedError,
    UnknownMatchError,
)
from replay.events import EventCatalog, EventType, NewEvent
from replay.store.base import DEFAULT_MAX_EVENT_BYTES, EventIds, EventStore, Keyframe, MatchRecord

_ids = itertools.count(1)

UPCAST_GAME = "contract-upcast"


def _upcast_catalog() -> EventCatalog:
    """A test game whose ``moved`` is at version 3: v1 (player, x) gained y in v2
    and v2 (player, x, y) had x and y scaled by 10 in v3."""
    return EventCatalog(
        [
            EventType(
                1,
                "moved",
                ("player", "x", "y"),
                version=3,
                upcasters={
                    1: lambda d: (*d, 0),
                    2: lambda d: (d[0], d[1] * 10, d[2] * 10),
                },
            ),
            EventType(2, "said", ("player", "text")),
        ]
    )


CATALOGS = {UPCAST_GAME: _upcast_catalog()}
"""What a backend's ``make_store`` passes as the store's ``catalogs``."""


def record(game: str = "contract-game", **changes: Any) -> MatchRecord:
    return MatchRecord(
        match_id=f"m-{next(_ids)}",
        game=game,
        rules_version="1.0",
        tick_rate=30,
        players=("alice", "bob"),
        settings={"map": "arena", "rounds": 3},
        seed=42,
        **changes,
    )


def tick_batch(tick: int, n: int = 4, type_: int = 6) -> list[NewEvent]:
    return [NewEvent(type_, tick, (i, tick * 2, -tick)) for i in range(n)]


class EventStoreContract:
    """The shared test cases. Subclasses implement ``make_store``."""

    def make_store(self) -> EventStore:
        raise AssertionError("a backend's test class must provide make_store()")

    @pytest.fixture
    async def store(self):
        store = self.make_store()
        await store.open()
        yield store
        await store.close()

    async def new_match(self, store: EventStore, **changes: Any) -> MatchRecord:
        return await store.create_match(record(**changes))

    # -- matches ---------------------------------------------------------------

    async def test_create_and_get_match(self, store: EventStore) -> None:
        rec = record(status="running")
        created = await store.create_match(rec)
        got = await store.get_match(rec.match_id)
        assert created == got == rec.with_changes(version=0, last_tick=-1)
        with pytest.raises(MatchExistsError) as err:
            await store.create_match(rec)
        assert err.value.code == "match_exists"
        with pytest.raises(UnknownMatchError) as unknown:
            await store.get_match("nope")
        assert unknown.value.code == "unknown_match"

    async def test_list_and_filter_matches(self, store: EventStore) -> None:
        a = await self.new_match(store, created_at=100.0, game="g1")
        b = await self.new_match(store, created_at=200.0, game="g2", status="running")
        c = await self.new_match(store, created_at=300.0, game="g1", status="ended")
        ids = lambda recs: [r.match_id for r in recs]  # noqa: E731
        assert ids(await store.list_matches()) == ids([c, b, a])  # newest first
        assert ids(await store.list_matches(game="g1")) == ids([c, a])
        assert ids(await store.list_matches(status="running")) == ids([b])
        assert ids(await store.list_matches(status=["created", "ended"])) == ids([c, a])
        assert ids(await store.list_matches(limit=1, offset=1)) == ids([b])

    async def test_match_version_and_last_tick_follow_events(self, store: EventStore) -> None:
        m = await self.new_match(store)
        await store.append(m.match_id, tick_batch(7, 3), 0)
        got = await store.get_match(m.match_id)
        assert (got.version, got.last_tick) == (3, 7)
        listed = await store.list_matches()
        assert (listed[0].version, listed[0].last_tick) == (3, 7)

    async def test_update_match_and_read_only_after_end(self, store: EventStore) -> None:
        m = await self.new_match(store)
        await store.append(m.match_id, tick_batch(1), 0)
        running = await store.update_match(m.match_id, status="running", players=["a", "b", "c"])
        assert running.status == "running" and running.players == ("a", "b", "c")
        ended = await store.update_match(m.match_id, status="interrupted", ended_at=5.0)
        assert (ended.status, ended.ended_at) == ("interrupted", 5.0)
        with pytest.raises(MatchEndedError) as err:
            await store.append(m.match_id, tick_batch(2), 4)
        assert err.value.code == "match_ended"
        assert (await store.update_match(m.match_id, status="ended")).status == "ended"
        with pytest.raises(MatchEndedError):
            await store.update_match(m.match_id, status="running")
        assert (await store.get_match(m.match_id)).version == 4
        with pytest.raises(UnknownMatchError):
            await store.update_match("nope", status="ended")

    # -- appends and reads -------------------------------------------------------

    async def test_append_assigns_seqs_positions_and_ids(self, store: EventStore) -> None:
        m1, m2 = await self.new_match(store), await self.new_match(store)
        start = await store.last_position()
        r1 = await store.append(m1.match_id, tick_batch(0, 3), 0)
        r2 = await store.append(m2.match_id, tick_batch(0, 2), 0)
        r3 = await store.append(m1.match_id, tick_batch(1, 2), 3)
        assert (r1.first_seq, r1.last_seq, r3.first_seq, r3.last_seq) == (1, 3, 4, 5)
        assert r1.first_position == start + 1 and r1.last_position == start + 3
        assert r2.first_position == r1.last_position + 1
        assert r3.first_position == r2.last_position + 1
        assert await store.last_position() == r3.last_position
        events = await store.read(m1.match_id)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert [e.position for e in events] == [
            *range(r1.first_position, r1.last_position + 1),
            *range(r3.first_position, r3.last_position + 1),
        ]
        assert [e.id for e in events[:3]] == [r1.first_id + i for i in range(3)]
        assert [e.new_event() for e in events] == tick_batch(0, 3) + tick_batch(1, 2)

    async def test_wrong_expected_version_raises_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        m = await self.new_match(store)
        await store.append(m.match_id, tick_batch(0), 0)
        before = await store.last_position()
        for wrong in (0, 3, 5, 100):
            with pytest.raises(ConcurrencyError) as err:
                await store.append(m.match_id, tick_batch(1), wrong)
            assert err.value.code == "concurrency"
            assert (err.value.expected, err.value.actual) == (wrong, 4)
        assert await store.last_position() == before
        assert len(await store.read(m.match_id)) == 4

    async def test_retry_with_same_ids_returns_original_and_writes_once(
        self, store: EventStore
    ) -> None:
        m = await self.new_match(store)
        ids = EventIds()
        first_id = ids.take(4)
        original = await store.append(m.match_id, tick_batch(0), 0, first_id=first_id)
        await store.append(m.match_id, tick_batch(1), 4, first_id=ids.take(4))
        before = await store.last_position()
        retried = await store.append(m.match_id, tick_batch(0), 0, first_id=first_id)
        assert retried == original
        assert await store.last_position() == before
        assert [e.seq for e in await store.read(m.match_id)] == list(range(1, 9))
        # Same expected version, different ids: a real conflict.
        with pytest.raises(ConcurrencyError):
            await store.append(m.match_id, tick_batch(0), 0, first_id=ids.take(4))
        # Same ids, different batch size: not the same batch.
        with pytest.raises(ConcurrencyError):
            await store.append(m.match_id, tick_batch(0, 3), 0, first_id=first_id)
        # A retry still succeeds after the match ended.
        await store.update_match(m.match_id, status="ended")
        assert await store.append(m.match_id, tick_batch(0), 0, first_id=first_id) == original

    async def test_append_soon_queues_at_once_and_appends_handed_over_together_commit_together(
        self, store: EventStore
    ) -> None:
        matches = [await self.new_match(store) for _ in range(3)]
        for m in matches:  # each match's key known to the store (its first append)
            await store.append(m.match_id, tick_batch(0), 0)
        commits = store.commits
        # A bad batch is refused on the spot, before anything is queued.
        with pytest.raises(InvalidEventError):
            store.append_soon(matches[0].match_id, [], 4)
        futures = [store.append_soon(m.match_id, tick_batch(1), 4) for m in matches]
        # A refusal of the recorder comes through its future; the others still commit.
        stale = store.append_soon(matches[0].match_id, tick_batch(1), 0)
        results = await asyncio.gather(*futures, stale, return_exceptions=True)
        assert store.commits == commits + 1  # one group
        assert isinstance(results[-1], ConcurrencyError)
        assert [(r.first_seq, r.last_seq) for r in results[:3]] == [(5, 8)] * 3
        positions = [r.first_position for r in results[:3]]
        assert positions == sorted(positions)  # in the order handed over
        for m in matches:
            assert [e.seq for e in await store.read(m.match_id)] == list(range(1, 9))

    async def test_read_seq_and_tick_ranges(self, store: EventStore) -> None:
        m = await self.new_match(store)
        version = 0
        for tick in range(0, 20, 2):  # ticks 0, 2, ..., 18; 4 events each
            await store.append(m.match_id, tick_batch(tick), version)
            version += 4
        events = await store.read(m.match_id, 6, 13)
        assert [e.seq for e in events] == list(range(6, 14))
        assert [e.seq for e in await store.read(m.match_id, 38)] == [38, 39, 40]
        assert await store.read(m.match_id, 41) == []
        ticks = await store.read_ticks(m.match_id, 3, 8)
        assert sorted({e.tick for e in ticks}) == [4, 6, 8]
        assert len(ticks) == 12
        assert await store.read_ticks(m.match_id, 19, 100) == []
        batches = await store.read_batches(m.match_id, from_tick=5, to_tick=5)
        assert batches == []
        batches = await store.read_batches(m.match_id, from_seq=6, to_seq=12, from_tick=3)
        assert [b.first_seq for b in batches] == [9]
        with pytest.raises(UnknownMatchError):
            await store.read("nope")

    async def test_batch_spanning_ticks_is_found_by_tick_range(self, store: EventStore) -> None:
        m = await self.new_match(store)
        events = [NewEvent(1, t, (t,)) for t in (10, 10, 15, 30)]
        await store.append(m.match_id, events, 0)
        await store.append(m.match_id, [NewEvent(1, 30, (0,)), NewEvent(1, 40, (1,))], 4)
        assert [e.tick for e in await store.read_ticks(m.match_id, 12, 20)] == [15]
        assert [e.seq for e in await store.read_ticks(m.match_id, 30, 30)] == [4, 5]
        assert [e.tick for e in await store.read_ticks(m.match_id, 0, 100)] == [
            10,
            10,
            15,
            30,
            30,
            40,
        ]

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        ticks=st.lists(st.integers(0, 3), min_size=1, max_size=60),
        cuts=st.lists(st.integers(1, 59), max_size=12),
        lo=st.integers(0, 100),
        span=st.integers(0, 100),
    )
    async def test_any_batch_split_reads_back_identically(
        self, store: EventStore, ticks: list[int], cuts: list[int], lo: int, span: int
    ) -> None:
        m = await self.new_match(store)
        tick, events = 0, []
        for i, step in enumerate(ticks):
            tick += step
            events.append(NewEvent(i % 5, tick, (i, "x" * (i % 3), [i, -i]), 1 + i % 2))
        bounds = sorted({c for c in cuts if c < len(events)} | {0, len(events)})
        for a, b in itertools.pairwise(bounds):
            await store.append(m.match_id, events[a:b], a)
        stored = await store.read(m.match_id)
        assert [e.new_event() for e in stored] == [
            NewEvent(e.type, e.tick, tuple(e.data), e.version) for e in events
        ]
        assert [e.seq for e in stored] == list(range(1, len(events) + 1))
        from_seq, to_seq = lo % (len(events) + 2), (lo % (len(events) + 2)) + span % 20
        assert await store.read(m.match_id, from_seq, to_seq) == [
            e for e in stored if from_seq <= e.seq <= to_seq
        ]
        t0, t1 = lo % (tick + 2), lo % (tick + 2) + span % 10
        assert await store.read_ticks(m.match_id, t0, t1) == [
            e for e in stored if t0 <= e.tick <= t1
        ]

    async def test_read_all_in_global_order_from_a_position(self, store: EventStore) -> None:
        ms = [await self.new_match(store) for _ in range(3)]
        start = await store.last_position()
        for round_ in range(3):
            for m in ms:
                await store.append(m.match_id, tick_batch(round_, 3), round_ * 3)
        everything = await store.read_all(start)
        assert [e.position for e in everything] == list(range(start + 1, start + 28))
        assert [e.match_id for e in everything[:9]] == [m.match_id for m in ms for _ in range(3)]
        # Starting mid-batch trims the batch; a limit cuts mid-batch too.
        assert [e.position for e in await store.read_all(start + 4, limit=5)] == list(
            range(start + 5, start + 10)
        )
        assert await store.read_all(start + 27) == []

    async def test_scan_returns_every_wanted_event_and_how_far_it_looked(
        self, store: EventStore
    ) -> None:
        ms = [await self.new_match(store) for _ in range(2)]
        start = await store.last_position()
        # Type 70 shares the mask's last bit with 62+: only the decoded check tells.
        kinds = [(1, 1), (2, 3), (1, 1), (70, 2), (5, 63), (1, 2)]
        versions = dict.fromkeys((m.match_id for m in ms), 0)
        for i, types in enumerate(kinds):
            m = ms[i % 2]
            events = [NewEvent(t, i, (i, k), 1) for k, t in enumerate(types)]
            await store.append(m.match_id, events, versions[m.match_id])
            versions[m.match_id] += len(events)
        everything = await store.read_all(start)
        by_position = {e.position: e for e in everything}
        end = everything[-1].position
        for wanted in ({2}, {3, 5}, {70}, {63}, {9}):
            for after in (start, start + 1, start + 4):
                for limit in (1, 2, 100):
                    got: list[int] = []
                    position = after
                    while position < end:
                        batches, through = await store.scan(position, limit, wanted)
                        assert position < through <= end
                        for b in batches:
                            assert b.first_position > position and b.last_position <= through
                            # Wanted events decoded, the others None (not built).
                            for k, e in enumerate(b.events):
                                r = by_position[b.first_position + k]
                                assert e == (
                                    (r.type, r.version, r.tick, r.data)
                                    if r.type in wanted
                                    else None
                                )
                            got += [b.first_position + k for k, e in enumerate(b.events) if e]
                            assert got and got[-1] >= b.first_position
                        position = through
                    assert got == [
                        e.position for e in everything if e.type in wanted and e.position > after
                    ], (wanted, after, limit)
        assert await store.scan(end, 10, {1}) == ([], end)

    async def test_subscribe_catches_up_then_follows_live(self, store: EventStore) -> None:
        m = await self.new_match(store)
        start = await store.last_position()
        await store.append(m.match_id, tick_batch(0, 5), 0)
        seen: list[int] = []

        async def follow() -> None:
            async for event in store.subscribe(start + 2, poll_interval=0.2):
                seen.append(event.position)
                if event.position == start + 15:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        await store.append(m.match_id, tick_batch(1, 5), 5)
        await store.append(m.match_id, tick_batch(2, 5), 10)
        await asyncio.wait_for(task, 10)
        assert seen == list(range(start + 3, start + 16))

    # -- bad input -----------------------------------------------------------------

    async def test_bad_appends_are_typed_and_write_nothing(self, store: EventStore) -> None:
        m = await self.new_match(store)
        await store.append(m.match_id, tick_batch(5, 2), 0)
        before = await store.last_position()
        limit = store.max_event_bytes
        assert limit == DEFAULT_MAX_EVENT_BYTES
        cases: list[tuple[type[Exception], str, str, list[NewEvent]]] = [
            (UnknownMatchError, "unknown_match", "nope", tick_batch(6)),
            (InvalidEventError, "invalid_event", m.match_id, []),
            (InvalidEventError, "invalid_event", m.match_id, tick_batch(4)),  # before tick 5
            (
                InvalidEventError,
                "invalid_event",
                m.match_id,
                [NewEvent(1, 7, ()), NewEvent(1, 6, ())],
            ),
            (
                EventTooLargeError,
                "event_too_large",
                m.match_id,
                [NewEvent(1, 6, (1,)), NewEvent(1, 6, (b"x" * limit,))],
            ),
            (EventEncodeError, "event_encode", m.match_id, [NewEvent(1, 6, (object(),))]),
            (EventEncodeError, "event_encode", m.match_id, [NewEvent(1, 6, 5)]),  # type: ignore[arg-type]
            (InvalidEventError, "invalid_event", m.match_id, [NewEvent(1, -1, ())]),
            (InvalidEventError, "invalid_event", m.match_id, [NewEvent(1, 2**70, ())]),
            (InvalidEventError, "invalid_event", m.match_id, [NewEvent(1, "6", ())]),  # type: ignore[arg-type]
            (InvalidEventError, "invalid_event", m.match_id, [NewEvent(-3, 6, ())]),
            (InvalidEventError, "invalid_event", m.match_id, [NewEvent(1, 6, (), 0)]),
        ]
        for error, code, match_id, events in cases:
            with pytest.raises(error) as err:
                await store.append(match_id, events, 2)
            assert err.value.code == code
            assert str(err.value)
        with pytest.raises(InvalidEventError):
            await store.append(m.match_id, tick_batch(6), 2, first_id=-1)
        assert await store.last_position() == before
        assert (await store.get_match(m.match_id)).version == 2
        # Many events under the limit may make a batch over it: that is fine.
        big = [NewEvent(1, 6, (b"y" * (limit // 4),)) for _ in range(8)]
        assert (await store.append(m.match_id, big, 2)).last_seq == 10

    async def test_a_failing_append_does_not_fail_its_group(self, store: EventStore) -> None:
        ms = [await self.new_match(store) for _ in range(10)]
        calls = [store.append(m.match_id, tick_batch(0), 0) for m in ms]
        calls.append(store.append(ms[0].match_id, tick_batch(0), 7))  # wrong version
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[-1], ConcurrencyError)
        assert all(r.last_seq == 4 for r in results[:-1])  # type: ignore[union-attr]
        for m in ms:
            assert len(await store.read(m.match_id)) == 4

    async def test_racing_writers_exactly_one_wins(self, store: EventStore) -> None:
        m = await self.new_match(store)
        for version in range(0, 40, 4):
            results = await asyncio.gather(
                store.append(m.match_id, tick_batch(version), version),
                store.append(m.match_id, tick_batch(version), version),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["AppendResult", "ConcurrencyError"]
        assert [e.seq for e in await store.read(m.match_id)] == list(range(1, 41))

    async def test_close_flushes_pending_appends_then_refuses(self) -> None:
        store = self.make_store()
        await store.open()
        ms = [await store.create_match(record()) for _ in range(20)]
        tasks = [asyncio.create_task(store.append(m.match_id, tick_batch(1), 0)) for m in ms]
        await asyncio.sleep(0)  # let every append enqueue
        await store.close()
        assert all(t.result().last_seq == 4 for t in tasks)
        with pytest.raises(StoreClosedError) as err:
            await store.append(ms[0].match_id, tick_batch(2), 4)
        assert err.value.code == "store_closed"

    # -- upcasting -----------------------------------------------------------------

    async def test_reads_upcast_old_versions_with_the_games_catalog(
        self, store: EventStore
    ) -> None:
        m = await self.new_match(store, game=UPCAST_GAME)
        old = [
            NewEvent(1, 1, ("alice", 2), version=1),
            NewEvent(1, 1, ("bob", 3, 4), version=2),
            NewEvent(1, 2, ("carol", 50, 60), version=3),
            NewEvent(2, 2, ("alice", "gg"), version=1),
        ]
        await store.append(m.match_id, old, 0)
        expected = [
            NewEvent(1, 1, ("alice", 20, 0), 3),
            NewEvent(1, 1, ("bob", 30, 40), 3),
            NewEvent(1, 2, ("carol", 50, 60), 3),
            NewEvent(2, 2, ("alice", "gg"), 1),
        ]
        assert [e.new_event() for e in await store.read(m.match_id)] == expected
        assert [e.new_event() for e in await store.read_ticks(m.match_id, 1, 1)] == expected[:2]
        mine = [e for e in await store.read_all() if e.match_id == m.match_id]
        assert [e.new_event() for e in mine] == expected
        (batch,) = await store.read_batches(m.match_id)
        assert [(t, v, tick, d) for t, v, tick, d in batch.events] == [
            (e.type, e.version, e.tick, e.data) for e in expected
        ]
        # A version from the future is reported, naming the match and seq.
        await store.append(m.match_id, [NewEvent(1, 3, ("x", 1, 1), version=9)], 4)
        with pytest.raises(CorruptEventError, match=f"{m.match_id}.*5"):
            await store.read(m.match_id, 5)

    async def test_unregistered_game_reads_stored_versions(self, store: EventStore) -> None:
        m = await self.new_match(store, game="no-such-game")
        old = [NewEvent(1, 1, ("alice", 2), version=1)]
        await store.append(m.match_id, old, 0)
        assert [e.new_event() for e in await store.read(m.match_id)] == old

    # -- keyframes ---------------------------------------------------------------

    async def test_keyframes_nearest_at_or_before(self, store: EventStore) -> None:
        m = await self.new_match(store)
        assert await store.get_keyframe(m.match_id, 1000) is None
        for tick in (0, 90, 180):
            await store.put_keyframe(Keyframe(m.match_id, tick, 1, b"s%d" % tick, b"c" * 16))
        assert (await store.get_keyframe(m.match_id, 179)).tick == 90  # type: ignore[union-attr]
        got = await store.get_keyframe(m.match_id, 180)
        assert got == Keyframe(m.match_id, 180, 1, b"s180", b"c" * 16)
        await store.put_keyframe(Keyframe(m.match_id, 90, 2, b"new", b"d" * 16))
        assert await store.get_keyframe(m.match_id, 100) == Keyframe(
            m.match_id, 90, 2, b"new", b"d" * 16
        )
        assert await store.keyframe_ticks(m.match_id) == [0, 90, 180]
        assert await store.delete_keyframes(m.match_id, before_tick=100) == 2
        assert await store.get_keyframe(m.match_id, 100) is None
        assert await store.delete_keyframes(m.match_id) == 1
        assert await store.keyframe_ticks(m.match_id) == []
        with pytest.raises(UnknownMatchError):
            await store.put_keyframe(Keyframe("nope", 0, 1, b"", b""))

    # -- leases and fencing (docs/operations.md, "Leases and fencing") ----------------

    async def lapse(self, store: EventStore, *match_ids: str) -> None:
        """Wait until the leases of ``match_ids`` (taken with a short ttl) lapsed."""
        for match_id in match_ids:
            while (lease := await store.lease(match_id)) is not None and lease.expires_in >= 0:
                await asyncio.sleep(0.01)

    async def test_a_fenced_append_is_refused_alone_in_its_group(self, store: EventStore) -> None:
        m1, m2 = await self.new_match(store), await self.new_match(store)
        lease = await store.acquire_lease(m1.match_id, "n1/a", 30)
        assert lease is not None and (lease.owner, lease.epoch) == ("n1/a", 1)
        await store.append(m1.match_id, tick_batch(0), 0, epoch=1)
        await store.append(m2.match_id, tick_batch(0), 0)
        before, commits = await store.last_position(), store.commits
        results = await asyncio.gather(
            store.append(m1.match_id, tick_batch(1), 4, epoch=0),  # an old owner's
            store.append(m2.match_id, tick_batch(1), 4),  # unfenced: another node's match
            return_exceptions=True,
        )
        assert store.commits == commits + 1  # one group
        lost, ok = results
        assert isinstance(lost, LeaseLostError), lost
        assert (lost.code, lost.match_id, lost.epoch, lost.actual) == (
            "lease_lost",
            m1.match_id,
            0,
            1,
        )
        assert ok.last_seq == 8 and ok.last_position == before + 4  # type: ignore[union-attr]
        assert (await store.get_match(m1.match_id)).version == 4  # nothing of it written
        assert await store.last_position() == before + 4
        # append_many takes the epoch as a fifth item.
        done = await store.append_many(
            [(m1.match_id, tick_batch(2), 4, None, 1), (m2.match_id, tick_batch(2), 8, None)]
        )
        assert [r.last_seq for r in done] == [8, 12]
        with pytest.raises(LeaseLostError):
            await store.append_many([(m1.match_id, tick_batch(3), 8, None, 7)])
        with pytest.raises(InvalidEventError):
            await store.append(m1.match_id, tick_batch(3), 8, epoch=-1)

    async def test_a_zombie_owner_can_never_write_again(self, store: EventStore) -> None:
        m = await self.new_match(store, status="running")
        ids = EventIds()
        first = ids.take(4)
        zombie = await store.acquire_lease(m.match_id, "n1/a", 0.01)
        assert zombie is not None and zombie.epoch == 1
        original = await store.append(m.match_id, tick_batch(0), 0, first_id=first, epoch=1)
        await self.lapse(store, m.match_id)
        taken = await store.acquire_lease(m.match_id, "n2/b", 30)
        assert taken is not None and (taken.owner, taken.epoch) == ("n2/b", 2)
        assert taken.expires_in > 0
        # The old owner wakes: every fenced write is refused, nothing changes.
        with pytest.raises(LeaseLostError) as err:
            await store.append(m.match_id, tick_batch(1), 4, epoch=1)
        assert (err.value.epoch, err.value.actual) == (1, 2)
        with pytest.raises(LeaseLostError):
            await store.update_match(m.match_id, status="interrupted", ended_at=1.0, epoch=1)
        got = await store.get_match(m.match_id)
        assert (got.status, got.ended_at, got.version) == ("running", None, 4)
        assert (got.owner, got.epoch) == ("n2/b", 2)
        # A retry of an append it made while it owned the match is still its original.
        assert await store.append(m.match_id, tick_batch(0), 0, first_id=first, epoch=1) == original
        assert await store.renew_leases("n1/a", 30) == {}  # what it learns it lost
        assert await store.release_lease(m.match_id, "n1/a", 1) is None
        assert await store.leases_of("n1/a") == []
        # The new owner writes on.
        await store.append(m.match_id, tick_batch(1), 4, epoch=2)
        assert await store.renew_leases("n2/b", 30) == {m.match_id: 2}
        ended = await store.update_match(m.match_id, status="ended", ended_at=2.0, epoch=2)
        assert (ended.status, ended.version, ended.epoch) == ("ended", 8, 2)
        assert [r.owner for r in await store.list_matches()] == ["n2/b"]

    async def test_acquiring_a_match(self, store: EventStore) -> None:
        fresh = await self.new_match(store)
        assert await store.lease(fresh.match_id) == (fresh.match_id, "", 0, 0.0)
        assert await store.lease("nope") is None
        assert await store.acquire_lease("nope", "n1/a", 30) is None
        won = await store.acquire_lease(fresh.match_id, "n1/a", 30)
        assert won is not None and won[:3] == (fresh.match_id, "n1/a", 1)
        assert 0 < won.expires_in <= 30
        # Live: nobody takes it, not even its owner without its epoch.
        assert await store.acquire_lease(fresh.match_id, "n2/b", 30) is None
        assert await store.acquire_lease(fresh.match_id, "n1/a", 30) is None
        # With the epoch it was handed (or created) at: taken, whatever its lease.
        assert await store.acquire_lease(fresh.match_id, "n2/b", 30, epoch=0) is None
        handed = await store.acquire_lease(fresh.match_id, "n2/b", 30, epoch=1)
        assert handed is not None and handed[:3] == (fresh.match_id, "n2/b", 2)
        created = await self.new_match(store)
        mine = await store.acquire_lease(created.match_id, "n3/c", 30, epoch=0)
        assert mine is not None and mine[1:3] == ("n3/c", 1)
        # A match that is over is nobody's to take.
        over = await self.new_match(store)
        await store.update_match(over.match_id, status="ended")
        assert await store.acquire_lease(over.match_id, "n1/a", 30) is None
        assert await store.acquire_lease(over.match_id, "n1/a", 30, epoch=0) is None
        for bad in (0, -1, float("nan"), float("inf"), "5"):
            with pytest.raises(ValueError):
                await store.acquire_lease(fresh.match_id, "n1/a", bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await store.acquire_lease(fresh.match_id, "", 30)
        # Two nodes at once: exactly one wins.
        for _ in range(5):
            m = await self.new_match(store)
            got = await asyncio.gather(
                store.acquire_lease(m.match_id, "n1/a", 30),
                store.acquire_lease(m.match_id, "n2/b", 30),
            )
            assert sorted(g is None for g in got) == [False, True], got
            winner = next(g for g in got if g is not None)
            assert (await store.get_match(m.match_id)).owner == winner.owner

    async def test_renewing_returns_only_what_is_still_held(self, store: EventStore) -> None:
        a, b, c = [await self.new_match(store) for _ in range(3)]
        for m in (a, b):
            await store.acquire_lease(m.match_id, "n1/a", 0.01)
        await store.acquire_lease(c.match_id, "n2/b", 30)
        await self.lapse(store, a.match_id, b.match_id)
        assert await store.acquire_lease(b.match_id, "n2/b", 30) is not None
        # a lapsed but nobody took it: renewed; b was taken: gone.
        assert await store.renew_leases("n1/a", 30) == {a.match_id: 1}
        renewed = await store.lease(a.match_id)
        assert renewed is not None and renewed.expires_in > 0
        assert [(x.match_id, x.epoch) for x in await store.leases_of("n2/b")] == sorted(
            [(b.match_id, 2), (c.match_id, 1)]
        )
        assert await store.renew_leases("n3/c", 30) == {}

    async def test_handing_a_match_over_bumps_the_epoch(self, store: EventStore) -> None:
        m = await self.new_match(store, status="running")
        await store.acquire_lease(m.match_id, "n1/a", 30)
        await store.append(m.match_id, tick_batch(0), 0, epoch=1)
        assert await store.release_lease(m.match_id, "n1/a", 0, to="n2/b", ttl=30) is None
        assert await store.release_lease(m.match_id, "n9/z", 1, to="n2/b", ttl=30) is None
        handed = await store.release_lease(m.match_id, "n1/a", 1, to="n2/b", ttl=30)
        assert handed is not None and handed[:3] == (m.match_id, "n2/b", 2)
        assert 0 < handed.expires_in <= 30
        with pytest.raises(LeaseLostError):
            await store.append(m.match_id, tick_batch(1), 4, epoch=1)
        await store.append(m.match_id, tick_batch(1), 4, epoch=2)
        # Released without a successor: lapsed now, listed, and the next owner bumps it.
        released = await store.release_lease(m.match_id, "n2/b", 2)
        assert released is not None and released[:3] == (m.match_id, "n2/b", 2)
        assert released.expires_in <= 0
        assert [x.match_id for x in await store.lapsed_leases()] == [m.match_id]
        took = await store.acquire_lease(m.match_id, "n3/c", 30)
        assert took is not None and took[1:3] == ("n3/c", 3)
        with pytest.raises(LeaseLostError):
            await store.append(m.match_id, tick_batch(2), 8, epoch=2)

    async def test_lapsed_leases_lists_only_lapsed_owned_live_matches(
        self, store: EventStore
    ) -> None:
        await self.new_match(store)  # never leased: a single node's match
        live = await self.new_match(store)
        first, second = await self.new_match(store), await self.new_match(store)
        over = await self.new_match(store)
        await store.acquire_lease(live.match_id, "n1/a", 30)
        await store.acquire_lease(over.match_id, "n1/a", 0.01)
        await store.acquire_lease(first.match_id, "n1/a", 0.01)
        await store.acquire_lease(second.match_id, "n2/b", 0.05)  # lapses after first
        await store.update_match(over.match_id, status="interrupted")
        await self.lapse(store, first.match_id, second.match_id)
        lapsed = await store.lapsed_leases()
        assert [(x.match_id, x.owner, x.epoch) for x in lapsed] == [
            (first.match_id, "n1/a", 1),
            (second.match_id, "n2/b", 1),
        ]
        assert all(x.expires_in < 0 for x in lapsed)
        assert [x.match_id for x in await store.lapsed_leases(limit=1)] == [first.match_id]
        assert sorted(x.match_id for x in await store.leases_of("n1/a")) == sorted(
            [live.match_id, first.match_id]
        )

    async def test_heartbeats_and_nodes(self, store: EventStore) -> None:
        assert await store.nodes() == []
        await store.heartbeat("n2/b", "n2", "ws://b/ws", "up", {"players": 3})
        await store.heartbeat("n1/a", "n1", "ws://a/ws", "up", {})
        (started,) = [n.started_at for n in await store.nodes() if n.node == "n2/b"]
        await asyncio.sleep(1.5)
        await store.heartbeat("n2/b", "n2", "ws://b2/ws", "draining", {"full": "cpu"})
        old, new = await store.nodes()
        assert (old.node, old.name, old.url, old.status, old.load) == (
            "n1/a",
            "n1",
            "ws://a/ws",
            "up",
            {},
        )
        assert (new.node, new.url, new.status, new.load) == (
            "n2/b",
            "ws://b2/ws",
            "draining",
            {"full": "cpu"},
        )
        assert new.started_at == started  # a heartbeat keeps the first start
        assert 0 <= new.age < old.age
        assert abs(new.started_at - time.time()) < 3600  # unix time
        threshold = old.age - 0.75
        assert [n.node for n in await store.nodes(max_age=threshold)] == ["n2/b"]
        with pytest.raises(ValueError):
            await store.heartbeat("n3/c", "n3", "ws://c/ws", "sleeping", {})
        assert await store.forget_nodes(threshold) == 1
        assert [n.node for n in await store.nodes()] == ["n2/b"]

    async def test_an_append_queued_behind_its_match_chains(self, store: EventStore) -> None:
        """Appends to one match issued while the previous one is being committed (a
        caller that does not wait for each ack) commit in order, whatever the writer
        has in flight; another match's appends go on meanwhile."""
        m, other = await self.new_match(store), await self.new_match(store)
        for match in (m, other):  # their match keys known: queued without an await
            await store.append(match.match_id, tick_batch(0), 0)
        for i in range(10):
            first = asyncio.create_task(store.append(m.match_id, tick_batch(2 * i + 1), 8 * i + 4))
            for _ in range(i + 1):  # queued, then at various stages of its commit
                await asyncio.sleep(0)
            beside = asyncio.create_task(store.append(other.match_id, tick_batch(i + 1), 4 * i + 4))
            second = await store.append(m.match_id, tick_batch(2 * i + 2), 8 * i + 8)
            assert ((await first).last_seq, second.last_seq) == (8 * i + 8, 8 * i + 12)
            assert (await beside).last_seq == 4 * i + 8
        assert [e.seq for e in await store.read(m.match_id)] == list(range(1, 85))
