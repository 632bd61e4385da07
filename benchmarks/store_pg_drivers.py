"""asyncpg or psycopg 3 for the PostgreSQL recorder: both drivers on our two hot paths.

* append: groups of 100 batch rows (64 events each, as benchmarks/store_append.py
  makes them), one transaction per group with the transaction-scoped advisory lock
  the recorder takes, rows sent as arrays through ``unnest`` (one statement);
* scan: the whole log read back in position order, 1,000 rows per query.

    python benchmarks/store_pg_drivers.py postgresql://user@host:port/db
"""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
import psycopg

from replay.codec import encode_batch
from replay.events import NewEvent

GROUPS = 200
ROWS = 100
EVENTS = 64

SCHEMA = """
DROP TABLE IF EXISTS drv_batches;
CREATE TABLE drv_batches (position bigint PRIMARY KEY, mkey bigint, first_seq bigint,
  count int, base_tick bigint, last_tick bigint, first_id bytea, blob bytea, types bigint);
CREATE UNIQUE INDEX ON drv_batches (mkey, first_seq);
"""
INSERT = (
    "INSERT INTO drv_batches SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[],"
    " $4::int[], $5::bigint[], $6::bigint[], $7::bytea[], $8::bytea[], $9::bigint[])"
)
SCAN = (
    "SELECT position, mkey, first_seq, count, base_tick, first_id, blob FROM drv_batches"
    " WHERE position > $1 ORDER BY position LIMIT 1000"
)


def groups() -> list[list[tuple]]:
    out, position = [], 0
    for g in range(GROUPS):
        rows = []
        for m in range(ROWS):
            events = [NewEvent(6, g, (i % 8, (m * 7 + g * 3 + i) % 2000, i)) for i in range(EVENTS)]
            position += EVENTS
            first_id = (m << 64 | g * EVENTS).to_bytes(16, "big")
            rows.append(
                (position, m, g * EVENTS + 1, EVENTS, g, g, first_id, encode_batch(events), 64)
            )
        out.append(rows)
    return out


def columns(rows: list[tuple]) -> list[list]:
    return [list(c) for c in zip(*rows, strict=True)]


async def with_asyncpg(url: str, data: list[list[tuple]]) -> tuple[float, float]:
    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    start = time.perf_counter()
    for rows in data:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7)")
            await conn.execute(INSERT, *columns(rows))
    append = time.perf_counter() - start
    start, after, n = time.perf_counter(), 0, 0
    while rows := await conn.fetch(SCAN, after):
        after, n = rows[-1][0], n + len(rows)
    scan = time.perf_counter() - start
    assert n == GROUPS * ROWS
    await conn.close()
    return append, scan


async def with_psycopg(url: str, data: list[list[tuple]]) -> tuple[float, float]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(SCHEMA.replace("$", "%"))
    insert = INSERT
    for i in range(9, 0, -1):
        insert = insert.replace(f"${i}", "%s")
    start = time.perf_counter()
    for rows in data:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7)")
            await conn.execute(insert, columns(rows), prepare=True)
    append = time.perf_counter() - start
    start, after, n = time.perf_counter(), 0, 0
    while True:
        # Binary results: bytea arrives as bytes, not as hex text to parse.
        cur = conn.cursor(binary=True)
        await cur.execute(SCAN.replace("$1", "%s"), (after,), prepare=True)
        rows = await cur.fetchall()
        if not rows:
            break
        after, n = rows[-1][0], n + len(rows)
    scan = time.perf_counter() - start
    assert n == GROUPS * ROWS
    await conn.close()
    return append, scan


def main() -> None:
    url = sys.argv[1]
    data = groups()
    events = GROUPS * ROWS * EVENTS
    for name, run in (("asyncpg", with_asyncpg), ("psycopg 3", with_psycopg)):
        best_append, best_scan = float("inf"), float("inf")
        for _ in range(3):
            append, scan = asyncio.run(run(url, data))
            best_append, best_scan = min(best_append, append), min(best_scan, scan)
        print(
            f"{name:10} append {events / best_append:12,.0f} events/s"
            f"   scan {events / best_scan:12,.0f} events/s  (best of 3)"
        )


if __name__ == "__main__":
    main()
