"""The SQLite recorder: the embedded default, one store file in WAL mode.

Layout (one row per appended batch, see docs/events.md and docs/operations.md)::

    matches(mkey, match_id, game, rules_version, tick_rate, players, settings, seed,
            created_at, ended_at, status, options, owner, epoch, lease_until)
    batches(position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, types)
    keyframes(mkey, tick, format_version, data, checksum)
    nodes(node, name, url, started_at, seen_at, status, load)

``batches.position`` is the rowid and the global position of the batch's *last*
event, so a scan from ``after`` is a primary-key range scan ``position > after``
that trims the first row. ``PRAGMA user_version`` is the schema version.

Concurrency. Two connections, each with its own thread (sqlite3 releases the GIL
while it works). A group commit is one transaction on the writer connection:
``BEGIN IMMEDIATE`` (SQLite's write lock, which also serialises writers in other
processes), the heads of the group's matches and the highest position read under
that lock, the conditional checks, one multi-row ``INSERT``, ``COMMIT``. A small
group runs on the event loop's thread when the writer's thread is idle, a bulk one
on the writer's thread (``_Connection.transact`` says why). Positions are
therefore assigned in commit order and a conflict is decided by the file, not by
any process's memory. Reads use the other connection; under WAL they never block
the writer and see only committed data.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from replay.errors import MatchExistsError, StoreClosedError, StoreSchemaError
from replay.store.base import DEFAULT_MAX_EVENT_BYTES, EventStore
from replay.store.lock import WriterLock
from replay.store.recorder import (
    MATCH_COLUMNS,
    NOTABLE_BIT,
    TYPE_BITS,
    UNFENCED,
    BatchRow,
    Conflict,
    MatchRow,
    NewBatch,
    Recorder,
)
from replay.store.records import LIVE_STATUSES, Lease, NodeRow

__all__ = ["SQLiteEventStore", "SQLiteRecorder", "Synchronous"]

Synchronous = Literal["FULL", "NORMAL"]
"""SQLite's ``synchronous`` pragma under WAL, i.e. the durability of an acknowledged append:

* ``FULL`` (default): every commit fsyncs the WAL before the append returns. An
  acknowledged append survives a crash of the process and of the machine (power loss).
* ``NORMAL``: the WAL is fsynced only at checkpoints. An acknowledged append survives
  a crash of the process, but the last commits may be lost if the machine crashes.
"""

SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of a current store file (0: a file from before versioning,
1: before leases, 2: before ``recorder.NOTABLE_BIT``; all migrated on open for
writing; a read-only open reads 2 as is)."""

_READ_ONLY = ("ended", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS matches (
    mkey INTEGER PRIMARY KEY,
    match_id TEXT NOT NULL UNIQUE,
    game TEXT NOT NULL,
    rules_version TEXT NOT NULL,
    tick_rate INTEGER NOT NULL,
    players TEXT NOT NULL,       -- JSON array of player ids
    settings TEXT NOT NULL,      -- JSON object
    seed INTEGER NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',  -- JSON object: MatchRecord.options
    owner TEXT NOT NULL DEFAULT '',      -- lease: the owning node instance ('': none)
    epoch INTEGER NOT NULL DEFAULT 0,    -- lease: the fencing token
    lease_until REAL                     -- lease: its end, unix time (NULL: never leased)
);
CREATE INDEX IF NOT EXISTS matches_created ON matches(created_at);
CREATE TABLE IF NOT EXISTS batches (
    position INTEGER PRIMARY KEY,  -- global position of the batch's LAST event
    mkey INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    base_tick INTEGER NOT NULL,
    last_tick INTEGER NOT NULL,
    first_id BLOB NOT NULL,        -- 16 bytes, big-endian
    blob BLOB NOT NULL,            -- replay.codec.encode_batch
    types INTEGER,                 -- recorder.type_mask of the batch's types (NULL: unknown)
    checksum BLOB                  -- recorder.batch_checksum (NULL: stored before checksums)
);
-- Seq reads, the version lookup, and the no-duplicate-seq guarantee.
CREATE UNIQUE INDEX IF NOT EXISTS batches_seq ON batches(mkey, first_seq);
-- Tick-range reads (ticks are non-decreasing in seq order, so this is seq order too).
-- Costs ~0.3 bytes/event at 64 events per batch.
CREATE INDEX IF NOT EXISTS batches_tick ON batches(mkey, last_tick);
CREATE TABLE IF NOT EXISTS keyframes (
    mkey INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    format_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    checksum BLOB NOT NULL,
    PRIMARY KEY (mkey, tick)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY,         -- instance id, unique per process start
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,         -- its last heartbeat
    status TEXT NOT NULL,
    load TEXT NOT NULL             -- JSON object
);
"""

_LIVE = f"status IN ({', '.join(map(repr, sorted(LIVE_STATUSES)))})"
"""records.LIVE_STATUSES in SQL: the matches a lease can be taken on."""
_LEASED = f"owner <> '' AND {_LIVE}"
"""The leased live matches: the partial indexes' condition, repeated verbatim by the
queries that use them."""

_INDEXES = f"""
-- After the migration of older files, which adds the columns they index.
CREATE INDEX IF NOT EXISTS matches_owner ON matches(owner) WHERE {_LEASED};
CREATE INDEX IF NOT EXISTS matches_lease_until ON matches(lease_until) WHERE {_LEASED};
"""
_LEASE_COLS = "match_id, owner, epoch, lease_until"

_INSERT_BATCH = (
    "INSERT INTO batches"
    " (position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, types, checksum)"
    " VALUES "
)
_ROWS_PER_INSERT = (32766 if sqlite3.sqlite_version_info >= (3, 32) else 999) // 10
"""Rows one INSERT can carry: SQLite's limit on bound parameters, 10 per row."""


@functools.lru_cache(maxsize=64)
def _insert_rows(n: int) -> str:
    """One INSERT of ``n`` batch rows."""
    return _INSERT_BATCH + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)


LOOP_COMMIT_MAX_S = 0.010
"""A ``COMMIT`` on the event loop's thread slower than this (its fsync on a slow or
stalled disk) sends the next ones to the writer's thread (``_Connection.transact``);
here one takes 1.0 ms p50, 3.5 ms p99 and at most 6 ms beside 300 playing players.
SQLite's automatic checkpoints (every ~1,000 pages written) run in a ``COMMIT`` too."""
LOOP_COMMIT_BACKOFF_S = 10.0
"""For how long (seconds) after a slow one ``COMMIT`` runs on the writer's thread."""
_LOOP_GROUP_BYTES = 16 * 1024
"""A transaction writing more bytes than this runs whole on the writer's thread, where
SQLite's own work (most of a bulk group's: 100 rows, 55 KiB in the store benchmark)
runs beside the event loop; a smaller one (a tick of 30 live matches: 30 rows, under
4 KiB) runs on the loop's thread when it can (``_Connection.transact``)."""

_BATCH_COLS = "position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, checksum"
_BATCH_COLS_OF_B = ", ".join(f"b.{c}" for c in _BATCH_COLS.split(", "))
_HEAD = (
    "(SELECT first_seq + count - 1 FROM batches b WHERE b.mkey = m.mkey"
    " ORDER BY first_seq DESC LIMIT 1),"
    " (SELECT last_tick FROM batches b WHERE b.mkey = m.mkey ORDER BY first_seq DESC LIMIT 1)"
)
_MATCH_COLS = (
    "m.mkey, " + ", ".join(f"m.{c}" for c in MATCH_COLUMNS) + ", " + _HEAD + ", m.owner, m.epoch"
)

_T = TypeVar("_T")


class _Connection:
    """One sqlite3 connection and its own thread: each call runs a whole function
    there, so a query costs one trip, not one per statement. A write transaction
    (:meth:`transact`) may instead run its statements on the event loop's thread."""

    def __init__(self, path: str, isolation_level: str | None, busy_timeout_ms: int) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        self._path, self._isolation = path, isolation_level
        self.busy_timeout_ms = busy_timeout_ms
        """How long a statement waits for a lock another process holds (set by the
        recorder as ``PRAGMA busy_timeout``)."""
        self.conn: sqlite3.Connection | None = None
        self._last_job: Future[Any] | None = None
        """The call handed to the connection's thread last. One thread takes them in
        order, so while this one is not done the connection is the thread's."""
        self._commits_in_thread_until = 0.0
        """Until then (monotonic) :meth:`transact` commits on the thread: a commit on the
        loop was slow."""

    async def connect(self) -> None:
        def connect() -> sqlite3.Connection:
            return sqlite3.connect(
                self._path, isolation_level=self._isolation, check_same_thread=False
            )

        self.conn = await self.call(connect)

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        job = self._last_job = self._pool.submit(fn, *args)
        return await asyncio.wrap_future(job)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(conn, *args)`` on the connection's thread."""
        if self.conn is None:
            raise StoreClosedError("the event store is not open")
        return await self.call(fn, self.conn, *args)

    async def transact(self, nbytes: int, stage: Callable[..., _T], *args: Any) -> _T:
        """``stage(conn, *args)`` in one write transaction (``BEGIN IMMEDIATE`` ...
        ``COMMIT``; rolled back when anything fails) that writes about ``nbytes``.

        A bulk transaction (over :data:`_LOOP_GROUP_BYTES`) runs whole on the
        connection's thread, where SQLite's own work runs beside the event loop. A
        small one, when the connection's thread is idle, runs whole here, on the
        event loop's thread. In the thread, a statement gives the GIL back while SQLite
        works and waits to take it again behind a busy loop, and the result comes back
        through three loop turns: beside 300 playing players a group commit of 30
        matches took 4-5.5 ms p50 and 16-34 ms p99 there, against 2.2 and 7 ms here
        (where its fsync takes 1.0 ms p50, 3.5 ms p99). Otherwise the transaction
        queues whole behind the thread's work, in order, and so does one that finds
        SQLite's write lock taken by another process (an outside checkpoint or tool):
        the loop never waits for a lock. Nor long for the disk: a ``COMMIT`` here that
        takes longer than :data:`LOOP_COMMIT_MAX_S` (a slow or stalled disk) sends the
        ``COMMIT`` of the next :data:`LOOP_COMMIT_BACKOFF_S` seconds to the thread."""
        conn = self.conn
        if conn is None:
            raise StoreClosedError("the event store is not open")
        busy = self._last_job is not None and not self._last_job.done()
        if busy or nbytes > _LOOP_GROUP_BYTES or not _begin_at_once(conn, self.busy_timeout_ms):
            return await self.call(_transaction, conn, stage, *args)
        result = _staged(conn, stage, *args)
        started = time.monotonic()
        if started < self._commits_in_thread_until:
            # Handed to the thread now, before anything else runs on the loop: the
            # transaction stays open until the COMMIT, and the next transaction must find
            # the thread busy (it queues behind it) and not start on the loop, or on the
            # thread ahead of this COMMIT. Shielded: it runs whoever stops waiting.
            job = self._last_job = self._pool.submit(_commit, conn)
            await asyncio.shield(asyncio.wrap_future(job))
            return result
        _commit(conn)
        if time.monotonic() - started > LOOP_COMMIT_MAX_S:
            self._commits_in_thread_until = time.monotonic() + LOOP_COMMIT_BACKOFF_S
        return result

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return await self.run(lambda c: c.execute(sql, args).fetchall())

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await self.call(conn.close)
        self._pool.shutdown(wait=False)


def _begin_at_once(c: sqlite3.Connection, busy_timeout_ms: int) -> bool:
    """``BEGIN IMMEDIATE`` without waiting: False when the write lock is taken."""
    c.execute("PRAGMA busy_timeout=0")
    try:
        c.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # (extended codes too)
            raise  # not a lock another process holds (a transaction left open is a bug)
        return False  # another process writes or checkpoints
    finally:
        c.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    return True


def _commit(c: sqlite3.Connection) -> None:
    try:
        c.execute("COMMIT")
    except BaseException:  # disk full, I/O error: nothing of the transaction is written
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise


def _staged(c: sqlite3.Connection, stage: Callable[..., _T], *args: Any) -> _T:
    """``stage(c, *args)`` in the open transaction, rolled back if it fails."""
    try:
        return stage(c, *args)
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise


def _transaction(c: sqlite3.Connection, stage: Callable[..., _T], *args: Any) -> _T:
    c.execute("BEGIN IMMEDIATE")
    result = _staged(c, stage, *args)
    _commit(c)
    return result


_KeyframeRow = tuple[int, int, int, bytes, bytes]


class _KeyframeBatch:
    """Keyframes to write in one transaction, its outcome, and the task writing it
    (which :meth:`SQLiteRecorder.close` waits for)."""

    __slots__ = ("done", "rows", "task")

    def __init__(self) -> None:
        self.rows: list[_KeyframeRow] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Future[None] | None = None


def _stage_keyframes(c: sqlite3.Connection, rows: list[_KeyframeRow]) -> None:
    c.executemany(
        "INSERT OR REPLACE INTO keyframes (mkey, tick, format_version, data, checksum)"
        " VALUES (?, ?, ?, ?, ?)",
        rows,
    )


class SQLiteRecorder(Recorder):
    """``synchronous`` is the durability level (see :data:`Synchronous`).

    Opened for writing (the default), the recorder holds the store's writer lock
    (:mod:`replay.store.lock`) until closed: a second writer process is refused at
    open. ``read_only`` takes no lock, never changes the file, and refuses writes
    (SQLite's ``query_only``): what readers beside a running server use."""

    poll_interval = 0.01
    """How often a waiting subscriber looks for commits of other processes (seconds):
    SQLite has no cross-process notification."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = 5000,
        read_only: bool = False,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        self.path = path
        self.url = f"sqlite:///{path}"
        self.synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self.read_only = read_only
        self._lock = None if read_only else WriterLock(path)
        # Autocommit on both: transactions are explicit (BEGIN IMMEDIATE) where needed.
        self._writer = _Connection(path, None, busy_timeout_ms)
        self._reader = _Connection(path, None, busy_timeout_ms)
        self._committed = asyncio.Event()
        self._keyframe_batch: _KeyframeBatch | None = None
        """The keyframes to write in the next keyframe transaction, and its outcome."""
        self._head = 0

    async def open(self) -> None:
        if self._lock is not None:
            self._lock.acquire()  # before anything touches the file
        await self._writer.connect()
        await self._writer.run(self._prepare_read_only if self.read_only else self._prepare)
        await self._reader.connect()
        await self._reader.run(self._prepare_reader)

    def _prepare_reader(self, c: sqlite3.Connection) -> None:
        c.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        c.execute("PRAGMA query_only=1")

    def _prepare_read_only(self, c: sqlite3.Connection) -> None:
        self._prepare_reader(c)
        (version,) = c.execute("PRAGMA user_version").fetchone()
        self.legacy_masks = version == 2  # read as is: its scans cost a little more
        if version not in (2, SCHEMA_VERSION):
            raise StoreSchemaError(
                f"{self.path}: store schema version {version}, this matchreplay reads"
                f" {SCHEMA_VERSION}; "
                + (
                    "upgrade matchreplay to read it"
                    if version > SCHEMA_VERSION
                    else "open it once for writing (e.g. matchreplay serve) to migrate it"
                )
            )
        (self._head,) = c.execute("SELECT coalesce(max(position), 0) FROM batches").fetchone()

    def _prepare(self, c: sqlite3.Connection) -> None:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={self.synchronous}",
            f"PRAGMA busy_timeout={self._busy_timeout_ms}",
        ):
            c.execute(pragma)
        (version,) = c.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreSchemaError(
                f"{self.path}: store schema version {version} is newer than this"
                f" matchreplay's ({SCHEMA_VERSION}); upgrade matchreplay to open it"
            )
        c.executescript(_SCHEMA)
        if "options" not in {r[1] for r in c.execute("PRAGMA table_info(matches)")}:
            # A store file from before MatchRecord.options: its matches get {}.
            c.execute("ALTER TABLE matches ADD COLUMN options TEXT NOT NULL DEFAULT '{}'")
        batch_columns = {r[1] for r in c.execute("PRAGMA table_info(batches)")}
        if "types" not in batch_columns:
            # Older batches get NULL: "any type", so scans decode them.
            c.execute("ALTER TABLE batches ADD COLUMN types INTEGER")
        if "checksum" not in batch_columns:
            # Older batches get NULL: read without a check, as before.
            c.execute("ALTER TABLE batches ADD COLUMN checksum BLOB")
        if "owner" not in {r[1] for r in c.execute("PRAGMA table_info(matches)")}:
            # Version 1: matches never leased (single-node ones).
            c.execute("ALTER TABLE matches ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            c.execute("ALTER TABLE matches ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
            c.execute("ALTER TABLE matches ADD COLUMN lease_until REAL")
        c.executescript(_INDEXES)
        if version < 3:
            # Rows from before NOTABLE_BIT may hold a rewound or forked event under bit 62
            # only: every row with bit 62 gets bit 61 too (a superset, never a miss).
            c.execute(
                "UPDATE batches SET types = types | ? WHERE types & ?",
                (1 << NOTABLE_BIT, 1 << TYPE_BITS),
            )
        if version < SCHEMA_VERSION:
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        (self._head,) = c.execute("SELECT coalesce(max(position), 0) FROM batches").fetchone()

    async def close(self) -> None:
        batch = self._keyframe_batch
        if batch is not None and batch.task is not None:
            # Keyframes put just before closing are written before the connection goes.
            await asyncio.gather(batch.task, return_exceptions=True)
        try:
            await self._reader.close()
            await self._writer.close()
        finally:
            if self._lock is not None:
                self._lock.release()
            self._committed.set()

    async def integrity_check(self) -> list[str]:
        rows = await self._reader.fetch("PRAGMA integrity_check")
        return [] if [r[0] for r in rows] == ["ok"] else [r[0] for r in rows]

    async def backup(self, destination: str) -> None:
        """A consistent copy of the store as of one moment, into the new file
        ``destination``, while writers go on (SQLite's backup API under one read
        transaction: under WAL it never blocks the writer). The copy is one
        self-contained file (rollback journal mode; a server reopening it turns WAL on)."""

        def copy(c: sqlite3.Connection) -> None:
            with contextlib.closing(sqlite3.connect(destination)) as out:
                c.backup(out)  # all pages in one step: one snapshot
                out.execute("PRAGMA journal_mode=DELETE")

        await self._reader.run(copy)

    # -- matches ---------------------------------------------------------------

    async def insert_match(self, row: MatchRow) -> int:
        def insert(c: sqlite3.Connection) -> int:
            try:
                cur = c.execute(
                    f"INSERT INTO matches ({', '.join(MATCH_COLUMNS)})"
                    f" VALUES ({', '.join('?' * len(MATCH_COLUMNS))})",
                    row[1:12],
                )
            except sqlite3.IntegrityError:
                raise MatchExistsError(row.match_id) from None
            return cur.lastrowid  # type: ignore[return-value]

        return await self._writer.run(insert)

    async def match(self, match_id: str | None = None, mkey: int | None = None) -> MatchRow | None:
        column, value = ("match_id", match_id) if match_id is not None else ("mkey", mkey)
        rows = await self._reader.fetch(
            f"SELECT {_MATCH_COLS} FROM matches m WHERE m.{column} = ?", (value,)
        )
        return _match_row(rows[0]) if rows else None

    async def matches(
        self,
        statuses: Sequence[str] | None,
        game: str | None,
        limit: int,
        offset: int,
        match_ids: Sequence[str] | None = None,
    ) -> list[MatchRow]:
        where: list[str] = []
        args: list[Any] = []
        if statuses is not None:
            where.append(f"m.status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if game is not None:
            where.append("m.game = ?")
            args.append(game)
        if match_ids is not None:
            where.append(f"m.match_id IN ({', '.join('?' * len(match_ids))})")
            args.extend(match_ids)
        sql = f"SELECT {_MATCH_COLS} FROM matches m"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY m.created_at DESC, m.mkey DESC LIMIT ? OFFSET ?"
        return [_match_row(r) for r in await self._reader.fetch(sql, (*args, limit, offset))]

    async def update_match(
        self, match_id: str, changes: dict[str, Any], allowed: Any
    ) -> MatchRow | None:
        def update(c: sqlite3.Connection) -> MatchRow | None:
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT status, epoch FROM matches WHERE match_id = ?", (match_id,))
                found = row.fetchone()
                if found is None:
                    return None
                allowed(*found)
                if changes:
                    sets = ", ".join(f"{column} = ?" for column in changes)
                    c.execute(
                        f"UPDATE matches SET {sets} WHERE match_id = ?",
                        (*changes.values(), match_id),
                    )
                out = c.execute(
                    f"SELECT {_MATCH_COLS} FROM matches m WHERE m.match_id = ?", (match_id,)
                )
                return _match_row(out.fetchone())
            finally:
                c.execute("COMMIT")

        return await self._writer.run(update)

    # -- batches ---------------------------------------------------------------

    async def insert_group(self, rows: Sequence[NewBatch]) -> list[int | Conflict]:
        nbytes = sum(len(r.blob) for r in rows)
        outcomes, head = await self._writer.transact(nbytes, _stage_group, rows)
        if head > self._head:
            self._head = head
            committed, self._committed = self._committed, asyncio.Event()
            committed.set()
        return outcomes

    async def find_batch(self, mkey: int, first_seq: int) -> BatchRow | None:
        rows = await self._reader.fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = ? AND first_seq = ?",
            (mkey, first_seq),
        )
        return BatchRow(*rows[0]) if rows else None

    async def batches_by_seq(self, mkey: int, from_seq: int, to_seq: int) -> list[BatchRow]:
        # The batch holding from_seq starts at the greatest first_seq <= from_seq.
        rows = await self._reader.fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = ?1 AND first_seq >= coalesce("
            " (SELECT max(first_seq) FROM batches WHERE mkey = ?1 AND first_seq <= ?2), 1)"
            " AND first_seq <= ?3 ORDER BY first_seq",
            (mkey, from_seq, to_seq),
        )
        return [BatchRow(*r) for r in rows]

    async def batches_by_tick(self, mkey: int, from_tick: int, to_tick: int) -> list[BatchRow]:
        # Ticks never go back, so at most one batch starts at or before `to_tick` and
        # ends after it: the first one ending after it. Both parts are index ranges.
        def query(c: sqlite3.Connection) -> list[Any]:
            rows = c.execute(
                f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = ?1"
                " AND last_tick BETWEEN ?2 AND ?3 ORDER BY last_tick, position",
                (mkey, from_tick, to_tick),
            ).fetchall()
            return (
                rows
                + c.execute(
                    f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = ?1 AND last_tick > ?2"
                    " ORDER BY last_tick, position LIMIT 1",
                    (mkey, to_tick),
                ).fetchall()
            )

        rows = await self._reader.run(query)
        return [BatchRow(*r) for r in rows if r[4] <= to_tick]

    async def scan(self, after: int, limit: int, mask: int | None) -> tuple[int, list[BatchRow]]:
        if mask is None:
            rows = await self._reader.fetch(
                f"SELECT {_BATCH_COLS} FROM batches WHERE position > ? ORDER BY position LIMIT ?",
                (after, limit),
            )
            return (rows[-1][0] if rows else after), [BatchRow(*r) for r in rows]
        # How far the next `limit` rows reach is found inside SQLite (no row built in
        # Python); only the rows in that range whose type mask matches come back, each
        # with that position in front, or one row of NULLs after it when none does.
        rows = await self._reader.fetch(
            "WITH upto(through) AS (SELECT max(position) FROM"
            " (SELECT position FROM batches WHERE position > ?1 ORDER BY position LIMIT ?2))"
            f" SELECT upto.through, {_BATCH_COLS_OF_B}"
            " FROM upto LEFT JOIN batches b ON b.position > ?1 AND b.position <= upto.through"
            " AND (b.types IS NULL OR b.types & ?3) ORDER BY b.position",
            (after, limit, mask),
        )
        through = rows[0][0]
        if through is None:
            return after, []
        return through, [BatchRow(*row[1:]) for row in rows if row[1] is not None]

    async def head(self) -> int:
        rows = await self._reader.fetch("SELECT coalesce(max(position), 0) FROM batches")
        return rows[0][0]

    async def wait_for_commit(self, after: int, timeout: float) -> None:
        # Commits of this process signal the event at once. The writer (it holds the
        # writer lock: no other process commits here) waits for nothing else; a
        # read-only recorder finds other processes' commits by looking at the head
        # every poll_interval.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        polls = self._lock is None  # read-only: other processes commit
        while self._head <= after:
            if self._writer.conn is None:
                return
            if polls and await self.head() > after:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._committed.wait(),
                    min(remaining, self.poll_interval) if polls else remaining,
                )

    # -- leases --------------------------------------------------------------------
    # Each is one statement on the writer's connection (autocommit), so it is atomic
    # and ordered with the group commits that check the epoch.

    async def _lease_update(self, sql: str, **args: Any) -> list[Lease]:
        def update(c: sqlite3.Connection) -> list[Lease]:
            now = time.time()
            rows = c.execute(f"{sql} RETURNING {_LEASE_COLS}", {**args, "now": now})
            return [_lease(row, now) for row in rows.fetchall()]

        return await self._writer.run(update)

    async def acquire_lease(
        self, match_id: str, owner: str, ttl: float, epoch: int | None
    ) -> Lease | None:
        condition = (
            "(owner = '' OR lease_until IS NULL OR lease_until <= :now)"
            if epoch is None
            else "epoch = :epoch"
        )
        rows = await self._lease_update(
            "UPDATE matches SET owner = :owner, epoch = epoch + 1, lease_until = :now + :ttl"
            f" WHERE match_id = :match_id AND {_LIVE} AND {condition}",
            owner=owner,
            ttl=ttl,
            match_id=match_id,
            epoch=epoch,
        )
        return rows[0] if rows else None

    async def renew_leases(self, owner: str, ttl: float) -> dict[str, int]:
        rows = await self._lease_update(
            f"UPDATE matches SET lease_until = :now + :ttl WHERE owner = :owner AND {_LEASED}",
            owner=owner,
            ttl=ttl,
        )
        return {lease.match_id: lease.epoch for lease in rows}

    async def release_lease(
        self, match_id: str, owner: str, epoch: int, to: str | None, ttl: float
    ) -> Lease | None:
        sets = (
            "lease_until = :now"
            if to is None
            else "owner = :to, epoch = epoch + 1, lease_until = :now + :ttl"
        )
        rows = await self._lease_update(
            f"UPDATE matches SET {sets}"
            " WHERE match_id = :match_id AND owner = :owner AND epoch = :epoch",
            match_id=match_id,
            owner=owner,
            epoch=epoch,
            to=to,
            ttl=ttl,
        )
        return rows[0] if rows else None

    async def lease(self, match_id: str) -> Lease | None:
        rows = await self._reader.fetch(
            f"SELECT {_LEASE_COLS} FROM matches WHERE match_id = ?", (match_id,)
        )
        return _lease(rows[0], time.time()) if rows else None

    async def lapsed_leases(self, limit: int) -> list[Lease]:
        now = time.time()
        rows = await self._reader.fetch(
            f"SELECT {_LEASE_COLS} FROM matches WHERE {_LEASED} AND lease_until <= ?"
            " ORDER BY lease_until, mkey LIMIT ?",
            (now, limit),
        )
        return [_lease(r, now) for r in rows]

    async def leases_of(self, owner: str) -> list[Lease]:
        rows = await self._reader.fetch(
            f"SELECT {_LEASE_COLS} FROM matches WHERE owner = ? AND {_LEASED} ORDER BY match_id",
            (owner,),
        )
        now = time.time()
        return [_lease(r, now) for r in rows]

    # -- nodes -------------------------------------------------------------------

    async def heartbeat(self, node: str, name: str, url: str, status: str, load: str) -> None:
        await self._writer.run(
            lambda c: c.execute(
                "INSERT INTO nodes (node, name, url, started_at, seen_at, status, load)"
                " VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6) ON CONFLICT (node) DO UPDATE SET"
                " name = excluded.name, url = excluded.url, seen_at = excluded.seen_at,"
                " status = excluded.status, load = excluded.load",
                (node, name, url, time.time(), status, load),
            )
        )

    async def nodes(self, max_age: float | None) -> list[NodeRow]:
        now = time.time()
        rows = await self._reader.fetch(
            "SELECT node, name, url, started_at, ?1 - seen_at, status, load FROM nodes"
            " WHERE ?2 IS NULL OR ?1 - seen_at <= ?2 ORDER BY name, node",
            (now, max_age),
        )
        return [NodeRow(*r) for r in rows]

    async def forget_nodes(self, older_than: float) -> int:
        return await self._writer.run(
            lambda c: (
                c.execute(
                    "DELETE FROM nodes WHERE ? - seen_at > ?", (time.time(), older_than)
                ).rowcount
            )
        )

    # -- keyframes ---------------------------------------------------------------

    async def put_keyframe(
        self, mkey: int, tick: int, format_version: int, data: bytes, checksum: bytes
    ) -> None:
        # The keyframes put in one loop turn are written in one transaction, as a group
        # commit is: the matches of a process tick together, so theirs fall due at the
        # same tick (30 matches of 10: 30 keyframes every 5 s). One transaction each, on
        # the writer's thread, kept it busy for 30 fsyncs in a row, and the group commits
        # of the passes meanwhile queued there behind them (the tail of input-to-ack).
        batch = self._keyframe_batch
        if batch is None:
            batch = self._keyframe_batch = _KeyframeBatch()
            batch.task = asyncio.ensure_future(self._write_keyframes(batch))
        batch.rows.append((mkey, tick, format_version, data, checksum))
        await asyncio.shield(batch.done)

    async def _write_keyframes(self, batch: _KeyframeBatch) -> None:
        rows, done = batch.rows, batch.done
        try:
            await asyncio.sleep(0)  # the keyframes put in this loop turn join the batch
            self._keyframe_batch = None
            await self._writer.transact(sum(len(row[3]) for row in rows), _stage_keyframes, rows)
        except asyncio.CancelledError:
            if self._keyframe_batch is batch:
                self._keyframe_batch = None
            done.cancel()
            raise
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    async def keyframe(self, mkey: int, at_or_before: int) -> tuple[int, int, bytes, bytes] | None:
        rows = await self._reader.fetch(
            "SELECT tick, format_version, data, checksum FROM keyframes"
            " WHERE mkey = ? AND tick <= ? ORDER BY tick DESC LIMIT 1",
            (mkey, at_or_before),
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def keyframe_ticks(self, mkey: int) -> list[int]:
        rows = await self._reader.fetch(
            "SELECT tick FROM keyframes WHERE mkey = ? ORDER BY tick", (mkey,)
        )
        return [r[0] for r in rows]

    async def delete_keyframes(self, mkey: int, before_tick: int) -> int:
        return await self._writer.run(
            lambda c: (
                c.execute(
                    "DELETE FROM keyframes WHERE mkey = ? AND tick < ?", (mkey, before_tick)
                ).rowcount
            )
        )


def _stage_group(c: sqlite3.Connection, rows: Sequence[NewBatch]) -> tuple[list[Any], int]:
    """A group commit's statements, inside its transaction (``_Connection.transact``):
    under SQLite's write lock, check each row against the stored heads (and the group's
    earlier rows) and insert the accepted ones. Returns the outcomes and the new head
    position. Nothing of the group is written unless all of it commits."""
    mkeys = sorted({r.mkey for r in rows})
    heads: dict[int, list[Any]] = {}
    for i in range(0, len(mkeys), 900):
        chunk = mkeys[i : i + 900]
        for mkey, status, epoch, version, last_tick in c.execute(
            f"SELECT m.mkey, m.status, m.epoch, {_HEAD} FROM matches m"
            f" WHERE m.mkey IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            heads[mkey] = [
                status,
                version or 0,
                -1 if last_tick is None else last_tick,
                epoch,
            ]
    (position,) = c.execute("SELECT coalesce(max(position), 0) FROM batches").fetchone()
    outcomes: list[Any] = []
    values: list[tuple[Any, ...]] = []
    for r in rows:
        head = heads.get(r.mkey)
        if head is None:
            outcomes.append(Conflict("unknown"))
        elif r.epoch != UNFENCED and r.epoch != head[3]:
            outcomes.append(Conflict("epoch", head[3]))
        elif head[0] in _READ_ONLY:
            outcomes.append(Conflict("ended", status=head[0]))
        elif r.first_seq - 1 != head[1]:
            outcomes.append(Conflict("version", head[1]))
        elif r.base_tick < head[2]:
            outcomes.append(Conflict("tick", head[2]))
        else:
            position += r.count
            head[1], head[2] = head[1] + r.count, r.last_tick
            values.append((position, *r[:9]))  # NewBatch's stored fields, in column order
            outcomes.append(position)
    for i in range(0, len(values), _ROWS_PER_INSERT):
        chunk = values[i : i + _ROWS_PER_INSERT]
        c.execute(_insert_rows(len(chunk)), [v for row in chunk for v in row])
    return outcomes, position


def _match_row(row: Sequence[Any]) -> MatchRow:
    *columns, version, last_tick, owner, epoch = row
    return MatchRow(*columns, version or 0, -1 if last_tick is None else last_tick, owner, epoch)


def _lease(row: Sequence[Any], now: float) -> Lease:
    match_id, owner, epoch, until = row
    return Lease(match_id, owner, epoch, 0.0 if until is None else until - now)


class SQLiteEventStore(EventStore):
    """The event store in one SQLite file (an :class:`EventStore` over a
    :class:`SQLiteRecorder`)."""

    def __init__(
        self,
        path: str,
        *,
        catalogs: Any = None,
        synchronous: Synchronous = "FULL",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        busy_timeout_ms: int = 5000,
        read_only: bool = False,
    ) -> None:
        super().__init__(
            SQLiteRecorder(
                path,
                synchronous=synchronous,
                busy_timeout_ms=busy_timeout_ms,
                read_only=read_only,
            ),
            catalogs=catalogs,
            max_event_bytes=max_event_bytes,
        )
        self.path = path
        self.synchronous = synchronous
