"""Arena matches for the replay tests: the offline generator's bots, recorded into a
store, with the live state hashes the generator reported. The shared match is
recorded once into memory; tests about SQLite files get it copied into one."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from games import ARENA, GAMES, open_test_store, store_over

from replay.keyframes import rebuild_keyframes
from replay.offline import simulate
from replay.store.base import EventStore, MatchRecord
from replay.store.copy import copy_store
from replay.store.memory import MemoryRecorder

# Ticks appended per wave of concurrent appends: the store's group commit writes
# a wave in one or a few transactions instead of one fsync per tick.
WAVE_TICKS = 200


@dataclass
class Recorded:
    match_id: str
    last_tick: int
    hashes: dict[int, bytes]
    """Live state hash at every tick asked for."""
    events: int


class _All:
    def __contains__(self, tick: object) -> bool:
        return True


ALL_TICKS: Container[int] = _All()


async def record_match(
    store: EventStore,
    match_id: str = "m1",
    *,
    players: int = 8,
    seconds: float = 20.0,
    tick_rate: int = 30,
    seed: int = 7,
    hash_ticks: Container[int] = ALL_TICKS,
    max_ticks: int | None = None,
    keyframes: bool = True,
    end: bool = True,
) -> Recorded:
    rules = ARENA
    settings = ARENA.bot_match_settings(players, seconds, tick_rate)
    await store.create_match(
        MatchRecord(
            match_id,
            "arena",
            rules.version,
            tick_rate,
            players=tuple(f"bot-{i:03d}" for i in range(1, players + 1)),
            settings=settings,
            seed=seed,
            status="running",
        )
    )
    # The live state at tick 0 is the initial state: the generator's first tick is 1.
    hashes = {0: rules.state_hash(rules.initial_state(settings, seed))} if 0 in hash_ticks else {}
    version = 0
    wave: list[asyncio.Future[object]] = []
    for out in simulate(ARENA, players, settings, seed, hash_ticks=hash_ticks, max_ticks=max_ticks):
        if out.state_hash is not None:
            hashes[out.tick] = out.state_hash
        if out.events:
            wave.append(asyncio.ensure_future(store.append(match_id, out.events, version)))
            version += len(out.events)
        if len(wave) >= WAVE_TICKS:
            await asyncio.gather(*wave)
            wave = []
    await asyncio.gather(*wave)
    if keyframes:
        await rebuild_keyframes(store, GAMES, match_id)
    if end:
        await store.update_match(match_id, status="ended", ended_at=1.0)
    record = await store.get_match(match_id)
    # Only ticks up to the last stored event are part of the recorded match.
    hashes = {t: h for t, h in hashes.items() if t <= record.last_tick}
    return Recorded(match_id, record.last_tick, hashes, version)


@dataclass
class MatchInMemory:
    """Memory rows holding one recorded match (never opened themselves: copy them)."""

    recorder: MemoryRecorder
    match: Recorded

    def store(self) -> EventStore:
        """A fresh memory store (to open) over a copy of the rows: changes stay in it."""
        return store_over(self.recorder.clone())


def record_in_memory(**kwargs: Any) -> MatchInMemory:
    recorder = MemoryRecorder()

    async def run() -> Recorded:
        async with store_over(recorder) as store:
            return await record_match(store, **kwargs)

    return MatchInMemory(recorder, asyncio.run(run()))


@dataclass
class MatchFile:
    """A closed SQLite store file holding one recorded match (copy it before changing it)."""

    path: Path
    match: Recorded

    def copy(self, to: Path) -> Path:
        shutil.copy(self.path, to)
        return to


async def copy_to_file(rows: MemoryRecorder, path: Path) -> None:
    """Copy memory rows into a new SQLite store file, as stored (same seqs, positions,
    ids, keyframes, statuses)."""
    async with (
        EventStore(rows.clone()) as source,  # no catalogs: events copied as stored
        open_test_store(str(path), synchronous="NORMAL") as target,
    ):
        await copy_store(source, target)


_shared_match: list[MatchInMemory] = []
_shared_file: list[MatchFile] = []


def shared_arena_match() -> MatchInMemory:
    """An ended 8-player, 20-second arena match with keyframes and every tick's live hash,
    recorded into memory once per test session (test modules wrap this in their own
    fixture and open a fresh copy per test)."""
    if not _shared_match:
        _shared_match.append(record_in_memory())
    return _shared_match[0]


def shared_arena_file(tmp_path_factory: Any) -> MatchFile:
    """The shared arena match (:func:`shared_arena_match`) in an SQLite store file, for
    the tests about files (damaged rows, old rows, the CLI on a file)."""
    if not _shared_file:
        memory = shared_arena_match()
        path = tmp_path_factory.mktemp("arena") / "match.db"
        asyncio.run(copy_to_file(memory.recorder, path))
        _shared_file.append(MatchFile(path, memory.match))
    return _shared_file[0]
