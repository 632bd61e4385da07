"""Durable append throughput, scan speed and subscription lag of the event store,
on SQLite and on PostgreSQL, each against its bare driver.

100 matches append tick-shaped batches (64 small events each) concurrently
through ``SQLiteEventStore``; every append is awaited, i.e. durable at the
chosen ``synchronous`` level. In the same run, the same events are inserted
with plain ``sqlite3`` (no asyncio, no worker thread), one transaction per
batch of 64, same WAL/synchronous settings:

* baseline A: conventional per-event rows ``(match, seq, tick, type, payload)``;
* baseline B: our exact batch rows (one row per batch, our schema).

Baselines get their rows pre-encoded; the store's time includes encoding. The
prepared events are frozen out of the garbage collector first (``frozen``), as
``matchreplay serve`` freezes its start-up state: every run pays for the
collections of what it allocates, none for walking the benchmark's input.
Targets (2-core reference machine, NORMAL): >= 150,000 events/s and >= 0.5 of
baseline A. Bytes per event: database file plus WAL after a checkpoint.

PostgreSQL (``--store postgresql://...``, or by default when ``MATCHREPLAY_BENCH_PG``
or ``MATCHREPLAY_TEST_PG`` names a server): the same appends through the store, and
the same rows written by bare asyncpg (one multi-row INSERT per group of 100
batches, one per match, one transaction each, pre-encoded; the store forms its own
groups, and prints how many it committed); the
run creates a database of its own on that server and drops it at the end, and
runs both on the event loop ``matchreplay serve`` runs the store on (uvloop where
installed). Two producer shapes, each against the bare driver measured right
after it:

* awaited: every match awaits each append before handing over the next, so the
  client work of a match's next append (checks, encoding, ack) cannot overlap the
  commit of its last one; the store overlaps it with the commit of other matches'
  appends only by waking a landed group's callers in two halves (docs/operations.md,
  "Group commit"), while the bare driver's time is only its commits;
* 2 in flight: every match hands over its next append (one per loop turn, as a
  ticker does) while the previous one commits, at most two unacknowledged, as the
  live server keeps simulating while its append is in flight: the client work of
  one group overlaps the commit of the next.

and two encodings: the store encodes the events (the bare driver gets its rows
encoded beforehand), or the caller passes each batch's bytes (``encoded=``, as the
live server does with the bytes it sends its players). The first line is the
awaited shape with the store encoding; the other three follow it, each against the
bare driver run right after it. Targets: >= 100,000 durable events/s and >= 0.5 of
the bare driver (judged, and the exit status, on the first line).

Both backends also print the read side, a full scan of the log in position order
(``read_all_batches``, what a node catching up or a projection rebuild does;
target: at least as fast as the append), and the subscription lag from commit to
a subscriber in another process, p50/p99 (target p99 <= 20 ms).

    python benchmarks/store_append.py [--synchronous NORMAL|FULL] [--ticks N]
                                      [--store sqlite|postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgpack

from replay.codec import encode_batch
from replay.events import NewEvent
from replay.store import open_store
from replay.store.base import AppendResult, EventStore, MatchRecord
from replay.store.recorder import batch_checksum
from replay.store.recorder import type_mask as _type_mask
from replay.store.sqlite import _SCHEMA, SQLiteEventStore, _insert_rows
from server.app import event_loop_factory

MATCHES = 100
EVENTS_PER_BATCH = 64
TARGET_RATE = 150_000
TARGET_RATIO = 0.5
_T = TypeVar("_T")
_B = TypeVar("_B")


class GcClock:
    """Seconds spent in garbage collection (a printed diagnostic: a full collection
    walks the benchmark's prepared events, tens of ms, in whichever run it lands)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.in_appends = 0.0
        """Of the last play_and_scan's appends."""
        self.commits = 0
        """The store's group commits in the last play_and_scan (a diagnostic too)."""
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


GC_CLOCK = GcClock()


def frozen(batches: _B) -> _B:
    """``batches``, moved out of the collector's passes (as ``matchreplay serve`` freezes
    what start-up made): a full collection would otherwise walk the benchmark's own
    256k prepared events, 50-80 ms, in whichever timed run it happens to land, charging
    the store (whose allocations trigger it) for the benchmark's input. Collections of
    what the store and the drivers allocate still count (the diagnostic prints them)."""
    gc.collect()
    gc.freeze()
    return batches


def make_batches(ticks: int) -> list[list[list[NewEvent]]]:
    """batches[match][tick]: 64 movement-like events of 8 players (type, player, x, y).
    What is made here is frozen out of the garbage collector when used (:func:`frozen`)."""
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


async def run_store(
    path: str, sync: str, batches: list[list[list[NewEvent]]]
) -> tuple[float, float]:
    """Seconds to append every batch through the store, and to scan it all back."""
    async with SQLiteEventStore(path, synchronous=sync) as store:  # type: ignore[arg-type]
        return await play_and_scan(store, batches)


async def play_and_scan(
    store: EventStore,
    batches: list[list[list[NewEvent]]],
    in_flight: int = 1,
    blobs: list[list[bytes]] | None = None,
) -> tuple[float, float]:
    """Seconds to append ``batches`` (each match one task, ``in_flight`` appends of it
    handed over and not yet acknowledged at most: 1 awaits each append before the
    next; ``blobs``: each batch's bytes passed as ``encoded=``, else the store encodes),
    and to scan the whole log back."""
    ids = [f"bench-{m}" for m in range(MATCHES)]
    for match_id in ids:
        await store.create_match(MatchRecord(match_id, "bench", "1", 30))

    async def play(match_id: str, ticks: list[list[NewEvent]], encoded: list[Any]) -> None:
        version = 0
        pending: collections.deque[asyncio.Future[AppendResult]] = collections.deque()
        for events, blob in zip(ticks, encoded, strict=True):
            if len(pending) == in_flight:
                await pending.popleft()
            elif pending:
                await asyncio.sleep(0)  # one batch per loop turn, as a ticker hands them over
            pending.append(store.append_soon(match_id, events, version, encoded=blob))
            version += len(events)
        acked = [await done for done in pending]
        assert acked[-1].last_seq == version, (acked[-1], version)

    encoded = blobs or [[None] * len(ticks) for ticks in batches]
    start, gc_before = time.perf_counter(), GC_CLOCK.total
    await asyncio.gather(*map(play, ids, batches, encoded))
    append_s = time.perf_counter() - start
    GC_CLOCK.in_appends = GC_CLOCK.total - gc_before
    GC_CLOCK.commits = store.commits
    start, after, n = time.perf_counter(), 0, 0
    while got := await store.read_all_batches(after, 1000):
        after = got[-1].last_position
        n += sum(len(b.events) for b in got)
    scan_s = time.perf_counter() - start
    assert n == MATCHES * len(batches[0]) * EVENTS_PER_BATCH, n
    return append_s, scan_s


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


def store_rows(batches: list[list[list[NewEvent]]]) -> list[list[tuple]]:
    """The store's batch rows for ``batches``, one group per tick (one batch per match):
    what the baselines write with the bare drivers, encoded beforehand."""
    groups = []
    position = 0
    for t in range(len(batches[0])):
        rows = []
        for m in range(MATCHES):
            events = batches[m][t]
            position += len(events)
            first_id = (m << 64 | t * EVENTS_PER_BATCH).to_bytes(16, "big")
            columns = (
                m + 1,
                t * EVENTS_PER_BATCH + 1,
                len(events),
                events[0].tick,
                events[-1].tick,
                first_id,
                encode_batch(events),
            )
            mask = _type_mask({e.type for e in events})
            rows.append((position, *columns, mask, batch_checksum(*columns)))
        groups.append(rows)
    return groups


def run_batch_rows(path: str, sync: str, batches: list[list[list[NewEvent]]]) -> float:
    conn = connect(path, sync)
    conn.executescript(_SCHEMA)
    rows = [row for group in store_rows(batches) for row in group]
    start = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN")
        conn.execute(_insert_rows(1), row)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def measure(sync: str, ticks: int) -> bool:
    batches = frozen(make_batches(ticks))
    events = MATCHES * ticks * EVENTS_PER_BATCH
    with tempfile.TemporaryDirectory() as tmp:
        store_db, a_db, b_db = (os.path.join(tmp, n) for n in ("store.db", "a.db", "b.db"))
        store_s, scan_s = asyncio.run(run_store(store_db, sync, batches))
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
    print_scan(events / scan_s, rate)
    if sync != "NORMAL":
        return True
    ok = rate >= TARGET_RATE and rate / a_rate >= TARGET_RATIO
    print(
        f"  target: >= {TARGET_RATE:,} events/s and >= {TARGET_RATIO} x baseline A:"
        f" {'met' if ok else 'NOT met'} (timings on a shared machine are noisy)"
    )
    return ok


def print_scan(scan_rate: float, append_rate: float) -> None:
    print(
        f"  full scan in position order    {scan_rate:12,.0f} events/s"
        f"   scan/append = {scan_rate / append_rate:.2f} (target >= 1)"
    )


# -- PostgreSQL ----------------------------------------------------------------------

PG_INSERT = (
    "INSERT INTO batches"
    " (position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, types, checksum)"
    " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[],"
    " $5::bigint[], $6::bigint[], $7::bytea[], $8::bytea[], $9::bigint[], $10::bytea[])"
)


async def pg_database(server: str, name: str, drop: bool = False) -> str:
    """Create (or drop) database ``name`` on the server; its URL."""
    import asyncpg

    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not drop:
            await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return server.rpartition("/")[0] + "/" + name


async def pg_bare(url: str, batches: list[list[list[NewEvent]]]) -> float:
    """The store's rows written by bare asyncpg: a group of 100 batches (one per
    match, one tick) per transaction, one multi-row INSERT each, pre-encoded."""
    import asyncpg

    groups = [[list(c) for c in zip(*rows, strict=True)] for rows in store_rows(batches)]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE batches")
        start = time.perf_counter()
        for columns in groups:
            async with conn.transaction():
                await conn.execute(PG_INSERT, *columns)
        return time.perf_counter() - start
    finally:
        await conn.close()


async def pg_run(
    url: str,
    batches: list[list[list[NewEvent]]],
    in_flight: int = 1,
    blobs: list[list[bytes]] | None = None,
) -> tuple[float, float, float]:
    import asyncpg

    async with open_store(url) as store:  # creates the schema
        pass
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE batches, keyframes, matches RESTART IDENTITY")
        async with open_store(url) as store:
            append_s, scan_s = await play_and_scan(store, batches, in_flight, blobs)
        size = await conn.fetchval("SELECT pg_total_relation_size('batches')")
    finally:
        await conn.close()
    return append_s, scan_s, size


def server_loop_run(coro: Coroutine[Any, Any, _T]) -> _T:
    """``coro`` run on the event loop ``matchreplay serve`` runs the store on (uvloop
    where installed: server/app.py), as both the store and the bare driver are here."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(coro)


def measure_pg(server: str, ticks: int) -> bool:
    batches = frozen(make_batches(ticks))
    events = MATCHES * ticks * EVENTS_PER_BATCH
    url = asyncio.run(pg_database(server, f"matchreplay_bench_{os.getpid()}"))
    try:
        store_s, scan_s, size = server_loop_run(pg_run(url, batches))
        store_gc_s, store_commits = GC_CLOCK.in_appends, GC_CLOCK.commits
        bare_s = server_loop_run(pg_bare(url, batches))
        shapes = {}  # (in flight, caller's bytes) -> (store s, bare s right after)
        blobs = [[encode_batch(events) for events in ticks] for ticks in batches]
        for in_flight, given in ((2, False), (1, True), (2, True)):
            shape_s, _, _ = server_loop_run(
                pg_run(url, batches, in_flight, blobs if given else None)
            )
            shapes[in_flight, given] = shape_s, server_loop_run(pg_bare(url, batches))
        lag = subscription_lag(url)
    finally:
        asyncio.run(pg_database(server, f"matchreplay_bench_{os.getpid()}", drop=True))
    rate, bare_rate = events / store_s, events / bare_s
    loop = "uvloop" if event_loop_factory() is not None else "asyncio"
    print(
        f"PostgreSQL: {MATCHES} matches x {ticks} batches x {EVENTS_PER_BATCH} events = {events:,}"
        f" (event loop: {loop})"
    )
    print(
        f"  EventStore, each append awaited before the next {rate:9,.0f} events/s"
        f"  {size / events:6.1f} B/event"
    )
    print(
        f"  bare asyncpg, same rows, group per transaction {bare_rate:9,.0f} events/s"
        f"   store/bare = {rate / bare_rate:.2f}"
    )
    print(
        f"    (diagnostic: the store's {store_s * 1000:.0f} ms include"
        f" {store_gc_s * 1000:.0f} ms of garbage collection; {store_commits} group commits)"
    )
    print("  other producer shapes, each against the bare driver run right after it:")
    for (in_flight, given), (shape_s, shape_bare_s) in shapes.items():
        shape = "awaited" if in_flight == 1 else f"{in_flight} in flight"
        label = f"{shape}, {'bytes given (encoded=)' if given else 'the store encodes'}"
        print(
            f"    {label:36} {events / shape_s:11,.0f} events/s"
            f"   store/bare = {shape_bare_s / shape_s:.2f}"
        )
    print_scan(events / scan_s, rate)
    print_lag(lag)
    ok = rate >= 100_000 and rate / bare_rate >= 0.5
    print(
        f"  target: >= 100,000 events/s and >= 0.5 x bare asyncpg, appends awaited, the"
        f" store encoding: {'met' if ok else 'NOT met'} (timings on a shared machine are noisy)"
    )
    return ok


# -- subscription lag ------------------------------------------------------------------

LAG_APPENDS = 300


def subscription_lag(url: str) -> list[float]:
    """Seconds from an append's ack to its arrival at a subscriber in another process,
    for LAG_APPENDS appends 10 ms apart. Each event carries its ack time (same clock:
    one machine)."""

    async def create() -> None:  # the subscriber opens the store read-only
        async with open_store(url):
            pass

    asyncio.run(create())
    child = subprocess.Popen(
        [sys.executable, __file__, "--subscriber", url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().split()[0] == "ready"

    async def produce() -> None:
        async with open_store(url) as store:
            match_id = f"lag-{os.getpid()}"
            await store.create_match(MatchRecord(match_id, "bench", "1", 30))
            for i in range(LAG_APPENDS):
                # The ack time is known only after the append: the subscriber gets the
                # append's own start time, and the ack's delay is subtracted below.
                sent = time.time()
                await store.append(match_id, [NewEvent(1, i, (sent,))], i)
                acks.append(time.time() - sent)
                await asyncio.sleep(0.01)

    acks: list[float] = []
    asyncio.run(produce())
    out, _ = child.communicate(timeout=120)
    arrivals = [float(x) for x in out.split()]
    # arrival - sent includes the commit; the lag is measured from the ack.
    return sorted(max(a - ack, 0.0) for a, ack in zip(arrivals, acks, strict=False))


async def subscriber(url: str) -> None:
    async with open_store(url, read_only=True) as store:  # beside the writer process
        after = await store.last_position()
        print("ready", flush=True)
        got = 0
        async for event in store.subscribe(after, poll_interval=1.0):
            if event.match_id.startswith("lag-"):
                print(f"{time.time() - event.data[0]:.6f}", flush=True)
                got += 1
                if got == LAG_APPENDS:
                    return


def print_lag(lags: list[float]) -> None:
    if not lags:
        print("  subscription lag: no samples")
        return
    p50 = statistics.median(lags) * 1000
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000
    print(
        f"  subscription lag, ack -> subscriber in another process: p50 {p50:.1f} ms,"
        f" p99 {p99:.1f} ms (target p99 <= 20 ms)"
    )


def pg_server_url(stores: list[str]) -> str | None:
    for s in stores:
        if s.startswith(("postgresql://", "postgres://")):
            return s
    return os.environ.get("MATCHREPLAY_BENCH_PG") or os.environ.get("MATCHREPLAY_TEST_PG")


def main() -> None:
    if sys.argv[1:2] == ["--subscriber"]:
        asyncio.run(subscriber(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL"), action="append")
    parser.add_argument("--ticks", type=int, default=40, help="batches per match (default 40)")
    parser.add_argument(
        "--store",
        action="append",
        default=[],
        help="'sqlite' or a postgresql:// URL of a server (repeatable; default: SQLite, and"
        " PostgreSQL when MATCHREPLAY_BENCH_PG or MATCHREPLAY_TEST_PG names one)",
    )
    args = parser.parse_args()
    if not args.store or "sqlite" in args.store:
        for sync in args.synchronous or ["NORMAL", "FULL"]:
            measure(sync, args.ticks)
        with tempfile.TemporaryDirectory() as tmp:
            print_lag(subscription_lag(os.path.join(tmp, "lag.db")))
    server = pg_server_url(args.store)
    if server:
        measure_pg(server, args.ticks)


if __name__ == "__main__":
    main()
