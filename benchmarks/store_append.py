"""Durable append throughput of the SQLite event store against plain sqlite3.

100 matches append tick-shaped batches (64 small events each) concurrently
through ``SQLiteEventStore``; every append is awaited, i.e. durable at the
chosen ``synchronous`` level. In the same run, the same events are inserted
with plain ``sqlite3`` (no asyncio, no worker thread), one transaction per
batch of 64, same WAL/synchronous settings:

* baseline A: conventional per-event rows ``(match, seq, tick, type, payload)``;
* baseline B: our exact batch rows (one row per batch, our schema).

Baselines get their rows pre-encoded; the store's time includes encoding.
Targets (2-core reference machine, NORMAL): >= 150,000 events/s and >= 0.5 of
baseline A. Bytes per event: database file plus WAL after a checkpoint.

    python benchmarks/store_append.py [--synchronous NORMAL|FULL] [--ticks N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time

import msgpack

from replay.codec import encode_batch
from replay.events import NewEvent
from replay.store.base import MatchRecord
from replay.store.recorder import type_mask as _type_mask
from replay.store.sqlite import _SCHEMA, SQLiteEventStore, _insert_rows

MATCHES = 100
EVENTS_PER_BATCH = 64
TARGET_RATE = 150_000
TARGET_RATIO = 0.5


def make_batches(ticks: int) -> list[list[list[NewEvent]]]:
    """batches[match][tick]: 64 movement-like events of 8 players (type, player, x, y)."""
    return [
        [
            [
                NewEvent(6, t, (i % 8, (m * 7 + t * 3 + i) % 2000, (t * 5 + i) % 1500))
                for i in range(EVENTS_PER_BATCH)
            ]
            for t in range(ticks)
        ]
        for m in range(MATCHES)
    ]


def jsonl_bytes(batches: list[list[list[NewEvent]]]) -> int:
    """Size of the events as JSON lines with the full envelope, as an export would write."""
    total = 0
    for m, ticks in enumerate(batches):
        seq = 0
        for events in ticks:
            for e in events:
                seq += 1
                line = {"match_id": f"bench-{m}", "seq": seq, "position": seq, "tick": e.tick}
                line |= {"type": e.type, "version": e.version, "data": list(e.data)}
                total += len(json.dumps(line, separators=(",", ":"))) + 1
    return total


def disk_bytes(path: str) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


async def run_store(path: str, sync: str, batches: list[list[list[NewEvent]]]) -> float:
    async with SQLiteEventStore(path, synchronous=sync) as store:  # type: ignore[arg-type]
        ids = [f"bench-{m}" for m in range(MATCHES)]
        for match_id in ids:
            await store.create_match(MatchRecord(match_id, "bench", "1", 30))

        async def play(match_id: str, ticks: list[list[NewEvent]]) -> None:
            version = 0
            for events in ticks:
                version = (await store.append(match_id, events, version)).last_seq

        start = time.perf_counter()
        await asyncio.gather(*(play(i, b) for i, b in zip(ids, batches, strict=True)))
        return time.perf_counter() - start


def connect(path: str, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    return conn


def run_per_event_rows(path: str, sync: str, batches: list[list[list[NewEvent]]]) -> float:
    conn = connect(path, sync)
    conn.execute(
        "CREATE TABLE events (match INTEGER, seq INTEGER, tick INTEGER, type INTEGER,"
        " payload BLOB, PRIMARY KEY (match, seq))"
    )
    ticks = len(batches[0])
    rows = [
        [
            [
                (m, t * EVENTS_PER_BATCH + i + 1, e.tick, e.type, msgpack.packb(e.data))
                for i, e in enumerate(batches[m][t])
            ]
            for m in range(MATCHES)
        ]
        for t in range(ticks)
    ]
    start = time.perf_counter()
    for per_tick in rows:  # tick by tick, match by match: the same interleaving
        for batch in per_tick:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", batch)
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def run_batch_rows(path: str, sync: str, batches: list[list[list[NewEvent]]]) -> float:
    conn = connect(path, sync)
    conn.executescript(_SCHEMA)
    ticks = len(batches[0])
    rows = []
    position = 0
    for t in range(ticks):
        for m in range(MATCHES):
            events = batches[m][t]
            position += len(events)
            first_id = (m << 64 | t * EVENTS_PER_BATCH).to_bytes(16, "big")
            rows.append(
                (
                    position,
                    m + 1,
                    t * EVENTS_PER_BATCH + 1,
                    len(events),
                    events[0].tick,
                    events[-1].tick,
                    first_id,
                    encode_batch(events),
                    _type_mask({e.type for e in events}),
                )
            )
    start = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN")
        conn.execute(_insert_rows(1), row)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def measure(sync: str, ticks: int) -> bool:
    batches = make_batches(ticks)
    events = MATCHES * ticks * EVENTS_PER_BATCH
    with tempfile.TemporaryDirectory() as tmp:
        store_db, a_db, b_db = (os.path.join(tmp, n) for n in ("store.db", "a.db", "b.db"))
        store_s = asyncio.run(run_store(store_db, sync, batches))
        a_s = run_per_event_rows(a_db, sync, batches)
        b_s = run_batch_rows(b_db, sync, batches)
        sizes = {n: disk_bytes(p) / events for n, p in (("store", store_db), ("a", a_db))}
    sizes["jsonl"] = jsonl_bytes(batches) / events
    rate, a_rate, b_rate = events / store_s, events / a_s, events / b_s
    print(
        f"synchronous={sync}: {MATCHES} matches x {ticks} batches x {EVENTS_PER_BATCH} events"
        f" = {events:,} events"
    )
    print(
        f"  SQLiteEventStore (durable acks) {rate:12,.0f} events/s  {sizes['store']:6.1f} B/event"
    )
    print(
        f"  baseline A: sqlite3 per-event rows {a_rate:9,.0f} events/s  {sizes['a']:6.1f} B/event"
        f"   store/A = {rate / a_rate:.2f}"
    )
    print(
        f"  baseline B: sqlite3 our batch rows {b_rate:9,.0f} events/s"
        f"                  store/B = {rate / b_rate:.2f}"
    )
    print(
        f"  JSON lines of the same events: {sizes['jsonl']:.1f} B/event;"
        f" store/JSON = {sizes['store'] / sizes['jsonl']:.2f} (target <= 0.25)"
    )
    if sync != "NORMAL":
        return True
    ok = rate >= TARGET_RATE and rate / a_rate >= TARGET_RATIO
    print(
        f"  target: >= {TARGET_RATE:,} events/s and >= {TARGET_RATIO} x baseline A:"
        f" {'met' if ok else 'NOT met'} (timings on a shared machine are noisy)"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL"), action="append")
    parser.add_argument("--ticks", type=int, default=40, help="batches per match (default 40)")
    args = parser.parse_args()
    for sync in args.synchronous or ["NORMAL", "FULL"]:
        measure(sync, args.ticks)


if __name__ == "__main__":
    main()
