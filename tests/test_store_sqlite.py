"""What only the SQLite recorder has (the shared contract runs in test_store_backends.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from games import open_test_store
from store_contract import record, tick_batch

from replay.codec import encode_batch
from replay.errors import CorruptEventError, StoreSchemaError
from replay.events import NewEvent
from replay.keyframes import checksum
from replay.store.base import Keyframe
from replay.store.recorder import MatchRow, NewBatch, batch_checksum
from replay.store.sqlite import SCHEMA_VERSION, SQLiteEventStore, SQLiteRecorder


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "events.db")


async def test_corrupt_row_names_match_and_seqs_and_spares_other_matches(db: str) -> None:
    async with SQLiteEventStore(db) as store:
        good, bad = await store.create_match(record()), await store.create_match(record())
        for m in (good, bad):
            await store.append(m.match_id, tick_batch(0, 3), 0)
            await store.append(m.match_id, tick_batch(1, 3), 3)
    with sqlite3.connect(db) as raw:
        raw.execute(
            "UPDATE batches SET blob = x'c1c1c1' WHERE first_seq = 4 AND mkey ="
            " (SELECT mkey FROM matches WHERE match_id = ?)",
            (bad.match_id,),
        )
    async with SQLiteEventStore(db) as store:
        with pytest.raises(CorruptEventError) as err:
            await store.read(bad.match_id)
        assert err.value.code == "corrupt_event"
        assert f"match {bad.match_id!r} seq 4..6" in str(err.value)
        assert len(await store.read(bad.match_id, 1, 3)) == 3  # rows before it still read
        assert len(await store.read(good.match_id)) == 6
        await store.append(good.match_id, tick_batch(2, 3), 6)  # and the store still writes


async def test_reopen_continues_versions_positions_and_status(db: str) -> None:
    async with open_test_store(f"sqlite:///{db}") as store:
        m = await store.create_match(record())
        ended = await store.create_match(record())
        first = await store.append(m.match_id, tick_batch(3), 0)
        await store.update_match(ended.match_id, status="ended")
    async with SQLiteEventStore(db, synchronous="NORMAL") as store:
        second = await store.append(m.match_id, tick_batch(4), 4)
        assert second.first_seq == 5 and second.first_position == first.last_position + 1
        with pytest.raises(Exception) as err:
            await store.append(m.match_id, tick_batch(5), 4)
        assert getattr(err.value, "code", None) == "concurrency"
        with pytest.raises(Exception) as err:
            await store.append(ended.match_id, tick_batch(5), 0)
        assert getattr(err.value, "code", None) == "match_ended"
        with pytest.raises(Exception) as err:
            await store.append(m.match_id, tick_batch(2), 8)  # before the stored tick 4
        assert getattr(err.value, "code", None) == "invalid_event"


async def test_concurrent_appends_are_group_committed(db: str) -> None:
    async with SQLiteEventStore(db) as store:
        ms = [await store.create_match(record()) for _ in range(100)]
        commits = store.commits
        await asyncio.gather(*(store.append(m.match_id, tick_batch(0), 0) for m in ms))
        # 100 appends, a handful of transactions (two group commits may be in flight).
        assert store.commits - commits < 20


async def test_an_open_reader_does_not_block_appends(db: str) -> None:
    async with SQLiteEventStore(db) as store:
        m = await store.create_match(record())
        await store.append(m.match_id, tick_batch(0), 0)
        raw = sqlite3.connect(db, isolation_level=None)
        try:
            raw.execute("BEGIN")
            assert raw.execute("SELECT count(*) FROM batches").fetchone() == (1,)
            await store.append(m.match_id, tick_batch(1), 4)  # a snapshot is held open
            assert len(await store.read(m.match_id)) == 8
            assert raw.execute("SELECT count(*) FROM batches").fetchone() == (1,)
        finally:
            raw.close()


async def test_durability_level_is_applied_and_validated(db: str) -> None:
    for level, code in (("FULL", 2), ("NORMAL", 1)):
        async with SQLiteEventStore(db, synchronous=level) as store:  # type: ignore[arg-type]
            recorder = store.recorder
            assert isinstance(recorder, SQLiteRecorder)
            assert await recorder._reader.fetch("PRAGMA journal_mode") == [("wal",)]
            assert await recorder._writer.fetch("PRAGMA synchronous") == [(code,)]
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteEventStore(db, synchronous="OFF")  # type: ignore[arg-type]


async def test_configurable_event_size_limit(db: str) -> None:
    async with SQLiteEventStore(db, max_event_bytes=64) as store:
        m = await store.create_match(record())
        await store.append(m.match_id, [NewEvent(1, 0, (b"x" * 50,))], 0)
        with pytest.raises(Exception) as err:
            await store.append(m.match_id, [NewEvent(1, 0, (b"x" * 64,))], 1)
        assert getattr(err.value, "code", None) == "event_too_large"
        assert "limit is 64" in str(err.value)


async def test_a_group_larger_than_one_insert_commits_whole(db: str, monkeypatch) -> None:
    # A group is one multi-row INSERT up to SQLite's parameter limit, then several in
    # the same transaction: lower the limit so a small group takes that path.
    import replay.store.sqlite as sqlite_store

    async with SQLiteEventStore(db) as store:
        matches = [await store.create_match(record()) for _ in range(10)]
        for m in matches:  # a first append each: the match keys are cached from now on
            await store.append(m.match_id, tick_batch(0, 1), 0)
        monkeypatch.setattr(sqlite_store, "_ROWS_PER_INSERT", 3)
        # With the keys cached an append enqueues without awaiting, so the ten tasks
        # are all queued before the writer task next runs: one group of ten rows.
        commits = store.commits
        results = await asyncio.gather(
            *(store.append(m.match_id, tick_batch(1, 2), 1) for m in matches)
        )
        assert store.commits == commits + 1
        assert sorted(r.last_position for r in results) == list(range(12, 31, 2))
        writer = store.recorder._writer.conn  # type: ignore[attr-defined]
        assert writer is not None and not writer.in_transaction
        for m in matches:
            assert len(await store.read(m.match_id)) == 3
    async with SQLiteEventStore(db) as store:  # durable, and positions continue
        extra = await store.append(matches[0].match_id, tick_batch(2, 2), 3)
        assert extra.last_position == 32


OLD_SCHEMA = """
CREATE TABLE matches (
    mkey INTEGER PRIMARY KEY, match_id TEXT NOT NULL UNIQUE, game TEXT NOT NULL,
    rules_version TEXT NOT NULL, tick_rate INTEGER NOT NULL, players TEXT NOT NULL,
    settings TEXT NOT NULL, seed INTEGER NOT NULL, created_at REAL NOT NULL, ended_at REAL,
    status TEXT NOT NULL
);
CREATE TABLE batches (
    position INTEGER PRIMARY KEY, mkey INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, base_tick INTEGER NOT NULL, last_tick INTEGER NOT NULL,
    first_id BLOB NOT NULL, blob BLOB NOT NULL
);
CREATE UNIQUE INDEX batches_seq ON batches(mkey, first_seq);
CREATE INDEX batches_tick ON batches(mkey, last_tick);
CREATE TABLE keyframes (
    mkey INTEGER NOT NULL, tick INTEGER NOT NULL, format_version INTEGER NOT NULL,
    data BLOB NOT NULL, checksum BLOB NOT NULL, PRIMARY KEY (mkey, tick)
) WITHOUT ROWID;
"""
"""A store file as the first releases wrote it: no options, types or checksum columns,
no schema version."""


async def test_an_old_store_file_opens_reads_and_carries_on(db: str) -> None:
    from replay.codec import encode_batch

    with sqlite3.connect(db) as raw:
        raw.executescript(OLD_SCHEMA)
        raw.execute(
            "INSERT INTO matches VALUES (1, 'old', 'g', '1', 30, '[\"a\"]', '{}', 7, 1.0, NULL,"
            " 'running')"
        )
        for b in range(3):
            events = tick_batch(b, 4)
            raw.execute(
                "INSERT INTO batches VALUES (?, 1, ?, 4, ?, ?, ?, ?)",
                ((b + 1) * 4, b * 4 + 1, b, b, (b * 4).to_bytes(16, "big"), encode_batch(events)),
            )
    async with SQLiteEventStore(db) as store:
        m = await store.get_match("old")
        assert (m.version, m.last_tick, m.options, m.players) == (12, 2, {}, ("a",))
        assert [e.new_event() for e in await store.read("old")] == [
            e for b in range(3) for e in tick_batch(b, 4)
        ]
        batches, through = await store.scan(0, 10, {6})  # NULL types: decoded, not skipped
        assert through == 12 and len(batches) == 3
        await store.append("old", tick_batch(3, 4), 12)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        sums = raw.execute("SELECT checksum IS NOT NULL FROM batches ORDER BY position")
        assert [s for (s,) in sums] == [0, 0, 0, 1]  # old rows unchecked, new ones checked


async def test_a_newer_store_file_is_refused(db: str) -> None:
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version=99")
    with pytest.raises(StoreSchemaError) as err:
        async with SQLiteEventStore(db):
            pass
    assert err.value.code == "store_schema" and "99" in str(err.value)


async def test_a_group_commit_waits_for_the_writers_thread_and_is_staged_on_the_loop_when_idle(
    db: str, monkeypatch
) -> None:
    # A small group's statements run on the event loop's thread when the writer's
    # thread is idle; while that thread works (here: a call that has not returned), the
    # whole group queues behind it instead of using the connection at the same time.
    import threading

    import replay.store.sqlite as sqlite_store

    staged_on: list[int] = []
    stage = sqlite_store._stage_group

    def spy(c, rows):  # type: ignore[no-untyped-def]
        staged_on.append(threading.get_ident())
        return stage(c, rows)

    monkeypatch.setattr(sqlite_store, "_stage_group", spy)
    async with SQLiteEventStore(db) as store:
        recorder = store.recorder
        assert isinstance(recorder, SQLiteRecorder)
        m = await store.create_match(record())
        await store.append(m.match_id, tick_batch(0, 1), 0)
        assert staged_on == [threading.get_ident()]  # the thread was idle: on the loop

        release = threading.Event()

        def hold(c: sqlite3.Connection) -> None:
            # Busy with the connection, no transaction open: only the idle check, not
            # SQLite's own "transaction within a transaction" refusal, keeps the loop off.
            c.execute("SELECT count(*) FROM batches").fetchone()
            release.wait(10)

        held = asyncio.ensure_future(recorder._writer.run(hold))
        await asyncio.sleep(0.05)
        appended = asyncio.ensure_future(store.append(m.match_id, tick_batch(1, 1), 1))
        await asyncio.sleep(0.1)
        assert not appended.done()  # behind the thread's transaction
        release.set()
        await held
        assert (await appended).last_seq == 2
        assert staged_on[1] != threading.get_ident()  # staged on the writer's thread

        # Thread work and group commits interleaving: every write lands, none at once.
        matches = [m, *[await store.create_match(record()) for _ in range(3)]]
        for other in matches[1:]:
            await store.append(other.match_id, tick_batch(0, 2), 0)
        for tick in range(2, 32):
            await asyncio.gather(
                *(store.append(x.match_id, tick_batch(tick, 1), tick) for x in matches[1:]),
                store.append(m.match_id, tick_batch(tick, 1), tick),
                store.update_match(matches[tick % 4].match_id, players=[f"p{tick}"]),
            )
        writer = recorder._writer.conn
        assert writer is not None and not writer.in_transaction
        assert [e.tick for e in await store.read(m.match_id)] == list(range(32))
        assert (await store.get_match(matches[31 % 4].match_id)).players == ("p31",)
    assert len(set(staged_on)) == 2


async def test_a_slow_commit_on_the_loop_sends_the_next_ones_to_the_writers_thread(
    db: str, monkeypatch
) -> None:
    # The loop commits a small group itself, but never waits long for the disk: after a
    # COMMIT slower than LOOP_COMMIT_MAX_S the next ones go to the writer's thread. There,
    # a caller cancelled while its COMMIT runs must not leave the transaction open (the
    # next group would fail) or the group half written.
    import threading
    import time

    import replay.store.sqlite as sqlite_store

    committed_on: list[int] = []
    commit = sqlite_store._commit

    def slow_first(c: sqlite3.Connection) -> None:
        committed_on.append(threading.get_ident())
        if len(committed_on) == 1:
            time.sleep(sqlite_store.LOOP_COMMIT_MAX_S * 2)  # a stalled disk
        commit(c)

    monkeypatch.setattr(sqlite_store, "_commit", slow_first)
    recorder = SQLiteRecorder(db)
    await recorder.open()
    try:
        mkey = await recorder.insert_match(
            MatchRow(0, "m", "g", "1", 30, "[]", "{}", 1, 1.0, None, "running", "{}")
        )

        def batch(first_seq: int) -> NewBatch:
            blob = encode_batch(tick_batch(first_seq, 1))
            first_id = first_seq.to_bytes(16, "big")
            checksum = batch_checksum(mkey, first_seq, 1, first_seq, first_seq, first_id, blob)
            return NewBatch(
                mkey, first_seq, 1, first_seq, first_seq, first_id, blob, 1 << 6, checksum
            )

        assert await recorder.insert_group([batch(1)]) == [1]
        task = asyncio.ensure_future(recorder.insert_group([batch(2)]))
        await asyncio.sleep(0)  # its statements ran here; its COMMIT is on the thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await recorder.insert_group([batch(3)]) == [3]  # no transaction left open
        assert [b.first_seq for b in await recorder.batches_by_seq(mkey, 1, 9)] == [1, 2, 3]
        loop_thread = threading.get_ident()
        assert committed_on[0] == loop_thread
        assert loop_thread not in committed_on[1:] and len(committed_on) == 3
    finally:
        await recorder.close()


async def test_writes_started_together_while_commits_go_to_the_thread_all_land(db: str) -> None:
    # After a slow COMMIT, a transaction's statements run on the loop and its COMMIT on
    # the writer's thread. Another write started in the same loop turn (a keyframe batch
    # beside a group commit) must find the thread busy and queue behind that COMMIT:
    # started on the loop or ahead of it on the thread, it met the open transaction
    # ("cannot start a transaction within a transaction") and failed every match.
    import time

    async with SQLiteEventStore(db) as store:
        recorder = store.recorder
        assert isinstance(recorder, SQLiteRecorder)
        matches = [await store.create_match(record()) for _ in range(4)]
        recorder._writer._commits_in_thread_until = time.monotonic() + 60
        for tick in range(5):
            await asyncio.gather(
                *(store.append(m.match_id, tick_batch(tick, 1), tick) for m in matches),
                *(
                    store.put_keyframe(Keyframe(m.match_id, tick, 1, b"k", b"c" * 16))
                    for m in matches
                ),
            )
        for m in matches:
            assert [e.tick for e in await store.read(m.match_id)] == list(range(5))
            assert await store.keyframe_ticks(m.match_id) == list(range(5))
        writer = recorder._writer.conn
        assert writer is not None and not writer.in_transaction


async def test_a_write_lock_held_by_another_process_never_blocks_the_event_loop(
    db: str,
) -> None:
    # An outside process (a sqlite3 shell's checkpoint, a tool) holding SQLite's write
    # lock: the group waits for it on the writer's thread, not on the event loop, and
    # commits once the lock is free.
    import threading

    async with SQLiteEventStore(db, busy_timeout_ms=5000) as store:
        m = await store.create_match(record())
        await store.append(m.match_id, tick_batch(0, 1), 0)
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        try:
            other.execute("BEGIN IMMEDIATE")
            released = threading.Event()

            def release() -> None:
                other.execute("ROLLBACK")
                released.set()

            threading.Timer(0.5, release).start()
            appended = asyncio.ensure_future(store.append(m.match_id, tick_batch(1, 1), 1))
            beats = 0
            while not appended.done():
                await asyncio.sleep(0.02)
                beats += 1
            assert released.is_set()
            assert (await appended).last_seq == 2
            assert beats >= 10  # the loop ran on while the lock was held (~0.5 s)
            writer = store.recorder._writer.conn  # type: ignore[attr-defined]
            assert writer is not None and not writer.in_transaction
            await store.append(m.match_id, tick_batch(2, 1), 2)  # back on the loop
        finally:
            other.close()


async def test_keyframes_put_together_are_written_in_one_transaction(db: str) -> None:
    # The matches of a process tick together, so their keyframes fall due together: one
    # transaction (one fsync) for all of them, not one each in a row on the writer's
    # thread, where the group commits arriving meanwhile would wait behind them.
    async with SQLiteEventStore(db) as store:
        recorder = store.recorder
        assert isinstance(recorder, SQLiteRecorder)
        matches = [await store.create_match(record()) for _ in range(30)]
        writer = recorder._writer.conn
        assert writer is not None
        begun: list[str] = []
        writer.set_trace_callback(lambda sql: sql.startswith("BEGIN") and begun.append(sql))

        def frame(match_id: str, tick: int, size: int = 900) -> Keyframe:
            data = bytes([tick % 256]) * size
            return Keyframe(match_id, tick, 1, data, checksum(data))

        await asyncio.gather(*(store.put_keyframe(frame(m.match_id, 150)) for m in matches))
        assert len(begun) == 1
        # One put while that batch is being written goes in the next one; a caller that
        # stops waiting still has its keyframe written; bulk (27 KiB) or small, all land.
        first = [asyncio.ensure_future(store.put_keyframe(frame(m.match_id, 300))) for m in matches]
        while recorder._keyframe_batch is None:  # until the batch gathers them
            await asyncio.sleep(0)
        while recorder._keyframe_batch is not None:  # and is taken to be written
            await asyncio.sleep(0)
        late = asyncio.ensure_future(store.put_keyframe(frame(matches[0].match_id, 301, 10)))
        first[1].cancel()
        await asyncio.gather(*first, late, return_exceptions=True)
        assert len(begun) == 3
        for m in matches:
            assert await store.keyframe_ticks(m.match_id) == (
                [150, 300, 301] if m is matches[0] else [150, 300]
            )
            got = await store.get_keyframe(m.match_id, 300)
            assert got is not None and got.data == frame(m.match_id, 300).data
        assert not writer.in_transaction
    # The store closed with nothing left to write: its file has all 61 keyframes.
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM keyframes").fetchone() == (61,)


async def test_keyframes_put_just_before_close_are_written(db: str) -> None:
    # The keyframes of a batch still gathering when the store closes (the server stopping
    # right after a keyframe tick) are written before the writer's connection goes.
    store = SQLiteEventStore(db)
    await store.open()
    matches = [await store.create_match(record()) for _ in range(3)]
    puts = [
        asyncio.ensure_future(store.put_keyframe(Keyframe(m.match_id, 5, 1, b"k", b"c" * 16)))
        for m in matches
    ]
    await asyncio.sleep(0)  # the puts join a batch, whose write has not started
    await store.close()
    await asyncio.gather(*puts)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM keyframes").fetchone() == (3,)
