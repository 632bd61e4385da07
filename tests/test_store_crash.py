"""Acknowledged means durable: SIGKILL a writing child process at random moments.

The child (tests/store_crash_child.py) appends from several matches at once and
prints every ack. After each kill the store must hold every acknowledged event,
seqs gap-free per match and positions gap-free overall (an SQLite file must also
pass ``PRAGMA integrity_check``); the next child reopens the same store and
carries on, so recovery is exercised each round. Run on SQLite and PostgreSQL.
(SIGKILL tests a process crash; machine-crash durability rests on SQLite's
``synchronous=FULL`` fsyncing the WAL at every commit, and on PostgreSQL's
``synchronous_commit=on``.)
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from replay.store import open_store

KILLS = 24
MATCHES = 6
CHILD = Path(__file__).with_name("store_crash_child.py")
ROOT = CHILD.parent.parent


async def _run_and_kill(db: str, delay: float, acked: dict[str, int]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        db,
        str(MATCHES),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready = asyncio.get_running_loop().create_future()

    async def collect() -> None:
        async for raw in proc.stdout:  # type: ignore[union-attr]
            line = raw.decode().split()
            if line == ["ready"] and not ready.done():
                ready.set_result(None)
            elif line and line[0] == "ack":
                acked[line[1]] = max(acked.get(line[1], 0), int(line[2]))

    reader = asyncio.create_task(collect())
    await asyncio.wait_for(ready, 30)
    await asyncio.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL
    await reader  # every ack written before the kill is still in the pipe


def _check_file(db: str, acked: dict[str, int]) -> None:
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for match_id, last_acked in acked.items():
            rows = raw.execute(
                "SELECT first_seq, count FROM batches JOIN matches USING (mkey)"
                " WHERE match_id = ? ORDER BY first_seq",
                (match_id,),
            ).fetchall()
            expected_first = 1
            for first_seq, count in rows:
                assert first_seq == expected_first, f"gap in {match_id} at seq {first_seq}"
                expected_first += count
            assert expected_first - 1 >= last_acked, (match_id, expected_first - 1, last_acked)
        positions = [p for (p,) in raw.execute("SELECT position FROM batches ORDER BY position")]
        counts = [c for (c,) in raw.execute("SELECT count FROM batches ORDER BY position")]
        # Each row's position is the previous row's plus its own count: no global gap.
        assert all(p == q + c for q, p, c in zip([0, *positions], positions, counts, strict=False))


async def _check_store(url: str, acked: dict[str, int]) -> None:
    async with open_store(url) as store:
        for match_id, last_acked in acked.items():
            seqs = [e.seq for e in await store.read(match_id)]
            assert seqs == list(range(1, len(seqs) + 1)), f"gap in {match_id}"
            assert len(seqs) >= last_acked, (match_id, len(seqs), last_acked)
        positions = [e.position for e in await store.read_all(0, limit=10**7)]
        assert positions == list(range(1, len(positions) + 1))


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "crash.db")
    return request.getfixturevalue("pg_url")


async def test_sigkill_never_loses_an_acknowledged_append(crash_store: str) -> None:
    db = crash_store
    is_file = not db.startswith("postgresql://")
    rng = random.Random(2024)
    acked: dict[str, int] = {}
    kills = KILLS if is_file else KILLS // 2  # a PostgreSQL child takes longer to start
    for _ in range(kills):
        before = sum(acked.values())
        await _run_and_kill(db, rng.uniform(0.0, 0.25), acked)
        if is_file:
            _check_file(db, acked)
        else:
            await _check_store(db, acked)
        assert sum(acked.values()) >= before
    assert len(acked) == MATCHES and sum(acked.values()) > kills

    async with open_store(db) as store:
        for match_id, last_acked in acked.items():
            events = await store.read(match_id)
            assert len(events) >= last_acked
            assert all(e.data == (e.seq,) for e in events)
            ticks = [e.tick for e in events]
            assert ticks == sorted(ticks)
        everything = await store.read_all(0, limit=10**7)
        assert [e.position for e in everything] == list(range(1, len(everything) + 1))
