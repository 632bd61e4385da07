"""The replay engine against the live simulation: exact at every tick, keyframes
skipped when bad, bounded cache, live matches, keyframe rebuilds. Over memory
stores, except where the test damages or hand-writes an SQLite file's rows."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from games import ARENA, GAMES, open_test_store
from replay_matches import (
    MatchFile,
    MatchInMemory,
    record_match,
    shared_arena_file,
    shared_arena_match,
)

from replay.engine import ReplayEngine
from replay.errors import TickOutOfRangeError, UnknownMatchError
from replay.keyframes import checksum, keyframe_interval_ticks, rebuild_keyframes

RULES = ARENA


@pytest.fixture(scope="session")
def arena() -> MatchInMemory:
    return shared_arena_match()


@pytest.fixture(scope="session")
def arena_file(tmp_path_factory: pytest.TempPathFactory) -> MatchFile:
    return shared_arena_file(tmp_path_factory)


def h(state: object) -> bytes:
    return RULES.state_hash(state)


async def test_every_tick_equals_the_live_hash(arena: MatchInMemory) -> None:
    match = arena.match
    assert set(match.hashes) == set(range(match.last_tick + 1))
    async with arena.store() as store:
        engine = ReplayEngine(store, GAMES)
        for tick, live in match.hashes.items():
            assert h(await engine.state_at(match.match_id, tick)) == live, tick


async def test_cold_seeks_start_from_the_nearest_keyframe(arena: MatchInMemory) -> None:
    match = arena.match
    interval = keyframe_interval_ticks(30)
    async with arena.store() as store:
        kf_ticks = await store.keyframe_ticks(match.match_id)
        assert kf_ticks == list(range(interval, match.last_tick + 1, interval))
        probes = [0, 1, interval - 1, *kf_ticks, *(t + 1 for t in kf_ticks), match.last_tick]
        for tick in probes:
            engine = ReplayEngine(store, GAMES)  # cold: no cache
            assert h(await engine.state_at(match.match_id, tick)) == match.hashes[tick]
            expected_base = max([-1, *(k for k in kf_ticks if k <= tick)])
            assert engine.stats.last_base_tick == expected_base, tick
            # Never a fold from tick 0 when a keyframe at or before the tick exists.
            assert engine.stats.from_start == (1 if expected_base == -1 else 0)


async def test_answers_are_copies_and_repeats_hit_the_cache(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        engine = ReplayEngine(store, GAMES)
        first = await engine.state_at(match.match_id, 400)
        first.x[:] = 12345  # the caller owns its copy
        first.tick = 7
        again = await engine.state_at(match.match_id, 400)
        assert engine.stats.cache_hits == 1
        assert h(again) == match.hashes[400]
        # Scrubbing just after a cached tick folds only the few ticks in between.
        await engine.state_at(match.match_id, 410)
        assert engine.stats.last_base_tick == 400


async def test_cache_stays_within_its_byte_budget(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        one = len(RULES.encode_state(await ReplayEngine(store, GAMES).state_at(match.match_id, 10)))
        engine = ReplayEngine(store, GAMES, cache_bytes=3 * one)
        for tick in range(0, match.last_tick, 37):
            assert h(await engine.state_at(match.match_id, tick)) == match.hashes[tick]
            assert engine.cache.bytes <= 3 * one
        assert 1 <= len(engine.cache) <= 3


async def test_ticks_outside_the_match_are_typed_errors(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        engine = ReplayEngine(store, GAMES)
        for bad in (-1, match.last_tick + 1, 10**9):
            with pytest.raises(TickOutOfRangeError) as err:
                await engine.state_at(match.match_id, bad)
            assert err.value.code == "tick_out_of_range"
            assert err.value.last_tick == match.last_tick
        with pytest.raises(UnknownMatchError):
            await engine.state_at("no-such-match", 0)
        # The engine still answers afterwards.
        assert h(await engine.state_at(match.match_id, 5)) == match.hashes[5]


def _overwrite_keyframe(db: Path, tick: int, sql_set: str, *args: object) -> None:
    with sqlite3.connect(db) as conn:
        cur = conn.execute(f"UPDATE keyframes SET {sql_set} WHERE tick = ?", (*args, tick))
        assert cur.rowcount == 1


async def test_corrupt_keyframe_is_skipped_with_a_warning(
    arena_file: MatchFile, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    match = arena_file.match
    db = arena_file.copy(tmp_path / "corrupt.db")
    _overwrite_keyframe(db, 450, "data = ?", b"\x00garbage")
    async with open_test_store(str(db)) as store:
        engine = ReplayEngine(store, GAMES)
        with caplog.at_level(logging.WARNING, logger="replay.keyframes"):
            state = await engine.state_at(match.match_id, 500)
        assert h(state) == match.hashes[500]
        assert engine.stats.keyframes_skipped == 1
        assert engine.stats.last_base_tick == 300  # the next earlier keyframe
        assert "checksum mismatch" in caplog.text and "@450" in caplog.text


async def test_keyframe_of_unknown_format_is_skipped(
    arena_file: MatchFile, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    match = arena_file.match
    db = arena_file.copy(tmp_path / "future.db")
    _overwrite_keyframe(db, 300, "format_version = 99")
    # A keyframe whose checksum matches but whose bytes do not decode.
    _overwrite_keyframe(db, 150, "data = ?, checksum = ?", b"\xc1", checksum(b"\xc1"))
    async with open_test_store(str(db)) as store:
        engine = ReplayEngine(store, GAMES)
        with caplog.at_level(logging.WARNING, logger="replay.keyframes"):
            assert h(await engine.state_at(match.match_id, 449)) == match.hashes[449]
        assert engine.stats.keyframes_skipped == 2
        assert engine.stats.last_base_tick == -1  # both skipped: folded from tick 0
        assert "format 99" in caplog.text and "undecodable" in caplog.text


async def test_live_match_up_to_its_latest_durable_tick() -> None:
    async with open_test_store("memory:") as store:
        first = await record_match(
            store, "live", seconds=60, max_ticks=200, keyframes=False, end=False
        )
        engine = ReplayEngine(store, GAMES)
        assert h(await engine.state_at("live", 200)) == first.hashes[200]
        with pytest.raises(TickOutOfRangeError):
            await engine.state_at("live", 201)
        assert (await engine.match("live")).status == "running"
        # More ticks arrive (recorded here by replaying the same seed further):
        # the engine sees the new edge without being told.
        async with open_test_store("memory:") as other:
            longer = await record_match(
                other, "live", seconds=60, max_ticks=400, keyframes=False, end=False
            )
            for batch in await other.read_batches("live", from_tick=201):
                events = [e.new_event() for e in batch.recorded()]
                await store.append("live", events, batch.first_seq - 1)
        assert h(await engine.state_at("live", 400)) == longer.hashes[400]
        assert longer.hashes[200] == first.hashes[200]


async def test_rebuild_writes_keyframes_every_interval() -> None:
    async with open_test_store("memory:") as store:
        match = await record_match(store, seconds=12, keyframes=False)
        assert await store.keyframe_ticks("m1") == []
        written = await rebuild_keyframes(store, GAMES, "m1", seconds=2.0)
        assert await store.keyframe_ticks("m1") == list(range(60, match.last_tick + 1, 60))
        assert written == len(await store.keyframe_ticks("m1"))
        for tick in await store.keyframe_ticks("m1"):
            keyframe = await store.get_keyframe("m1", tick)
            assert keyframe is not None
            assert (
                h(RULES.decode_state(keyframe.data, keyframe.format_version))
                == (match.hashes[tick])
            )


async def test_scoreboard_at_any_tick(arena: MatchInMemory) -> None:
    match = arena.match
    async with arena.store() as store:
        engine = ReplayEngine(store, GAMES)
        final = await engine.scoreboard_at(match.match_id, match.last_tick)
        kills = sum(r["kills"] for r in final)
        assert kills > 0 and len(final) == 8
        assert kills == len(
            [
                e
                for e in await store.read(match.match_id)
                if e.type == RULES.catalog.by_name("killed").code
            ]
        )
        early = await engine.scoreboard_at(match.match_id, 1)
        assert all(r["kills"] == 0 and r["deaths"] == 0 for r in early)
        assert final == RULES.scoreboard(
            await engine.fold_from_start(match.match_id, match.last_tick)
        )


async def test_old_schema_events_replay_through_upcasters() -> None:
    """A match whose ``joined`` events were stored at version 1 (no display name)."""
    joined = RULES.catalog.by_name("joined")
    assert joined.version == 2
    async with open_test_store("memory:") as new, open_test_store("memory:") as old:
        await record_match(new, seconds=10, keyframes=False)
        record = await new.get_match("m1")
        await old.create_match(record.with_changes(status="running", ended_at=None))
        expected = RULES.initial_state(record.settings, record.seed)
        for batch in await new.read_batches("m1"):
            events = [e.new_event() for e in batch.recorded()]
            v1 = [
                e._replace(data=e.data[:2], version=1) if e.type == joined.code else e
                for e in events
            ]
            await old.append("m1", v1, batch.first_seq - 1)
            # What v1 meant: the player id was shown, so it is the name.
            upcast = [
                e._replace(data=(*e.data[:2], e.data[1])) if e.type == joined.code else e
                for e in events
            ]
            RULES.evolve(expected, upcast, upcast[-1].tick)
        stored = [e for e in await old.read("m1") if e.type == joined.code]
        assert stored and all(e.version == 2 and e.data[2] == e.data[1] for e in stored)
        state = await ReplayEngine(old, GAMES).state_at("m1", record.last_tick)
        RULES.evolve(expected, [], record.last_tick)
        assert h(state) == h(expected)
        assert [s["name"] for s in RULES.scoreboard(state)] == [
            s["player"] for s in RULES.scoreboard(state)
        ]


GOLDEN = Path(__file__).parent / "golden" / "arena_events_v1.msgpack"


async def test_golden_v1_batch_replays_through_the_engine(tmp_path: Path) -> None:
    """Bytes an older build stored (tests/golden, never regenerated), read by the store
    (upcast on read) and folded by the engine, also from an exported file."""
    from replay.codec import decode_batch
    from replay.replay_file import ReplayFileReader, export_match
    from replay.store.base import MatchRecord

    golden = GOLDEN.read_bytes()
    raw = decode_batch(golden, 100)
    db = tmp_path / "golden.db"
    async with open_test_store(str(db)) as store:
        await store.create_match(MatchRecord("old", "arena", "0.9.0", 30, ("alice", "bob")))
    with sqlite3.connect(db) as conn:  # the batch row exactly as the old build wrote it
        (mkey,) = conn.execute("SELECT mkey FROM matches WHERE match_id = 'old'").fetchone()
        conn.execute(
            "INSERT INTO batches (position, mkey, first_seq, count, base_tick, last_tick,"
            " first_id, blob) VALUES (?, ?, 1, ?, 100, ?, ?, ?)",
            (len(raw), mkey, len(raw), raw[-1][2], bytes(16), golden),
        )
        conn.execute("UPDATE matches SET status = 'ended' WHERE mkey = ?", (mkey,))
    expected = RULES.initial_state({}, 0)
    async with open_test_store(str(db)) as store:
        assert await rebuild_keyframes(store, GAMES, "old", seconds=1.0) == 6  # ticks 30..180
        await export_match(store, "old", tmp_path / "old.mrp")
        engine = ReplayEngine(store, GAMES)
        with ReplayFileReader(tmp_path / "old.mrp", GAMES.catalogs()) as reader:
            from_file = ReplayEngine(reader, GAMES)
            for tick in range(0, raw[-1][2] + 1):
                RULES.evolve(expected, [e for e in raw if e[2] == tick], tick)
                assert h(await engine.state_at("old", tick)) == h(expected), tick
                assert h(await from_file.state_at("old", tick)) == h(expected), tick
    assert expected.ended and expected.winner == "alice" and expected.names[0] == "alice"


async def test_keyframe_at_or_before_is_the_one_base_selection(
    arena_file: MatchFile, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a server sends a folding client (STATE + FRAMEs) comes from the same
    selection as a seek: bad keyframes skipped once and remembered, the cache reused."""
    match = arena_file.match
    db = arena_file.copy(tmp_path / "base.db")
    _overwrite_keyframe(db, 450, "data = ?", b"\x00garbage")
    async with open_test_store(str(db)) as store:
        engine = ReplayEngine(store, GAMES)
        assert await engine.keyframe_at_or_before(match.match_id, 149) is None
        with caplog.at_level(logging.WARNING, logger="replay.keyframes"):
            tick, state = await engine.keyframe_at_or_before(match.match_id, 500)
            assert tick == 300 and h(state) == match.hashes[300]
            state.x[:] = 1  # the caller's copy: the cached keyframe stays intact
            again = await engine.keyframe_at_or_before(match.match_id, 460)
            assert again is not None and h(again[1]) == match.hashes[300]
            # A seek goes through the same record of bad keyframes: no second warning.
            assert h(await engine.state_at(match.match_id, 470)) == match.hashes[470]
        assert engine.stats.keyframes_skipped == 1
        assert caplog.text.count("checksum mismatch") == 1
        assert engine.stats.last_base_tick == 300
        assert engine.cache.get(match.match_id, 300) is not None  # decoded once, kept
        tick, state = await engine.keyframe_at_or_before(match.match_id, 600)
        assert tick == 600 and h(state) == match.hashes[600]
        with pytest.raises(TickOutOfRangeError):
            await engine.keyframe_at_or_before(match.match_id, match.last_tick + 1)
