"""The recorder contract (replay/store/recorder.py) over memory, SQLite and PostgreSQL,
and what only real processes show: conflicts and wake-ups across writer processes,
positions that never interleave, a database that goes away mid-append."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PgCluster
from store_contract import record, tick_batch

from replay.codec import encode_batch
from replay.errors import LeaseLostError, MatchEndedError, StoreUnavailableError
from replay.keyframes import checksum
from replay.store import open_store
from replay.store.base import EventStore, Keyframe
from replay.store.memory import MemoryRecorder
from replay.store.postgres import SCHEMA_VERSION as PG_SCHEMA
from replay.store.postgres import PostgresRecorder
from replay.store.recorder import (
    BatchRow,
    Conflict,
    MatchRow,
    NewBatch,
    Recorder,
    batch_checksum,
    type_mask,
)
from replay.store.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA
from replay.store.sqlite import SQLiteRecorder

CHILD = Path(__file__).with_name("store_writer_child.py")
ROOT = CHILD.parent.parent


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory:"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("pg_url")


def make_recorder(url: str) -> Recorder:
    if url == "memory:":
        return MemoryRecorder()
    if url.startswith("sqlite:///"):
        return SQLiteRecorder(url.removeprefix("sqlite:///"))
    return PostgresRecorder(url)


@pytest.fixture
async def recorder(url: str):
    r = make_recorder(url)
    await r.open()
    yield r
    await r.close()


def match_row(match_id: str, status: str = "running") -> MatchRow:
    return MatchRow(0, match_id, "g", "1", 30, "[]", "{}", 1, 1.0, None, status, "{}")


def batch(mkey: int, first_seq: int, ticks: tuple[int, int] = (0, 0), n: int = 2, type_=6):
    events = [*tick_batch(ticks[0], n - 1, type_), *tick_batch(ticks[1], 1, type_)]
    first_id = (mkey << 64 | first_seq).to_bytes(16, "big")
    blob = encode_batch(events)
    checksum = batch_checksum(mkey, first_seq, n, *ticks, first_id, blob)
    return NewBatch(mkey, first_seq, n, *ticks, first_id, blob, type_mask({type_}), checksum)


async def test_a_closed_recorder_ends_waits_and_one_opened_again_waits(
    recorder: Recorder, url: str
) -> None:
    """A wait for a commit on a closed recorder returns at once (on every backend); a
    recorder opened again after close() waits for a commit again (no instant return,
    which would make a subscriber spin: tests reuse a filled memory recorder), and a
    commit wakes it."""
    mkey = await recorder.insert_match(match_row("a"))
    assert await recorder.insert_group([batch(mkey, 1)]) == [2]
    await recorder.close()
    await asyncio.wait_for(recorder.wait_for_commit(2, 3600.0), 60.0)  # closed: at once
    if url.startswith("sqlite:"):
        return  # an SQLite recorder is not opened twice: its worker threads end at close
    await recorder.open()
    waiter = asyncio.create_task(recorder.wait_for_commit(2, 60.0))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()  # nothing committed past position 2
    assert await recorder.insert_group([batch(mkey, 3)]) == [4]
    await waiter


async def test_groups_insert_conditionally_in_commit_order(recorder: Recorder) -> None:
    a = await recorder.insert_match(match_row("a"))
    b = await recorder.insert_match(match_row("b"))
    ended = await recorder.insert_match(match_row("c", status="ended"))
    outcomes = await recorder.insert_group(
        [
            batch(a, 1, (0, 1)),  # accepted: positions 1..2
            batch(a, 1, (1, 1)),  # a is at 2 now: the group's earlier rows count
            batch(a, 3, (1, 2)),  # accepted: 3..4
            batch(b, 5),  # b is at 0: a gap is a conflict too
            batch(ended, 1),
            batch(a, 5, (1, 1)),  # tick 1 is before a's last stored tick 2
            batch(9999, 1),
            batch(b, 1, (3, 4)),  # accepted: 5..6
        ]
    )
    assert outcomes == [
        2,
        Conflict("version", 2),
        4,
        Conflict("version", 0),
        Conflict("ended", status="ended"),
        Conflict("tick", 2),
        Conflict("unknown"),
        6,
    ]
    assert await recorder.head() == 6
    # The unique key: a second group at a taken seq is refused whatever its size.
    assert await recorder.insert_group([batch(a, 3, (2, 2), n=5)]) == [Conflict("version", 4)]
    row = await recorder.find_batch(a, 3)
    assert row is not None and (row.position, row.count, row.base_tick) == (4, 2, 1)
    assert await recorder.find_batch(a, 2) is None
    got = await recorder.match("a")
    assert got is not None and (got.version, got.last_tick) == (4, 2)
    assert [r.first_seq for r in await recorder.batches_by_seq(a, 2, 3)] == [1, 3]
    assert [r.first_seq for r in await recorder.batches_by_tick(a, 2, 9)] == [3]
    assert [r.first_seq for r in await recorder.batches_by_tick(b, 0, 3)] == [1]


async def test_a_group_of_distinct_matches_decides_each_row_on_its_own(
    recorder: Recorder,
) -> None:
    """Each match at most once in a group (a tick's group; PostgreSQL decides such a
    group in one query, not row by row): every refusal reason, the accepted rows
    numbered in order around the refused ones."""
    a, b, c, d = [await recorder.insert_match(match_row(m)) for m in "abcd"]
    ended = await recorder.insert_match(match_row("e", status="ended"))
    fenced = await recorder.insert_match(match_row("f"))
    assert await recorder.acquire_lease("f", "n1/f", 30, None) is not None
    assert await recorder.insert_group([batch(a, 1, (0, 1)), batch(b, 1, (0, 3))]) == [2, 4]
    outcomes = await recorder.insert_group(
        [
            batch(9999, 1),
            batch(a, 3, (1, 2)),  # accepted: 5..6
            batch(b, 3, (1, 1)),  # tick 1 is before b's last stored tick 3
            batch(ended, 1),
            batch(c, 1, (0, 0), n=3),  # accepted: 7..9
            batch(d, 5),  # d is at 0
            batch(fenced, 1)._replace(epoch=7),  # the stored epoch is 1
        ]
    )
    assert outcomes == [
        Conflict("unknown"),
        6,
        Conflict("tick", 3),
        Conflict("ended", status="ended"),
        9,
        Conflict("version", 0),
        Conflict("epoch", 1),
    ]
    assert await recorder.head() == 9
    assert [(r.position, r.first_seq) for r in await recorder.batches_by_seq(c, 1, 9)] == [(9, 1)]
    assert await recorder.find_batch(d, 5) is None
    # All refused: nothing written, the head stays.
    assert await recorder.insert_group([batch(d, 2), batch(a, 1)]) == [
        Conflict("version", 0),
        Conflict("version", 4),
    ]
    assert await recorder.head() == 9


async def test_a_failing_group_writes_nothing(url: str, recorder: Recorder) -> None:
    if url == "memory:":
        pytest.skip("the memory recorder has no failing backend")
    a = await recorder.insert_match(match_row("a"))
    await recorder.insert_group([batch(a, 1)])
    bad = batch(a, 5)._replace(blob=None)  # NOT NULL: the backend refuses the statement
    with pytest.raises(Exception):  # noqa: B017 - whatever the backend raises
        await recorder.insert_group([batch(a, 3), bad._replace(first_seq=5)])
    assert await recorder.head() == 2
    assert await recorder.find_batch(a, 3) is None
    assert await recorder.insert_group([batch(a, 3)]) == [4]  # and it still writes


async def test_scan_filters_by_type_mask_and_says_how_far(recorder: Recorder) -> None:
    a = await recorder.insert_match(match_row("a"))
    kinds = [6, 7, 6, 70, 63, 6]
    await recorder.insert_group([batch(a, 1 + 2 * i, (i, i), type_=t) for i, t in enumerate(kinds)])
    assert await recorder.scan(0, 100, type_mask({7})) == (
        12,
        [await recorder.find_batch(a, 3)],
    )
    through, rows = await recorder.scan(2, 3, type_mask({6}))
    assert through == 8 and [r.position for r in rows] == [6]
    through, rows = await recorder.scan(0, 100, type_mask({100}))  # shares bit 62 with 70, 63
    assert through == 12 and [r.position for r in rows] == [8, 10]
    through, rows = await recorder.scan(4, 2, None)
    assert through == 8 and [r.position for r in rows] == [6, 8]
    assert await recorder.scan(12, 10, None) == (12, [])
    assert all(isinstance(r, BatchRow) for r in rows)


async def test_match_rows_and_keyframes(recorder: Recorder) -> None:
    a = await recorder.insert_match(match_row("a"))
    with pytest.raises(Exception) as err:
        await recorder.insert_match(match_row("a"))
    assert getattr(err.value, "code", None) == "match_exists"

    def refuse(status: str, epoch: int) -> None:
        raise ValueError(status)

    with pytest.raises(ValueError, match="running"):
        await recorder.update_match("a", {"status": "ended"}, refuse)
    updated = await recorder.update_match("a", {"status": "ended"}, lambda s, e: None)
    assert updated is not None and updated.status == "ended"
    assert (updated.owner, updated.epoch) == ("", 0)
    assert await recorder.update_match("nope", {}, lambda s, e: None) is None
    await recorder.put_keyframe(a, 10, 1, b"x", b"c")
    await recorder.put_keyframe(a, 10, 2, b"y", b"d")
    assert await recorder.keyframe(a, 11) == (10, 2, b"y", b"d")
    assert await recorder.keyframe(a, 9) is None
    assert await recorder.delete_keyframes(a, 11) == 1


async def test_match_rows_by_id(recorder: Recorder) -> None:
    for match_id, status in (("a", "ended"), ("b", "running"), ("c", "running")):
        await recorder.insert_match(match_row(match_id, status))
    rows = await recorder.matches(None, None, 10, 0, ["c", "a", "unknown"])
    assert sorted(r.match_id for r in rows) == ["a", "c"]
    assert {r.match_id: r.status for r in rows} == {"a": "ended", "c": "running"}
    # With the other filters, and the limit.
    assert [r.match_id for r in await recorder.matches(["running"], None, 10, 0, ["a", "c"])] == [
        "c"
    ]
    assert len(await recorder.matches(None, None, 1, 0, ["a", "b", "c"])) == 1
    assert await recorder.matches(None, None, 10, 0, []) == []


# -- across processes -------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store several processes can open."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("pg_url")


async def test_two_processes_at_one_version_one_wins(pg_url: str) -> None:
    """On PostgreSQL, which many writer processes share (an SQLite file has one writer
    process: the next test)."""
    shared_url = pg_url
    async with open_store(shared_url) as store:
        m = await store.create_match(record())
    racers = [_child("race", shared_url, m.match_id) for _ in range(2)]
    try:
        assert [await asyncio.to_thread(_line, p) for p in racers] == ["ready", "ready"]
        version = 0
        for tick in range(15):
            for p in racers:
                p.stdin.write(f"go {version} {tick}\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            answers = sorted([await asyncio.to_thread(_line, p) for p in racers])
            assert answers == ["conflict", f"ok {version + 4}"], (tick, answers)
            version += 4
    finally:
        for p in racers:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(60)
    async with open_store(shared_url) as store:
        assert [e.seq for e in await store.read(m.match_id)] == list(range(1, 61))


async def test_a_second_writer_process_on_an_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    async with open_store(url) as store:
        m = await store.create_match(record())
        racer = subprocess.run(
            [sys.executable, str(CHILD), "race", url, m.match_id],
            cwd=ROOT,
            input="",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert racer.returncode != 0 and "ready" not in racer.stdout
        assert f"open for writing by pid {os.getpid()}" in racer.stderr, racer.stderr
        assert (await store.append(m.match_id, tick_batch(0), 0)).last_seq == 4


async def test_a_commit_in_another_process_wakes_a_waiter(shared_url: str) -> None:
    async with open_store(shared_url):
        pass  # the store exists; the waiter only reads it, beside the writer process
    async with open_store(shared_url, read_only=True) as store:
        head = await store.last_position()
        writer = _child("write", shared_url, "w", "1", "1")
        try:
            assert await asyncio.to_thread(_line, writer) == "ready"
            waiting = asyncio.create_task(store.wait_for_commit(head, 120))
            await asyncio.sleep(0)
            writer.stdin.write("go\n")  # type: ignore[union-attr]
            writer.stdin.flush()  # type: ignore[union-attr]
            start = asyncio.get_running_loop().time()
            await asyncio.wait_for(waiting, 120)
            # Woken by the commit, not by the end of the wait.
            assert asyncio.get_running_loop().time() - start < 120
            assert await store.last_position() > head
            assert (await asyncio.to_thread(_line, writer)).startswith("ack")
        finally:
            writer.stdin.close()  # type: ignore[union-attr]
            writer.wait(60)


async def test_positions_never_interleave_across_writer_processes(pg_url: str) -> None:
    """3 writer processes append at once while 2 readers scan: each reader sees
    positions 1, 2, 3, ... with no gap (a late commit below a seen position would
    leave one), and every acknowledged event exactly once."""
    writers, matches, batches = 3, 4, 25
    total = writers * matches * batches * 4
    procs = [_child("write", pg_url, f"w{i}", str(matches), str(batches)) for i in range(writers)]
    try:
        assert [await asyncio.to_thread(_line, p) for p in procs] == ["ready"] * writers

        async def read_all(limit: int) -> list[int]:
            seen: list[int] = []
            async with open_store(pg_url) as store:
                while len(seen) < total:
                    batches_ = await store.read_all_batches(seen[-1] if seen else 0, limit)
                    for b in batches_:
                        seen.extend(range(b.first_position, b.last_position + 1))
                    if not batches_:
                        await store.wait_for_commit(seen[-1] if seen else 0, 1.0)
            return seen

        readers = [asyncio.create_task(read_all(n)) for n in (7, 50)]
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        acked: list[int] = []
        for p in procs:
            out, _ = await asyncio.to_thread(p.communicate, None, 300)
            for line in out.split("\n"):
                if line.startswith("ack"):
                    _, first, last = line.split()
                    acked.extend(range(int(first), int(last) + 1))
            assert p.returncode == 0
        assert sorted(acked) == list(range(1, total + 1))
        for seen in await asyncio.wait_for(asyncio.gather(*readers), 300):
            assert seen == list(range(1, total + 1))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


async def test_a_database_that_goes_away_fails_appends_then_recovers(
    pg_cluster: PgCluster,
) -> None:
    store: EventStore = open_store(pg_cluster.url)
    await store.open()
    try:
        ms = [await store.create_match(record()) for _ in range(20)]
        versions = dict.fromkeys((m.match_id for m in ms), 0)
        acked = 0

        async def play(match_id: str) -> None:
            nonlocal acked
            for tick in range(10**6):
                await store.append(match_id, tick_batch(tick), versions[match_id])
                versions[match_id] += 4
                acked += 4

        players = [asyncio.create_task(play(m.match_id)) for m in ms]
        while acked < 400:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(pg_cluster.stop, "immediate")
        # Every pending append fails, with the store's error: none hangs.
        done, _ = await asyncio.wait(players, timeout=120)
        assert len(done) == len(players)
        errors = {type(p.exception()) for p in players}
        assert errors == {StoreUnavailableError}
        assert all(p.exception().code == "store_unavailable" for p in players)  # type: ignore[union-attr]
        assert store.unavailable is not None  # what /healthz can report
        with pytest.raises(StoreUnavailableError):
            await store.get_match(ms[0].match_id)
        await asyncio.to_thread(pg_cluster.start)
        # Back: no acknowledged append was lost, and the same store writes again.
        for m in ms:
            stored = (await store.get_match(m.match_id)).version
            assert stored >= versions[m.match_id]
            await store.append(m.match_id, tick_batch(10**6), stored)
        assert store.unavailable is None
    finally:
        await store.close()
    assert os.path.isdir(pg_cluster.data)


async def test_a_newer_postgresql_schema_is_refused(pg_url: str) -> None:
    import asyncpg

    from replay.errors import StoreSchemaError

    async with open_store(pg_url):
        pass  # creates the schema, version 1
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("UPDATE matchreplay_schema SET version = 99")
    finally:
        await conn.close()
    with pytest.raises(StoreSchemaError) as err:
        async with open_store(pg_url):
            pass
    assert err.value.code == "store_schema" and "99" in str(err.value)


# -- leases ---------------------------------------------------------------------------


async def test_group_rows_are_fenced_by_the_stored_epoch(recorder: Recorder) -> None:
    a = await recorder.insert_match(match_row("a"))
    b = await recorder.insert_match(match_row("b"))
    ended = await recorder.insert_match(match_row("c", status="ended"))
    lease = await recorder.acquire_lease("a", "n1/a", 30, None)
    assert lease is not None and lease.epoch == 1
    outcomes = await recorder.insert_group(
        [
            batch(a, 1)._replace(epoch=1),  # the owner's: accepted
            batch(b, 1),  # unfenced: accepted
            batch(a, 3)._replace(epoch=0),  # an old owner's: refused, nothing written
            batch(ended, 1)._replace(epoch=5),  # the epoch is checked first
            batch(a, 3)._replace(epoch=1),  # the owner's next: accepted
        ]
    )
    assert outcomes == [2, 4, Conflict("epoch", 1), Conflict("epoch", 0), 6]
    got = await recorder.match("a")
    assert got is not None and (got.version, got.owner, got.epoch) == (4, "n1/a", 1)


async def test_a_takeover_is_ordered_with_group_commits(url: str) -> None:
    """The old owner appends as fast as it can while another node takes the match (on
    PostgreSQL through another connection pool, as another process would): every
    append of the old owner is stored before the takeover or refused after it, so the
    new owner's first append, at the version it read after taking the match, succeeds."""
    old: EventStore = open_store(url)
    await old.open()
    new = old if url == "memory:" or url.startswith("sqlite") else open_store(url)
    if new is not old:
        await new.open()
    try:
        for round_ in range(60):
            m = await old.create_match(record(status="running"))
            assert (await old.acquire_lease(m.match_id, "n1/a", 30)) is not None
            appended = asyncio.Event()

            async def zombie(match_id: str = m.match_id, flag: asyncio.Event = appended) -> int:
                version = 0
                while True:
                    try:
                        await old.append(match_id, tick_batch(version), version, epoch=1)
                    except LeaseLostError:
                        return version
                    version += 4
                    if version >= 8:
                        flag.set()

            writer = asyncio.create_task(zombie())
            await appended.wait()
            taken = await new.acquire_lease(m.match_id, "n2/b", 30, epoch=1)
            assert taken is not None and taken.epoch == 2
            version = (await new.get_match(m.match_id)).version
            result = await new.append(m.match_id, tick_batch(10**6), version, epoch=2)
            assert result.first_seq == version + 1, round_
            stopped_at = await asyncio.wait_for(writer, 60)
            assert stopped_at == version  # every acknowledged append is in the stream
    finally:
        if new is not old:
            await new.close()
        await old.close()


async def test_two_stores_racing_for_leases_one_wins_each(pg_url: str) -> None:
    """Two stores on one database (two connection pools, as two nodes have)."""
    stores = [open_store(pg_url), open_store(pg_url)]
    for s in stores:
        await s.open()
    try:
        ms = [await stores[0].create_match(record()) for _ in range(30)]
        got = await asyncio.gather(
            *(s.acquire_lease(m.match_id, f"n{i}/x", 30) for m in ms for i, s in enumerate(stores))
        )
        for m, pair in zip(ms, zip(got[::2], got[1::2], strict=True), strict=True):
            assert sorted(g is None for g in pair) == [False, True], pair
            winner = next(g for g in pair if g is not None)
            assert (winner.match_id, winner.epoch) == (m.match_id, 1)
            assert (await stores[1].lease(m.match_id))[1:3] == (winner.owner, 1)  # type: ignore[index]
    finally:
        for s in stores:
            await s.close()


async def test_two_processes_racing_for_leases_one_wins_each(pg_url: str) -> None:
    async with open_store(pg_url) as store:
        ids = [(await store.create_match(record())).match_id for _ in range(40)]
    racers = [_child("acquire", pg_url, f"n{i}/x", *ids) for i in range(2)]
    try:
        assert [await asyncio.to_thread(_line, p) for p in racers] == ["ready", "ready"]
        for p in racers:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        outputs = [await asyncio.to_thread(p.communicate, None, 120) for p in racers]
        assert [p.returncode for p in racers] == [0, 0]
    finally:
        for p in racers:
            if p.poll() is None:
                p.kill()
    winners: dict[str, list[str]] = {m: [] for m in ids}
    for i, (out, _) in enumerate(outputs):
        assert len(out.splitlines()) == len(ids)
        for verdict, match_id, *epoch in (line.split() for line in out.splitlines()):
            if verdict == "won":
                assert epoch == ["1"]
                winners[match_id].append(f"n{i}/x")
    assert all(len(w) == 1 for w in winners.values()), winners
    async with open_store(pg_url) as store:
        for match_id, (owner,) in winners.items():
            assert (await store.get_match(match_id)).owner == owner


async def test_leases_and_node_ages_follow_the_databases_clock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose clock is an hour off agrees with the others: PostgreSQL's clock
    decides when a lease lapses and how old a heartbeat is."""
    import time

    async with open_store(pg_url) as store:
        m = await store.create_match(record())
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)
        lease = await store.acquire_lease(m.match_id, "n1/a", 30)
        assert lease is not None and 0 < lease.expires_in <= 30
        assert await store.lapsed_leases() == []
        await store.heartbeat("n1/a", "n1", "ws://a/ws", "up", {})
        (node,) = await store.nodes(max_age=60)
        assert 0 <= node.age < 60 and abs(node.started_at - real()) < 60
        monkeypatch.setattr(time, "time", lambda: real() - 3600)
        assert await store.acquire_lease(m.match_id, "n2/b", 30) is None  # still live
        assert await store.forget_nodes(60) == 0


# -- migration --------------------------------------------------------------------------

GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store as matchreplay wrote it at schema version 1, before leases (the dumps in
    tests/golden were made by that code)."""
    if request.param == "sqlite":
        path = tmp_path / "events.db"
        with sqlite3.connect(path) as raw:
            raw.executescript((GOLDEN / "store_v1_sqlite.sql").read_text())
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_url")

    async def load() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute((GOLDEN / "store_v1_postgres.sql").read_text())
        finally:
            await conn.close()

    asyncio.run(load())
    return url


async def test_a_store_from_before_leases_opens_and_appends(old_store_url: str) -> None:
    async with open_store(old_store_url) as store:
        running = await store.get_match("old-running")
        assert (running.version, running.last_tick, running.status) == (8, 1, "running")
        assert (running.owner, running.epoch) == ("", 0)
        assert [e.new_event() for e in await store.read("old-running")] == [
            *tick_batch(0),
            *tick_batch(1),
        ]
        assert (await store.get_keyframe("old-running", 5)).data == b"state"  # type: ignore[union-attr]
        assert await store.last_position() == 10
        # Unfenced appends go on as before; the old match can be leased and fenced.
        assert (await store.append("old-running", tick_batch(2), 8)).last_position == 14
        lease = await store.acquire_lease("old-running", "n1/a", 30, epoch=0)
        assert lease is not None and lease.epoch == 1
        assert (await store.append("old-running", tick_batch(3), 12, epoch=1)).last_seq == 16
        with pytest.raises(LeaseLostError):
            await store.append("old-running", tick_batch(4), 16, epoch=0)
        with pytest.raises(MatchEndedError):
            await store.append("old-ended", tick_batch(1), 2)
        assert await store.lapsed_leases() == []
        await store.heartbeat("n1/a", "n1", "ws://a/ws", "up", {})
        assert [n.node for n in await store.nodes()] == ["n1/a"]
    async with open_store(old_store_url) as store:  # and opens again, migrated
        assert (await store.get_match("old-running")).version == 16
    if old_store_url.startswith("sqlite"):
        with sqlite3.connect(old_store_url.removeprefix("sqlite:///")) as raw:
            assert raw.execute("PRAGMA user_version").fetchone() == (SQLITE_SCHEMA,)
    else:
        import asyncpg

        conn = await asyncpg.connect(old_store_url)
        try:
            assert await conn.fetchval("SELECT max(version) FROM matchreplay_schema") == PG_SCHEMA
            # The old group-commit function is gone: a node still running the old code
            # fails its appends instead of misreading the new function's answers.
            functions = await conn.fetch(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'matchreplay%' ORDER BY 1"
            )
            assert [f[0] for f in functions] == ["matchreplay_commit_group"]
        finally:
            await conn.close()


async def test_a_group_gathered_during_a_commit_is_sent_at_once(pg_url: str) -> None:
    """PostgreSQL keeps two group commits in flight: the second waits for the first on
    the position lock inside the database, not in the store."""
    async with open_store(pg_url) as store:
        a, b = await store.create_match(record()), await store.create_match(record())
        for m in (a, b):  # their match keys known: nothing else is awaited
            await store.append(m.match_id, tick_batch(0), 0)
        inner = store.recorder.insert_group
        entered = asyncio.Event()
        running = [0, 0]  # now, most at once

        async def insert_group(rows):  # type: ignore[no-untyped-def]
            running[0] += 1
            running[1] = max(running)
            entered.set()
            try:
                return await inner(rows)
            finally:
                running[0] -= 1

        store.recorder.insert_group = insert_group  # type: ignore[method-assign]
        first = asyncio.create_task(store.append(a.match_id, tick_batch(1), 4))
        await entered.wait()
        second = await store.append(b.match_id, tick_batch(1), 4)
        got = sorted([await first, second], key=lambda r: r.first_position)
        assert running[1] == 2
        assert got[0].last_position + 1 == got[1].first_position  # no gap, no overlap
        assert await store.last_position() == got[1].last_position


def test_a_memory_clone_is_independent_and_bound_to_no_event_loop() -> None:
    """``MemoryRecorder.clone`` (tests record once, then each opens its own copy): the
    copy holds the same rows and keyframes, what is written to it stays in it, and it
    serves an event loop other than the one the original was filled in (a wait for a
    commit waits there, and the commit wakes it)."""
    original = MemoryRecorder()
    m = record()

    async def fill() -> None:
        async with EventStore(original) as store:
            await store.create_match(m)
            await store.append(m.match_id, tick_batch(0, 3), 0)
            await store.append(m.match_id, tick_batch(1, 2), 3)
            await store.put_keyframe(Keyframe(m.match_id, 1, 1, b"state", checksum(b"state")))
            await store.wait_for_commit(5, 0.01)  # a wait in this loop, timed out

    asyncio.run(fill())
    copy = original.clone()

    async def use(recorder: MemoryRecorder, more: bool) -> tuple[int, list[int], list[int]]:
        async with EventStore(recorder) as store:
            if more:
                waiter = asyncio.create_task(store.wait_for_commit(5, 60.0))
                for _ in range(20):
                    await asyncio.sleep(0)
                assert not waiter.done()  # nothing committed since position 5
                await store.append(m.match_id, tick_batch(2, 1), 5)
                await waiter
                await store.put_keyframe(Keyframe(m.match_id, 2, 1, b"later", checksum(b"later")))
            events = [e.position for e in await store.read(m.match_id)]
            return await store.last_position(), events, await store.keyframe_ticks(m.match_id)

    assert asyncio.run(use(copy, more=True)) == (6, [1, 2, 3, 4, 5, 6], [1, 2])
    assert asyncio.run(use(original, more=False)) == (5, [1, 2, 3, 4, 5], [1])
    assert asyncio.run(use(original.clone(), more=False)) == (5, [1, 2, 3, 4, 5], [1])
