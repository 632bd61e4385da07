"""The global leaderboards count only the surviving timeline of a rewound match (issue 17):
whether the projection folded the abandoned ticks before the rewind or not, after two
rewinds, after a rewind into an abandoned branch, across a projection restart, and a
fork counting only what happens in it. Each time the boards equal a fresh rebuild over
the same store and the surviving timeline's own tally. Matches are played tick by tick
through the match machine into a memory store (tests/rewind_driver.py); the same
on a real server: tests/test_leaderboard_rewind_server.py."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from games import ARENA, METRICS, open_test_store
from leaderboard_fixtures import PUBLIC
from rewind_driver import Driver

import replay.games.arena.events as ev
from replay.events import SYSTEM_FORKED, SYSTEM_REWOUND
from replay.leaderboards.projection import LeaderboardProjection
from replay.offline import bot_ids
from replay.store.base import EventStore, MatchRecord
from replay.timeline import abandoned_ranges

BOARDS = ARENA.default_boards()
IDS = [b.id for b in BOARDS]
PLAYERS = 8
REFOLD = "rebuilding the boards"
"""What the projection logs when a rewind makes it rebuild."""


async def surviving_kills(store: EventStore, match_ids: list[str]) -> Counter[str]:
    """Kills per player as the events of the surviving timelines say: each match's
    stream read in full, the ticks its rewinds abandoned left out (docs/replay.md), a
    fork's seats taken from its ``forked`` state and nothing of its parent counted."""
    kills: Counter[str] = Counter()
    for m in match_ids:
        events = await store.read(m)
        rewinds = [(e.tick, e.data[1]) for e in events if e.type == SYSTEM_REWOUND]
        gone = abandoned_ranges(rewinds, events[-1].tick)
        slots: dict[int, str] = {}
        for e in events:
            if any(lo < e.tick < hi for lo, hi in gone):
                continue
            if e.type == SYSTEM_FORKED:
                state = ARENA.decode_state(e.data[3], e.data[2])
                slots = {s: p for s, p in enumerate(state.players) if p is not None}
            elif e.type == ev.JOINED:
                slots[e.data[0]] = e.data[1]
            elif e.type == ev.LEFT:
                slots.pop(e.data[0], None)
            elif e.type == ev.KILLED and e.data[0] in slots:
                kills[slots[e.data[0]]] += 1
    return kills


async def all_kills(store: EventStore, match_id: str) -> int:
    return sum(1 for e in await store.read(match_id) if e.type == ev.KILLED)


def kills_board(p: LeaderboardProjection) -> dict[str, int]:
    b = p.state.board("kills", "all")
    return {} if b is None else {e.owner: e.value for e in b.slice(0, len(b))}


async def assert_exact(
    p: LeaderboardProjection, tmp_path: Path, expected: list[str] | Counter[str]
) -> None:
    """The boards equal a fresh rebuild over the same store (every row of every board,
    ``reached`` included) and the surviving timelines' kills (of these matches, or these
    kills)."""
    await p.catch_up()
    fresh = LeaderboardProjection(p.store, str(tmp_path / "fresh.sqlite"), BOARDS, METRICS)
    await fresh.open()
    try:
        await fresh.catch_up()
        assert fresh.position == p.position
        assert sorted(p.state.rows(IDS)) == sorted(fresh.state.rows(IDS))
        assert {m: t.data for m, t in p.state.tallies.items()} == {
            m: t.data for m, t in fresh.state.tallies.items()
        }
    finally:
        await fresh.close()
        (tmp_path / "fresh.sqlite").unlink()
    if isinstance(expected, list):
        expected = await surviving_kills(p.store, expected)
    assert kills_board(p) == dict(expected)


async def start(
    store: EventStore, match_id: str, seconds: float = 60.0, seed: int = 5, delay: float = 0.0
) -> Driver:
    """A public match of bots, started; its results reach the boards at once, or with
    a spectator ``delay``, as its spectators see them."""
    settings = ARENA.bot_match_settings(PLAYERS, seconds, 30)
    await store.create_match(
        MatchRecord(
            match_id,
            "arena",
            ARENA.version,
            30,
            players=tuple(bot_ids(PLAYERS)),
            settings=settings,
            seed=seed,
            status="running",
            options=dict(PUBLIC, spectator_delay=delay),
        )
    )
    driver = Driver(store, match_id, ARENA, settings, seed)
    driver.join_all(PLAYERS)
    return driver


async def kills_upto(store: EventStore, match_id: str, tick: int) -> Counter[str]:
    """The surviving kills of the match's ticks up to ``tick``."""
    events = await store.read(match_id)
    cut = [e for e in events if e.tick <= tick]
    rewinds = [(e.tick, e.data[1]) for e in cut if e.type == SYSTEM_REWOUND]
    gone = abandoned_ranges(rewinds, tick)
    slots: dict[int, str] = {}
    kills: Counter[str] = Counter()
    for e in cut:
        if any(lo < e.tick < hi for lo, hi in gone):
            continue
        if e.type == ev.JOINED:
            slots[e.data[0]] = e.data[1]
        elif e.type == ev.KILLED and e.data[0] in slots:
            kills[slots[e.data[0]]] += 1
    return kills


async def kills_between(store: EventStore, match_id: str, lo: int, hi: int) -> int:
    return sum(1 for e in await store.read(match_id) if e.type == ev.KILLED and lo < e.tick < hi)


async def test_a_rewind_after_the_abandoned_ticks_were_counted_takes_them_back(
    tmp_path: Path, caplog
) -> None:
    store = open_test_store("memory:")
    await store.open()
    p = LeaderboardProjection(store, str(tmp_path / "b.sqlite"), BOARDS, METRICS)
    await p.open()
    try:
        d = await start(store, "m")
        await d.play(400)
        await p.catch_up()  # ticks 151..400 are counted
        counted = sum(kills_board(p).values())
        assert counted == await all_kills(store, "m")
        assert await kills_between(store, "m", 150, 401) > 0, "no kill to take back"
        with caplog.at_level(logging.INFO, "replay.leaderboards.projection"):
            await d.rewind(150)
            await d.play(500)
            await assert_exact(p, tmp_path, ["m"])
        assert REFOLD in caplog.text
        assert sum(kills_board(p).values()) < await all_kills(store, "m")
    finally:
        await p.close()
        await store.close()


async def test_a_rewind_before_the_abandoned_ticks_were_folded_costs_no_rebuild(
    tmp_path: Path, caplog
) -> None:
    """Two ways the projection meets a rewind before it folds the ticks it abandons:
    lagging (the ticks and the rewind come in one chunk), and held back (a match with a
    2 s spectator delay: its abandoned ticks wait behind the visibility edge, 60 ticks
    behind its newest, when the rewind comes). Either way they are passed over, with no
    rebuild."""
    store = open_test_store("memory:")
    await store.open()
    p = LeaderboardProjection(store, str(tmp_path / "b.sqlite"), BOARDS, METRICS)
    await p.open()
    try:
        d = await start(store, "m")
        late = await start(store, "late", seed=7, delay=2.0)
        for match in (d, late):
            await match.play(150)
        await p.catch_up()
        assert p.state.held.keys() == {"late"}
        for match in (d, late):
            await match.play(400)
        await late.rewind(370)  # 371..400 are still held: the edge is at 340
        await d.rewind(150)  # 151..400 come in the same chunk as the rewind
        with caplog.at_level(logging.INFO, "replay.leaderboards.projection"):
            await p.catch_up()
            assert "late" in p.state.held
            for match in (d, late):
                await match.play(600)
            # "late" is shown up to tick 540 (600 - 60), past its rewind.
            shown = await surviving_kills(store, ["m"]) + await kills_upto(store, "late", 540)
            await assert_exact(p, tmp_path, shown)
        assert REFOLD not in caplog.text
        assert await kills_between(store, "m", 150, 401) > 0, "no kill to leave out"
        assert await kills_between(store, "late", 370, 401) > 0, "no kill to leave out"
    finally:
        await p.close()
        await store.close()


async def test_two_rewinds_the_second_into_the_abandoned_branch_across_restarts(
    tmp_path: Path,
) -> None:
    """Rewind to 120 at 301, then at 451 to 250, a tick of the first rewind's abandoned
    branch: 121..250 are revived. The projection is restarted between each step (what it
    keeps per live match is in its read model), and the match is played to its end."""
    store = open_test_store("memory:")
    await store.open()
    boards = str(tmp_path / "b.sqlite")
    try:
        d = await start(store, "m", seconds=25.0)
        other = await start(store, "o", seconds=25.0, seed=9)  # shares the players' boards
        await other.play(700)
        await d.play(300)
        async with LeaderboardProjection(store, boards, BOARDS, METRICS) as p:
            await p.catch_up()
        await d.rewind(120)
        await d.play(450)
        async with LeaderboardProjection(store, boards, BOARDS, METRICS) as p:
            await assert_exact(p, tmp_path, ["m", "o"])
        assert await kills_between(store, "m", 120, 251) > 0, "no kill to revive"
        await d.rewind(250)
        async with LeaderboardProjection(store, boards, BOARDS, METRICS) as p:
            await assert_exact(p, tmp_path, ["m", "o"])
            assert p.state.tallies["m"].rewinds == [(301, 120), (451, 250)]
        await d.play(10_000)  # to the time limit: the match ends
        assert d.machine.over
        async with LeaderboardProjection(store, boards, BOARDS, METRICS) as p:
            await assert_exact(p, tmp_path, ["m", "o"])
            assert "m" not in p.state.tallies
            # The match's end counted its surviving timeline: best_score is the
            # scoreboard of the final state, whose kills are the surviving ones.
            final = {r["player"]: r["kills"] for r in ARENA.scoreboard(d.machine.state)}
            surviving = await surviving_kills(store, ["m"])
            assert final == {pl: surviving.get(pl, 0) for pl in final}
    finally:
        await store.close()


async def test_a_rewind_due_when_the_projection_stopped_is_done_at_open(tmp_path: Path) -> None:
    """The projection stops between folding a rewind and its rebuild (the rebuild fails
    here): the due rebuild is kept with the checkpoint and done at the next open."""
    store = open_test_store("memory:")
    await store.open()
    boards = str(tmp_path / "b.sqlite")
    try:
        d = await start(store, "m")
        await d.play(300)
        p = LeaderboardProjection(store, boards, BOARDS, METRICS)
        await p.open()
        await p.catch_up()
        await d.rewind(100)

        async def fail(*_a: object, **_k: object) -> int:
            raise RuntimeError("stopped before the rebuild")

        p.rebuild = fail  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="before the rebuild"):
            await p.catch_up()
        assert p.position == await store.last_position()
        await p.close()
        async with LeaderboardProjection(store, boards, BOARDS, METRICS) as p:
            assert kills_board(p) == dict(await surviving_kills(store, ["m"]))
            await assert_exact(p, tmp_path, ["m"])
    finally:
        await store.close()
