"""Timeline markers (notable events, kills, multi-kills) and killcam clips; over memory
stores."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from games import ARENA, GAMES, open_test_store
from replay_matches import MatchInMemory, record_match, shared_arena_match

from replay.engine import ReplayEngine
from replay.events import NewEvent
from replay.store.base import EventBatch
from replay.timeline import Timeline

RULES = ARENA
CATALOG = RULES.catalog


@pytest.fixture(scope="session")
def arena() -> MatchInMemory:
    return shared_arena_match()


async def test_markers_are_the_notable_events_by_tick_range(arena: MatchInMemory) -> None:
    async with arena.store() as store:
        events = await store.read("m1")
        notable = [
            (e.tick, CATALOG[e.type].name)
            for e in events
            if e.type in CATALOG and CATALOG[e.type].notable
        ]
        assert {"match_started", "match_ended", "joined", "killed"} <= {k for _, k in notable}
        timeline = Timeline(ReplayEngine(store, GAMES))
        everything = await timeline.markers("m1")
        assert [(m.tick, m.kind) for m in everything if m.kind != "multi_kill"] == notable
        for lo, hi in ((0, 0), (1, 1), (100, 250), (250, 100), (590, 10**6)):
            found = await timeline.markers("m1", lo, hi)
            assert found == [m for m in everything if lo <= m.tick <= hi]
        kills = await timeline.markers("m1", kinds=["killed"])
        joined = {e.data[0]: e.data[1] for e in events if e.type == CATALOG.by_name("joined").code}
        assert kills and all(m.kill for m in kills)
        assert not any(m.kill for m in everything if m.kind not in ("killed", "multi_kill"))
        for m in kills:
            assert m.data["killer_player"] == joined[m.data["killer"]]
            assert m.data["victim_player"] == joined[m.data["victim"]]


async def test_multi_kills_within_the_window(arena: MatchInMemory) -> None:
    async with arena.store() as store:
        window_s = 8.0
        timeline = Timeline(ReplayEngine(store, GAMES), multi_kill_window_seconds=window_s)
        kills = await timeline.markers("m1", kinds=["killed"])
        multis = await timeline.markers("m1", kinds=["multi_kill"])
        by_killer: dict[int, list[int]] = defaultdict(list)
        for k in kills:
            by_killer[k.data["killer"]].append(k.tick)
        expected = []
        for killer, ticks in by_killer.items():
            count, first = 1, ticks[0]
            for prev, tick in itertools.pairwise(ticks):
                if tick - prev <= window_s * 30:
                    count += 1
                else:
                    count, first = 1, tick
                if count >= 2:
                    expected.append((tick, killer, count, first))
        assert expected, "the match should have at least one multi-kill in an 8 s window"
        got = [(m.tick, m.data["killer"], m.data["count"], m.data["first_tick"]) for m in multis]
        assert sorted(got) == sorted(expected)


async def test_kill_clip_follows_the_killer(arena: MatchInMemory) -> None:
    async with arena.store() as store:
        timeline = Timeline(ReplayEngine(store, GAMES))
        kill = (await timeline.markers("m1", 200, kinds=["killed"]))[0]
        clip = await timeline.kill_clip("m1", kill, seconds=3)
        assert (clip.from_tick, clip.to_tick) == (kill.tick - 90, kill.tick)
        assert (clip.follow, clip.follow_player) == (
            kill.data["killer"],
            kill.data["killer_player"],
        )
        early = await timeline.kill_clip("m1", kill, seconds=3600)
        assert early.from_tick == 0
        start = (await timeline.markers("m1", kinds=["match_started"]))[0]
        with pytest.raises(ValueError):
            await timeline.kill_clip("m1", start)


def _events(batch: EventBatch) -> list[NewEvent]:
    return [e.new_event() for e in batch.recorded()]


async def test_a_live_match_index_grows_with_the_match() -> None:
    async with open_test_store("memory:") as full, open_test_store("memory:") as live:
        await record_match(full, "live", players=8, seconds=30, keyframes=False)
        record = await full.get_match("live")
        await live.create_match(record.with_changes(status="running", ended_at=None))
        batches = await full.read_batches("live")
        half = len(batches) // 2
        for batch in batches[:half]:
            await live.append(
                "live", [e.new_event() for e in batch.recorded()], batch.first_seq - 1
            )
        timeline = Timeline(ReplayEngine(live, GAMES), multi_kill_window_seconds=8)
        early = await timeline.markers("live")
        for batch in batches[half:]:
            await live.append(
                "live", [e.new_event() for e in batch.recorded()], batch.first_seq - 1
            )
        complete = await Timeline(ReplayEngine(full, GAMES), multi_kill_window_seconds=8).markers(
            "live"
        )
        assert await timeline.markers("live") == complete
        assert early == [m for m in complete if m.tick <= batches[half - 1].events[-1][2]]
        assert len(early) < len(complete)


async def test_a_game_without_kills_gets_its_notable_markers() -> None:
    """Tug of war declares no kill event: its markers are its notable events (joins,
    the start, the win), none is a kill or a multi-kill, and none makes a clip."""
    from leaderboard_fixtures import record_tug_matches

    async with open_test_store("memory:") as store:
        (match_id,) = await record_tug_matches(store, 1, players=4)
        tug = GAMES["tug"].catalog
        notable = [
            (e.tick, tug[e.type].name) for e in await store.read(match_id) if tug[e.type].notable
        ]
        markers = await Timeline(ReplayEngine(store, GAMES)).markers(match_id)
        assert [(m.tick, m.kind) for m in markers] == notable
        assert [k for _, k in notable].count("joined") == 4 and notable[-1][1] == "won"
        assert not any(m.kill for m in markers)
        with pytest.raises(ValueError):
            await Timeline(ReplayEngine(store, GAMES)).kill_clip(match_id, markers[-1])
