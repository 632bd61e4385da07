"""The .mrp replay file: exact round trip, direct playback, and every bad file refused
with a typed error and nothing imported. Exports and imports go through memory stores;
the CLI runs as a real child process on an SQLite store file."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from games import ARENA, GAMES, open_test_store
from replay_matches import MatchFile, MatchInMemory, shared_arena_file, shared_arena_match

from replay.engine import ReplayEngine
from replay.errors import (
    MatchExistsError,
    ReplayFileCorruptError,
    ReplayFileError,
    ReplayFileTruncatedError,
    ReplayFileUnsupportedError,
    UnknownMatchError,
)
from replay.playback import Playback
from replay.replay_file import (
    ReplayFileReader,
    export_match,
    import_replay,
    read_header,
)
from replay.store.base import EventStore

RULES = ARENA
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def arena() -> MatchInMemory:
    return shared_arena_match()


@pytest.fixture(scope="session")
def arena_file(tmp_path_factory: pytest.TempPathFactory) -> MatchFile:
    return shared_arena_file(tmp_path_factory)


@pytest.fixture(scope="session")
def exported(arena: MatchInMemory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    path = tmp_path_factory.mktemp("mrp") / "m1.mrp"

    async def run() -> None:
        async with arena.store() as store:
            await export_match(store, "m1", path)

    asyncio.run(run())
    return path


def _events(events: list) -> list[tuple]:
    return [(e.seq, e.tick, e.type, e.version, e.data, e.id) for e in events]


async def test_export_then_import_round_trips_exactly(arena: MatchInMemory, exported: Path) -> None:
    match = arena.match
    async with arena.store() as source, open_test_store("memory:") as target:
        imported = await import_replay(exported, target)
        original = await source.get_match("m1")
        for field in ("game", "rules_version", "tick_rate", "players", "settings", "seed"):
            assert getattr(imported, field) == getattr(original, field), field
        assert (imported.status, imported.ended_at, imported.created_at) == (
            original.status,
            original.ended_at,
            original.created_at,
        )
        assert (imported.version, imported.last_tick) == (original.version, original.last_tick)
        assert _events(await target.read("m1")) == _events(await source.read("m1"))
        assert await target.keyframe_ticks("m1") == await source.keyframe_ticks("m1")
        for tick in await source.keyframe_ticks("m1"):
            assert await target.get_keyframe("m1", tick) == await source.get_keyframe("m1", tick)
        engine = ReplayEngine(target, GAMES)
        for tick in range(0, match.last_tick + 1, 7):
            assert RULES.state_hash(await engine.state_at("m1", tick)) == match.hashes[tick]


async def test_the_engine_plays_the_file_directly(arena: MatchInMemory, exported: Path) -> None:
    match = arena.match
    with ReplayFileReader(exported, GAMES.catalogs()) as reader:
        engine = ReplayEngine(reader, GAMES)
        for tick, live in match.hashes.items():
            assert RULES.state_hash(await engine.state_at("m1", tick)) == live, tick
        assert engine.stats.from_keyframe > 0
        async with arena.store() as store:
            from_store = [f async for f in Playback(ReplayEngine(store, GAMES), "m1", speed=None)]
        from_file = [f async for f in Playback(engine, "m1", speed=None)]
        assert from_file == from_store
        assert await ReplayEngine(reader, GAMES).scoreboard_at("m1", match.last_tick) == (
            RULES.scoreboard(await engine.state_at("m1", match.last_tick))
        )
        with pytest.raises(UnknownMatchError):
            await engine.state_at("other", 1)


def test_header_only_read_does_not_touch_the_events(exported: Path, tmp_path: Path) -> None:
    info = read_header(exported)
    assert info.record.match_id == "m1" and info.record.game == "arena"
    assert info.record.tick_rate == 30 and info.events > 0 and info.keyframes > 0
    # Only the first bytes are read: the same header on a file with no events at all.
    header_end = 32 + struct.unpack_from("<I", exported.read_bytes(), 12)[0]
    cut = tmp_path / "header-only.mrp"
    cut.write_bytes(exported.read_bytes()[:header_end])
    assert read_header(cut) == info


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


def _bad_files(exported: Path) -> dict[str, tuple[bytes, type[ReplayFileError]]]:
    good = exported.read_bytes()
    with ReplayFileReader(exported, GAMES.catalogs()) as reader:
        chunk = reader.chunks[len(reader.chunks) // 2]
        keyframe = reader.keyframes[0]
    footer_offset = struct.unpack_from("<Q", good, len(good) - 40)[0]
    future = good[:8] + struct.pack("<H", 2) + good[10:]
    return {
        "empty": (b"", ReplayFileTruncatedError),
        "prefix only": (good[:20], ReplayFileTruncatedError),
        "half": (good[: len(good) // 2], ReplayFileTruncatedError),
        "last byte missing": (good[:-1], ReplayFileTruncatedError),
        "bad magic": (_flip(good, 0), ReplayFileCorruptError),
        "header byte": (_flip(good, 40), ReplayFileCorruptError),
        "chunk byte": (_flip(good, chunk.offset + chunk.length // 2), ReplayFileCorruptError),
        "keyframe byte": (_flip(good, keyframe.offset + 3), ReplayFileCorruptError),
        "footer byte": (_flip(good, footer_offset + 5), ReplayFileCorruptError),
        "future version": (future, ReplayFileUnsupportedError),
    }


async def _assert_empty(store: EventStore) -> None:
    assert await store.list_matches() == []
    with pytest.raises(UnknownMatchError):
        await store.get_match("m1")


async def test_bad_files_are_refused_and_nothing_is_imported(
    exported: Path, tmp_path: Path
) -> None:
    async with open_test_store("memory:") as store:
        for name, (data, error) in _bad_files(exported).items():
            path = tmp_path / f"{name}.mrp"
            path.write_bytes(data)
            with pytest.raises(error) as err:
                await import_replay(path, store)
            assert err.value.code.startswith("replay_file_"), name
            await _assert_empty(store)
        # A corrupt keyframe is still readable directly: skipped, the answer exact.
        path = tmp_path / "keyframe byte.mrp"
        with ReplayFileReader(path, GAMES.catalogs()) as reader:
            engine = ReplayEngine(reader, GAMES)
            first_kf = reader.keyframes[0].tick
            state = await engine.state_at("m1", first_kf + 10)
            assert engine.stats.keyframes_skipped == 1
        with ReplayFileReader(exported, GAMES.catalogs()) as reader:
            assert RULES.state_hash(state) == RULES.state_hash(
                await ReplayEngine(reader, GAMES).state_at("m1", first_kf + 10)
            )


async def test_an_existing_match_id_is_refused(exported: Path) -> None:
    async with open_test_store("memory:") as store:
        first = await import_replay(exported, store)
        with pytest.raises(MatchExistsError) as err:
            await import_replay(exported, store)
        assert err.value.code == "match_exists"
        assert await store.get_match("m1") == first
        assert len(await store.list_matches()) == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_export_import_and_keyframe_rebuild(arena_file: MatchFile, tmp_path: Path) -> None:
    db = arena_file.copy(tmp_path / "source.db")
    out = tmp_path / "cli.mrp"
    done = _cli("keyframes", "rebuild", "m1", "--db", str(db))
    assert done.returncode == 0, done.stderr
    done = _cli("export", "m1", "-o", str(out), "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert read_header(out).record.match_id == "m1"
    target = tmp_path / "target.db"
    done = _cli("import", str(out), "--db", str(target))
    assert done.returncode == 0, done.stderr
    assert "m1" in done.stdout
    # Errors: a typed code and a message, exit status 1, nothing written.
    done = _cli("import", str(out), "--db", str(target))
    assert done.returncode == 1 and "match_exists" in done.stderr
    out.write_bytes(out.read_bytes()[:-10])
    done = _cli("import", str(out), "--db", str(tmp_path / "other.db"))
    assert done.returncode == 1 and "replay_file_truncated" in done.stderr
    done = _cli("export", "nope", "-o", str(tmp_path / "x.mrp"), "--db", str(db))
    assert done.returncode == 1 and "unknown_match" in done.stderr
    assert not (tmp_path / "x.mrp").exists()


async def test_a_file_holding_old_schema_events_is_upcast_on_read(tmp_path: Path) -> None:
    """The golden version-1 batch (tests/golden) written into a file as is: the reader
    upcasts it with the game's catalog, like the store does."""
    from replay.codec import decode_batch
    from replay.replay_file import FORMAT_VERSION, _Writer
    from replay.store.base import EventBatch

    raw = decode_batch((ROOT / "tests" / "golden" / "arena_events_v1.msgpack").read_bytes(), 100)
    assert {v for t, v, _, _ in raw if t == RULES.catalog.by_name("joined").code} == {1}
    path = tmp_path / "old.mrp"
    with open(path, "wb") as f:
        w = _Writer(f)
        w.prefix_and_header(
            {
                "match_id": "old",
                "game": "arena",
                "rules_version": "0.9.0",
                "tick_rate": 30,
                "players": ["alice", "bob"],
                "settings": {},
                "seed": 0,
                "created_at": 0.0,
                "ended_at": 1.0,
                "status": "ended",
                "events": len(raw),
                "last_tick": raw[-1][2],
                "keyframes": 0,
                "exported_at": 1.0,
            }
        )
        w.chunk([EventBatch("old", 1, 1, 0, raw)])
        w.footer_and_trailer()
    assert read_header(path).format_version == FORMAT_VERSION
    with ReplayFileReader(path, GAMES.catalogs()) as reader:
        reader.verify()
        (batch,) = await reader.read_batches("old")
        assert batch.events[0] == (3, 2, 100, (0, "alice", "alice"))  # joined v1 -> v2
        state = await ReplayEngine(reader, GAMES).state_at("old", raw[-1][2])
    expected = RULES.initial_state({}, 0)
    RULES.evolve(expected, raw, raw[-1][2])
    assert RULES.state_hash(state) == RULES.state_hash(expected)
    async with open_test_store("memory:") as store:
        await import_replay(path, store)
        joined = [e for e in await store.read("old") if e.type == 3]
        assert [e.data for e in joined] == [(0, "alice", "alice"), (1, "bob", "bob")]
