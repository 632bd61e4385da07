"""Playback: frame order, states, controls, paced speed (virtual clock), live follow;
over memory stores."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from games import ARENA, GAMES, open_test_store
from replay_matches import MatchInMemory, record_match, shared_arena_match

from replay.engine import ReplayEngine
from replay.errors import TickOutOfRangeError
from replay.playback import Frame, InvalidSpeedError, Playback, Reset
from replay.store.base import EventStore

RULES = ARENA


@pytest.fixture(scope="session")
def arena() -> MatchInMemory:
    return shared_arena_match()


async def test_frames_cover_every_tick_with_its_events(arena: MatchInMemory) -> None:
    async with arena.store() as store:
        by_tick: dict[int, list[tuple[object, ...]]] = defaultdict(list)
        for e in await store.read_ticks("m1", 100, 400):
            by_tick[e.tick].append((e.type, e.version, e.tick, e.data))
        playback = Playback(ReplayEngine(store, GAMES), "m1", start=100, end=400, speed=None)
        frames = [f async for f in playback]
        assert [f.tick for f in frames] == list(range(100, 401))
        assert all(f.state is None for f in frames)
        assert {f.tick: f.events for f in frames if f.events} == by_tick


async def test_frames_with_state_match_the_live_hashes(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        playback = Playback(
            ReplayEngine(store, GAMES), "m1", start=140, with_state=True, speed=None
        )
        frames = [f async for f in playback]
        assert frames[-1].tick == match.last_tick
        for f in frames:
            assert RULES.state_hash(f.state) == match.hashes[f.tick], f.tick
        frames[0].state.x[:] = 1  # each frame's state is the caller's copy
        assert RULES.state_hash(frames[1].state) == match.hashes[141]


async def _blocked(playback: Playback) -> asyncio.Task[Frame]:
    task = asyncio.ensure_future(anext(playback))
    for _ in range(20):
        await asyncio.sleep(0)
    return task


async def test_pause_step_resume_and_seek_backwards(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        playback = Playback(
            ReplayEngine(store, GAMES), "m1", start=300, with_state=True, speed=None
        )
        assert (await anext(playback)).tick == 300
        playback.pause()
        task = await _blocked(playback)
        assert not task.done()  # paused: no frame
        playback.step()
        frame = await task
        assert frame.tick == 301 and playback.paused
        playback.step()
        assert (await anext(playback)).tick == 302
        await playback.seek(45)  # backwards, while paused
        task = await _blocked(playback)
        assert not task.done()
        playback.resume()
        frame = await task
        assert frame.tick == 45 and RULES.state_hash(frame.state) == match.hashes[45]
        frame = await anext(playback)
        assert frame.tick == 46 and RULES.state_hash(frame.state) == match.hashes[46]
        await playback.seek(match.last_tick)  # forwards to the end
        assert (await anext(playback)).tick == match.last_tick
        with pytest.raises(StopAsyncIteration):
            await anext(playback)
        with pytest.raises(TickOutOfRangeError):
            await playback.seek(match.last_tick + 1)


class VirtualClock:
    """A clock that only moves when the playback sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_speed_paces_frames_by_the_match_tick_rate(arena: MatchInMemory) -> None:
    async with arena.store() as store:
        clock = VirtualClock()
        playback = Playback(
            ReplayEngine(store, GAMES), "m1", start=10, speed=2.0, clock=clock, sleep=clock.sleep
        )
        for _ in range(31):
            await anext(playback)
        # 30 Hz at 2x: one frame every 1/60 s; 30 frames after the first.
        assert clock.sleeps == pytest.approx([1 / 60] * 30)
        playback.set_speed(0.25)
        clock.sleeps.clear()
        for _ in range(5):
            await anext(playback)
        assert clock.sleeps == pytest.approx([1 / 7.5] * 4)
        playback.set_speed(None)
        clock.sleeps.clear()
        for _ in range(50):
            await anext(playback)
        assert clock.sleeps == []
        assert playback.position == 10 + 31 + 5 + 50
        for bad in (0, 0.1, 16.5, -1):
            with pytest.raises(InvalidSpeedError) as err:
                playback.set_speed(bad)
            assert err.value.code == "invalid_speed"
        assert playback.speed is None


async def _copy_ticks(src: EventStore, dst: EventStore, from_tick: int, to_tick: int) -> None:
    for batch in await src.read_batches("live", from_tick=from_tick, to_tick=to_tick):
        if from_tick <= batch.events[0][2] <= to_tick:
            events = [e.new_event() for e in batch.recorded()]
            await dst.append("live", events, batch.first_seq - 1, first_id=batch.first_id)


async def test_live_follow_plays_up_to_the_edge_then_follows_it() -> None:
    async with open_test_store("memory:") as full, open_test_store("memory:") as live:
        # The whole match, recorded elsewhere, is fed to the live store tick range by range.
        rec = await record_match(full, "live", seconds=60, max_ticks=400, keyframes=False)
        record = await full.get_match("live")
        await live.create_match(record.with_changes(status="running", ended_at=None))
        await _copy_ticks(full, live, 0, 200)

        async def feed() -> None:
            for start in range(201, 401, 50):
                await asyncio.sleep(0.01)
                await _copy_ticks(full, live, start, start + 49)
            await live.update_match("live", status="ended")

        playback = Playback(
            ReplayEngine(live, GAMES),
            "live",
            start=150,
            speed=None,
            with_state=True,
            follow_live=True,
            live_poll_seconds=0.05,
        )
        feeder = asyncio.create_task(feed())
        frames = [f async for f in playback]
        await feeder
        assert [f.tick for f in frames] == list(range(150, rec.last_tick + 1))
        for f in frames:
            assert RULES.state_hash(f.state) == rec.hashes[f.tick], f.tick


async def test_without_follow_a_live_match_stops_at_the_edge() -> None:
    async with open_test_store("memory:") as store:
        await record_match(store, "live", seconds=60, max_ticks=120, keyframes=False, end=False)
        frames = [
            f async for f in Playback(ReplayEngine(store, GAMES), "live", start=100, speed=None)
        ]
        assert [f.tick for f in frames] == list(range(100, 121))


async def test_seek_back_while_waiting_at_the_live_edge() -> None:
    async with open_test_store("memory:") as store:
        rec = await record_match(
            store, "live", seconds=60, max_ticks=120, keyframes=False, end=False
        )
        playback = Playback(
            ReplayEngine(store, GAMES),
            "live",
            start=120,
            speed=None,
            with_state=True,
            follow_live=True,
        )
        assert (await anext(playback)).tick == 120
        task = await _blocked(playback)
        assert not task.done()  # waiting for tick 121 to become durable
        await playback.seek(50)
        frame = await task
        assert frame.tick == 50 and RULES.state_hash(frame.state) == rec.hashes[50]
        await store.update_match("live", status="ended")
        await playback.seek_live()
        assert [f.tick async for f in playback] == [120]


def _fold(reset: Reset) -> object:
    state = RULES.copy_state(reset.state)
    for f in reset.frames:
        state = RULES.evolve(state, f.events, f.tick)
    return state


async def test_reset_is_a_keyframe_state_and_the_frames_after_it(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        playback = Playback(ReplayEngine(store, GAMES), "m1", with_state=True, speed=None)
        reset = await playback.reset(500)
        assert reset.tick == 450 and RULES.state_hash(reset.state) == match.hashes[450]
        ticks = [f.tick for f in reset.frames]
        assert ticks == sorted(set(ticks)) and ticks[-1] == 500 and ticks[0] > 450
        assert all(f.events for f in reset.frames[:-1])  # quiet ticks are left out
        assert RULES.state_hash(_fold(reset)) == match.hashes[500]
        frame = await anext(playback)  # the next frame follows the reset tick
        assert frame.tick == 501 and RULES.state_hash(frame.state) == match.hashes[501]
        # Before the first keyframe: the exact state of the tick itself, nothing to fold.
        early = await playback.reset(100)
        assert early.tick == 100 and early.frames == []
        assert RULES.state_hash(early.state) == match.hashes[100]
        assert (await anext(playback)).tick == 101
        with pytest.raises(TickOutOfRangeError):
            await playback.reset(match.last_tick + 1)
        assert playback.position == 102  # unchanged by the refused reset


async def test_an_edge_caps_frames_and_seeks_and_may_move(arena: MatchInMemory) -> None:
    edge = [20]
    async with arena.store() as store:
        playback = Playback(
            ReplayEngine(store, GAMES), "m1", start=10, speed=None, edge=lambda: edge[0]
        )
        assert [f.tick async for f in playback] == list(range(10, 21))
        assert await playback.limit() == 20
        with pytest.raises(TickOutOfRangeError):
            await playback.seek(21)
        with pytest.raises(TickOutOfRangeError):
            await playback.reset(21)
        edge[0] = 30  # the delay released more: a stopped playback goes on
        assert [f.tick async for f in playback] == list(range(21, 31))
        # Pending steps do not outlive a stop at the edge.
        edge[0] = 33
        playback.step(5)
        assert [f.tick async for f in playback] == [31, 32, 33]
        edge[0] = 40
        task = await _blocked(playback)
        assert not task.done()  # paused, no step left over
        playback.step(2)
        assert (await task).tick == 34 and (await anext(playback)).tick == 35
        with pytest.raises(ValueError):
            playback.step(0)


async def test_shows_continues_after_a_tick_reached_elsewhere(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        playback = Playback(ReplayEngine(store, GAMES), "m1", with_state=True, speed=None)
        playback.shows(40)  # e.g. a live feed brought the viewer to tick 40
        frame = await anext(playback)
        assert frame.tick == 41 and RULES.state_hash(frame.state) == match.hashes[41]
        playback.shows(match.last_tick)
        with pytest.raises(StopAsyncIteration):
            await anext(playback)
