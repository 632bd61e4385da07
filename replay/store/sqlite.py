"""The SQLite event store: WAL, one writer task with group commit, a separate reader.

Layout (one row per appended batch, see docs/events.md and docs/operations.md)::

    matches(mkey, match_id, game, rules_version, tick_rate, players, settings, seed,
            created_at, ended_at, status, options)
    batches(position, mkey, first_seq, count, base_tick, last_tick, first_id, blob)
    keyframes(mkey, tick, format_version, data, checksum)

``batches.position`` is the rowid and the global position of the batch's *last*
event, so ``read_all(after)`` is a primary-key range scan ``position > after``
that trims the first row.

Concurrency. Exactly one task (the writer) assigns seqs and positions and writes
events, on its own connection: it drains every queued append, writes them with
one multi-row ``INSERT`` (in autocommit mode a statement is its own transaction,
so a group costs one trip to aiosqlite's thread, not an ``executemany`` plus a
``COMMIT``), and only then resolves the callers' futures. Positions are
therefore assigned in commit order, which is what lets a subscriber trust that
nothing will appear below a position it has seen. Metadata and keyframe writes
use the same connection under the same lock, between groups. Reads use another
connection; under WAL they never block the writer and see only committed data.

Only one process may write a store file at a time (the seq/position cache lives
in the writer); any number of processes may read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiosqlite

from replay.codec import decode_batch, encode_batch, encoded_sizes
from replay.errors import (
    ConcurrencyError,
    CorruptEventError,
    EventEncodeError,
    EventTooLargeError,
    InvalidEventError,
    MatchEndedError,
    MatchExistsError,
    StoreClosedError,
    UnknownMatchError,
)
from replay.events import EventCatalog, NewEvent, RecordedEvent, UnknownEventType
from replay.store.base import (
    DEFAULT_MAX_EVENT_BYTES,
    READ_ONLY_STATUSES,
    AppendResult,
    EventBatch,
    EventIds,
    EventStore,
    Keyframe,
    MatchRecord,
    MatchStatus,
    wait_event,
)

__all__ = ["SQLiteEventStore", "Synchronous"]

Synchronous = Literal["FULL", "NORMAL"]
"""SQLite's ``synchronous`` pragma under WAL, i.e. the durability of an acknowledged append:

* ``FULL`` (default): every commit fsyncs the WAL before the append returns. An
  acknowledged append survives a crash of the process and of the machine (power loss).
* ``NORMAL``: the WAL is fsynced only at checkpoints. An acknowledged append survives
  a crash of the process, but the last commits may be lost if the machine crashes.
"""

_MAX_TICK = 2**62
_MAX_ID = 2**128 - 1
_STATUSES = frozenset({"created", "running", "ended", "interrupted"})

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
    options TEXT NOT NULL DEFAULT '{}'  -- JSON object: MatchRecord.options
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
    types INTEGER                  -- _type_mask of the batch's event types (NULL: unknown)
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
"""

_INSERT_BATCH = (
    "INSERT INTO batches"
    " (position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, types) VALUES "
)
_ROWS_PER_INSERT = (32766 if sqlite3.sqlite_version_info >= (3, 32) else 999) // 9
"""Rows one INSERT can carry: SQLite's limit on bound parameters, 9 per row."""


@functools.lru_cache(maxsize=64)
def _insert_rows(n: int) -> str:
    """One INSERT of ``n`` batch rows: a group commit is a single statement."""
    return _INSERT_BATCH + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)


_TYPE_BITS = 62
"""``batches.types`` has bit ``min(type, 62)`` set for each event type in the batch
(codes 62 and up share the last bit: a superset, never a miss). A 63-bit value keeps
it a positive SQLite integer."""


def _type_mask(types: Iterable[int]) -> int:
    mask = 0
    for t in types:
        mask |= 1 << min(t, _TYPE_BITS)
    return mask


_BATCH_COLS = "position, mkey, first_seq, count, base_tick, first_id, blob"
_BATCH_COLS_OF_B = ", ".join(f"b.{c}" for c in _BATCH_COLS.split(", "))
_MATCH_COLS = (
    "m.mkey, m.match_id, m.game, m.rules_version, m.tick_rate, m.players, m.settings, m.seed,"
    " m.created_at, m.ended_at, m.status, m.options,"
    " (SELECT first_seq + count - 1 FROM batches b WHERE b.mkey = m.mkey"
    "  ORDER BY first_seq DESC LIMIT 1),"
    " (SELECT last_tick FROM batches b WHERE b.mkey = m.mkey ORDER BY first_seq DESC LIMIT 1)"
)


@dataclass(eq=False)
class _Stream:
    """The writer's view of one match. Invariant: ``version`` and ``last_tick`` equal the
    committed values, except inside the writer's group between assignment and commit."""

    mkey: int
    match_id: str
    status: str
    version: int
    last_tick: int


@dataclass(eq=False)
class _Append:
    stream: _Stream
    events: Sequence[NewEvent]
    expected_version: int
    first_id: int
    blob: bytes
    future: asyncio.Future[AppendResult] = field(repr=False)


class SQLiteEventStore(EventStore):
    """The event store in one SQLite file.

    ``synchronous`` is the durability level (see :data:`Synchronous`). ``max_event_bytes``
    bounds one encoded event (default 16 KiB); a batch is held in memory until
    committed, so pending memory is bounded by the callers' batches in flight.
    """

    def __init__(
        self,
        path: str,
        *,
        catalogs: Mapping[str, EventCatalog] | None = None,
        synchronous: Synchronous = "FULL",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        self.path = path
        self.catalogs: Mapping[str, EventCatalog] = catalogs or {}
        """Game name -> event catalog: stored events are upcast on read; a game not in
        it has its events returned with their stored versions."""
        self.synchronous = synchronous
        self.max_event_bytes = max_event_bytes
        self._busy_timeout_ms = busy_timeout_ms
        self._ids = EventIds()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._queue: list[_Append] = []
        self._wake = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._streams: dict[str, _Stream] = {}
        # mkey -> (match_id, catalog); match ids and games never change once created.
        self._by_mkey: dict[int, tuple[str, EventCatalog | None]] = {}
        self._last_position = 0
        self._committed = asyncio.Event()
        self.commits = 0
        """Group commits so far (statistics: appends / commits is the grouping factor)."""

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        # Autocommit: every write below is one statement, atomic and durable when it
        # returns, so each costs one trip to aiosqlite's thread instead of two (+ COMMIT).
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={self.synchronous}",
            f"PRAGMA busy_timeout={self._busy_timeout_ms}",
        ):
            await self._writer.execute(pragma)
        await self._writer.executescript(_SCHEMA)
        async with self._writer.execute("PRAGMA table_info(matches)") as cur:
            if "options" not in {row[1] for row in await cur.fetchall()}:
                # A store file from before MatchRecord.options: its matches get {}.
                await self._writer.execute(
                    "ALTER TABLE matches ADD COLUMN options TEXT NOT NULL DEFAULT '{}'"
                )
        async with self._writer.execute("PRAGMA table_info(batches)") as cur:
            if "types" not in {row[1] for row in await cur.fetchall()}:
                # Older batches get NULL: "any type", so scans decode them.
                await self._writer.execute("ALTER TABLE batches ADD COLUMN types INTEGER")
        async with self._writer.execute("SELECT coalesce(max(position), 0) FROM batches") as cur:
            (self._last_position,) = await cur.fetchone()  # type: ignore[misc]
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        await self._reader.execute("PRAGMA query_only=1")
        self._writer_task = asyncio.create_task(self._run_writer(), name="event-store-writer")

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._in_flight:
            self._idle.clear()
            await self._idle.wait()
        self._wake.set()
        if self._writer_task is not None:
            await self._writer_task
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._committed.set()

    # -- matches ---------------------------------------------------------------

    async def create_match(self, record: MatchRecord) -> MatchRecord:
        if record.status not in _STATUSES:
            raise ValueError(f"unknown match status {record.status!r}")
        row = (
            record.match_id,
            record.game,
            record.rules_version,
            record.tick_rate,
            json.dumps(list(record.players)),
            json.dumps(record.settings),
            record.seed,
            record.created_at,
            record.ended_at,
            record.status,
            json.dumps(record.options),
        )
        async with self._write_lock:
            conn = self._conn_w()
            try:
                await conn.execute(
                    "INSERT INTO matches (match_id, game, rules_version, tick_rate, players,"
                    " settings, seed, created_at, ended_at, status, options)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError:
                raise MatchExistsError(record.match_id) from None
        return record.with_changes(version=0, last_tick=-1)

    async def get_match(self, match_id: str) -> MatchRecord:
        rows = await self._fetch(
            f"SELECT {_MATCH_COLS} FROM matches m WHERE m.match_id = ?", (match_id,)
        )
        if not rows:
            raise UnknownMatchError(match_id)
        return _record(rows[0])

    async def list_matches(
        self,
        *,
        status: str | Sequence[str] | None = None,
        game: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MatchRecord]:
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"m.status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if game is not None:
            where.append("m.game = ?")
            args.append(game)
        sql = f"SELECT {_MATCH_COLS} FROM matches m"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY m.created_at DESC, m.mkey DESC LIMIT ? OFFSET ?"
        return [_record(r) for r in await self._fetch(sql, (*args, limit, offset))]

    async def update_match(
        self,
        match_id: str,
        *,
        status: MatchStatus | None = None,
        ended_at: float | None = None,
        players: Sequence[str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> MatchRecord:
        if status is not None and status not in _STATUSES:
            raise ValueError(f"unknown match status {status!r}")
        async with self._write_lock:
            conn = self._conn_w()
            async with conn.execute(
                "SELECT status FROM matches WHERE match_id = ?", (match_id,)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise UnknownMatchError(match_id)
            current = row[0]
            # Read-only is forever; the only move out of it is interrupted -> ended.
            if (
                status is not None
                and current in READ_ONLY_STATUSES
                and status != current
                and not (current == "interrupted" and status == "ended")
            ):
                raise MatchEndedError(match_id, current)
            sets: list[str] = []
            args: list[Any] = []
            for column, value in (
                ("status", status),
                ("ended_at", ended_at),
                ("players", None if players is None else json.dumps(list(players))),
                ("settings", None if settings is None else json.dumps(settings)),
            ):
                if value is not None:
                    sets.append(f"{column} = ?")
                    args.append(value)
            if sets:
                await conn.execute(
                    f"UPDATE matches SET {', '.join(sets)} WHERE match_id = ?", (*args, match_id)
                )
            if status is not None and match_id in self._streams:
                # Under the write lock: the writer sees the new status in its next group.
                self._streams[match_id].status = status
        return await self.get_match(match_id)

    # -- appends ---------------------------------------------------------------

    async def append(
        self,
        match_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        first_id: int | None = None,
    ) -> AppendResult:
        if self._closing or self._writer is None:
            raise StoreClosedError("the event store is closed")
        if not events:
            raise InvalidEventError(f"match {match_id!r}: empty batch")
        _check_events(match_id, events)
        if first_id is not None and not 0 <= first_id <= _MAX_ID - len(events):
            raise InvalidEventError(f"match {match_id!r}: first_id {first_id} is not a 128-bit id")
        try:
            blob = encode_batch(events)  # EventEncodeError names the event
        except TypeError as exc:  # `data` that is not a sequence
            raise EventEncodeError(f"match {match_id!r}: event data must be arrays: {exc}") from exc
        # A batch no larger than the limit cannot hold an event over it: measure
        # each event only when the whole batch could.
        if len(blob) > self.max_event_bytes:
            for i, size in enumerate(encoded_sizes(events)):
                if size > self.max_event_bytes:
                    raise EventTooLargeError(
                        f"match {match_id!r}: event {i} (type {events[i].type}) encodes to"
                        f" {size} bytes; the limit is {self.max_event_bytes}"
                    )
        # close() waits for admitted appends, so none is cut off between its
        # checks and its ack.
        self._in_flight += 1
        try:
            return await self._admitted_append(match_id, events, expected_version, first_id, blob)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _admitted_append(
        self,
        match_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        first_id: int | None,
        blob: bytes,
    ) -> AppendResult:
        stream = await self._stream(match_id)
        if stream.status in READ_ONLY_STATUSES and first_id is None:
            raise MatchEndedError(match_id, stream.status)
        request = _Append(
            stream,
            events,
            expected_version,
            self._ids.take(len(events)) if first_id is None else first_id,
            blob,
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(request)
        self._wake.set()
        try:
            return await request.future
        except (ConcurrencyError, MatchEndedError):
            if first_id is not None:
                done = await self._find_batch(stream, expected_version + 1, first_id, len(events))
                if done is not None:
                    return done  # a retry of a committed append: the original result
            raise

    async def _find_batch(
        self, stream: _Stream, first_seq: int, first_id: int, count: int
    ) -> AppendResult | None:
        rows = await self._fetch(
            "SELECT position, count, first_id FROM batches WHERE mkey = ? AND first_seq = ?",
            (stream.mkey, first_seq),
        )
        if not rows or rows[0][1] != count or rows[0][2] != first_id.to_bytes(16, "big"):
            return None
        last_position = rows[0][0]
        return AppendResult(
            stream.match_id,
            first_seq,
            first_seq + count - 1,
            last_position - count + 1,
            last_position,
            first_id,
        )

    async def _stream(self, match_id: str) -> _Stream:
        stream = self._streams.get(match_id)
        if stream is not None:
            return stream
        rows = await self._fetch(
            f"SELECT {_MATCH_COLS} FROM matches m WHERE m.match_id = ?", (match_id,)
        )
        if not rows:
            raise UnknownMatchError(match_id)
        # Another task may have loaded (and appended through) the stream meanwhile:
        # the first one cached wins, so there is one _Stream per match.
        stream = self._streams.get(match_id)
        if stream is None:
            mkey, *_, status, _options, version, last_tick = rows[0]
            stream = _Stream(
                mkey, match_id, status, version or 0, -1 if last_tick is None else last_tick
            )
            self._streams[match_id] = stream
        return stream

    async def _run_writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue:
                group, self._queue = self._queue, []
                async with self._write_lock:
                    try:
                        await self._commit_group(group)
                    except Exception as exc:  # a bug must fail its group, not stop the writer
                        for req in group:
                            _fail(req, exc)
            elif self._closing:
                return

    async def _commit_group(self, group: list[_Append]) -> None:
        """Write every acceptable request of ``group`` in one transaction.

        A request that fails its checks fails alone; the others still commit.
        """
        conn = self._conn_w()
        rows: list[tuple[Any, ...]] = []
        accepted: list[tuple[_Append, AppendResult]] = []
        undo: dict[int, tuple[_Stream, int, int]] = {}
        position = self._last_position
        for req in group:
            s = req.stream
            if s.status in READ_ONLY_STATUSES:
                _fail(req, MatchEndedError(s.match_id, s.status))
                continue
            if req.expected_version != s.version:
                _fail(req, ConcurrencyError(s.match_id, req.expected_version, s.version))
                continue
            events = req.events
            base_tick, last_tick = events[0].tick, events[-1].tick
            if base_tick < s.last_tick:
                _fail(
                    req,
                    InvalidEventError(
                        f"match {s.match_id!r}: tick {base_tick} is before the match's last"
                        f" stored tick {s.last_tick}"
                    ),
                )
                continue
            undo.setdefault(s.mkey, (s, s.version, s.last_tick))
            n = len(events)
            first_seq = s.version + 1
            position += n
            rows.append(
                (
                    position,
                    s.mkey,
                    first_seq,
                    n,
                    base_tick,
                    last_tick,
                    req.first_id.to_bytes(16, "big"),
                    req.blob,
                    _type_mask({e.type for e in events}),
                )
            )
            s.version += n
            s.last_tick = last_tick
            accepted.append(
                (
                    req,
                    AppendResult(
                        s.match_id, first_seq, s.version, position - n + 1, position, req.first_id
                    ),
                )
            )
        if not rows:
            return
        try:
            if len(rows) <= _ROWS_PER_INSERT:
                # One statement, so one transaction (autocommit): all rows or none.
                await conn.execute(_insert_rows(len(rows)), [v for row in rows for v in row])
            else:
                await conn.execute("BEGIN IMMEDIATE")
                for i in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[i : i + _ROWS_PER_INSERT]
                    await conn.execute(_insert_rows(len(chunk)), [v for row in chunk for v in row])
                await conn.execute("COMMIT")
        except Exception as exc:  # disk full, I/O error: nothing of the group is written
            for s, version, last_tick in undo.values():
                s.version, s.last_tick = version, last_tick
            # A failed statement rolled itself back; a failed COMMIT may leave BEGIN open.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
            for req, _ in accepted:
                _fail(req, exc)
            return
        self._last_position = position
        self.commits += 1
        # Durable now: acknowledge, then wake waiting readers (subscribers).
        for req, result in accepted:
            if not req.future.done():  # the caller may have been cancelled
                req.future.set_result(result)
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()

    # -- reads -----------------------------------------------------------------

    async def read_batches(
        self,
        match_id: str,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        from_tick: int | None = None,
        to_tick: int | None = None,
    ) -> list[EventBatch]:
        mkey = await self._mkey(match_id)
        # Clamped into SQLite's integer range; no stored value lies outside it.
        hi_seq = min(to_seq, _MAX_TICK) if to_seq is not None else _MAX_TICK
        from_seq = max(min(from_seq, _MAX_TICK), -_MAX_TICK)
        if from_tick is None and to_tick is None:
            # The batch holding from_seq starts at the greatest first_seq <= from_seq.
            rows = await self._fetch(
                f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = ?1 AND first_seq >= coalesce("
                " (SELECT max(first_seq) FROM batches WHERE mkey = ?1 AND first_seq <= ?2), 1)"
                " AND first_seq <= ?3 ORDER BY first_seq",
                (mkey, from_seq, hi_seq),
            )
        else:
            lo = max(min(from_tick, _MAX_TICK), -_MAX_TICK) if from_tick is not None else -1
            hi = max(min(to_tick, _MAX_TICK), -_MAX_TICK) if to_tick is not None else _MAX_TICK
            # Ticks never go back, so at most one batch starts at or before `hi` and
            # ends after it: the first one ending after `hi`. Both queries are index ranges.
            rows = await self._fetch(
                f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = ?1 AND last_tick BETWEEN ?2 AND ?3"
                " ORDER BY last_tick, position",
                (mkey, lo, hi),
            )
            rows += await self._fetch(
                f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = ?1 AND last_tick > ?2"
                " ORDER BY last_tick, position LIMIT 1",
                (mkey, hi),
            )
            # Columns: 2 first_seq, 3 count, 4 base_tick.
            rows = [r for r in rows if r[4] <= hi and r[2] <= hi_seq and r[2] + r[3] > from_seq]
        return [self._decode(row) for row in rows]

    async def read_all(self, after: int = 0, limit: int = 10_000) -> list[RecordedEvent]:
        # A batch row's position is its last event's, so the row holding after + 1 is
        # the first with position > after; its earlier events are trimmed below.
        rows = await self._fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE position > ? ORDER BY position LIMIT ?",
            (after, limit),
        )
        out: list[RecordedEvent] = []
        for row in rows:
            if row[1] not in self._by_mkey:
                await self._load_mkey(row[1])
            out.extend(e for e in self._decode(row).recorded() if e.position > after)
            if len(out) >= limit:
                return out[:limit]
        return out

    async def read_all_batches(self, after: int = 0, limit: int = 1_000) -> list[EventBatch]:
        # Stored batches as they are, the first trimmed to positions > after.
        rows = await self._fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE position > ? ORDER BY position LIMIT ?",
            (after, limit),
        )
        out: list[EventBatch] = []
        for row in rows:
            if row[1] not in self._by_mkey:
                await self._load_mkey(row[1])
            b = self._decode(row)
            if (k := after + 1 - b.first_position) > 0:
                b = EventBatch(b.match_id, b.first_seq + k, after + 1, b.first_id + k, b.events[k:])
            out.append(b)
        return out

    async def scan(
        self, after: int, limit: int, types: Collection[int]
    ) -> tuple[list[EventBatch], int]:
        # How far the next `limit` rows reach is found inside SQLite (no row built in
        # Python); only the rows in that range whose type mask matches come back, each
        # with that position in front, or one row of NULLs after it when none does.
        # One round trip: under a busy event loop every await costs a loop turn.
        rows = await self._fetch(
            "WITH upto(through) AS (SELECT max(position) FROM"
            " (SELECT position FROM batches WHERE position > ?1 ORDER BY position LIMIT ?2))"
            f" SELECT upto.through, {_BATCH_COLS_OF_B}"
            " FROM upto LEFT JOIN batches b ON b.position > ?1 AND b.position <= upto.through"
            " AND (b.types IS NULL OR b.types & ?3) ORDER BY b.position",
            (after, limit, _type_mask(types)),
        )
        through = rows[0][0]
        if through is None:
            return [], after
        rows = [row[1:] for row in rows if row[1] is not None]
        wanted = frozenset(types)
        out: list[EventBatch] = []
        for row in rows:
            if row[1] not in self._by_mkey:
                await self._load_mkey(row[1])
            b = self._decode(row, wanted)
            if (k := after + 1 - b.first_position) > 0:
                b = EventBatch(b.match_id, b.first_seq + k, after + 1, b.first_id + k, b.events[k:])
            # The mask is a superset (shared high bit): keep batches with a wanted event.
            if b.events.count(None) < len(b.events):
                out.append(b)
        return out, through

    async def last_position(self) -> int:
        rows = await self._fetch("SELECT coalesce(max(position), 0) FROM batches", ())
        return rows[0][0]

    async def wait_for_commit(self, after: int, timeout: float) -> None:
        # In-process commits signal the event; commits by another process are seen
        # when the timeout ends and the caller reads again.
        if self._last_position > after:
            return
        await wait_event(self._committed, timeout)

    # -- keyframes ---------------------------------------------------------------

    async def put_keyframe(self, keyframe: Keyframe) -> None:
        mkey = await self._mkey(keyframe.match_id)
        async with self._write_lock:
            conn = self._conn_w()
            await conn.execute(
                "INSERT OR REPLACE INTO keyframes (mkey, tick, format_version, data, checksum)"
                " VALUES (?, ?, ?, ?, ?)",
                (mkey, keyframe.tick, keyframe.format_version, keyframe.data, keyframe.checksum),
            )

    async def get_keyframe(self, match_id: str, at_or_before: int) -> Keyframe | None:
        mkey = await self._mkey(match_id)
        rows = await self._fetch(
            "SELECT tick, format_version, data, checksum FROM keyframes"
            " WHERE mkey = ? AND tick <= ? ORDER BY tick DESC LIMIT 1",
            (mkey, at_or_before),
        )
        if not rows:
            return None
        tick, format_version, data, checksum = rows[0]
        return Keyframe(match_id, tick, format_version, bytes(data), bytes(checksum))

    async def keyframe_ticks(self, match_id: str) -> list[int]:
        mkey = await self._mkey(match_id)
        rows = await self._fetch("SELECT tick FROM keyframes WHERE mkey = ? ORDER BY tick", (mkey,))
        return [r[0] for r in rows]

    async def delete_keyframes(self, match_id: str, before_tick: int | None = None) -> int:
        mkey = await self._mkey(match_id)
        async with self._write_lock:
            conn = self._conn_w()
            cur = await conn.execute(
                "DELETE FROM keyframes WHERE mkey = ? AND tick < ?",
                (mkey, _MAX_TICK + 1 if before_tick is None else min(before_tick, _MAX_TICK + 1)),
            )
            return cur.rowcount

    # -- helpers -----------------------------------------------------------------

    def _conn_w(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreClosedError("the event store is not open")
        return self._writer

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[Any]:
        if self._reader is None:
            raise StoreClosedError("the event store is not open")
        # One call on the reader's thread: execute and fetch together. As two calls, the
        # statements of concurrent readers interleave on the connection, one of them is
        # always active, and its read transaction (WAL snapshot) never ends: reads stay
        # stale while commits land (a version read, then a conflicting append).
        return list(await self._reader.execute_fetchall(sql, args))

    async def _mkey(self, match_id: str) -> int:
        stream = self._streams.get(match_id)
        if stream is not None and stream.mkey in self._by_mkey:
            return stream.mkey
        rows = await self._fetch("SELECT mkey, game FROM matches WHERE match_id = ?", (match_id,))
        if not rows:
            raise UnknownMatchError(match_id)
        mkey, game = rows[0]
        self._by_mkey.setdefault(mkey, (match_id, self.catalogs.get(game)))
        return mkey

    async def _load_mkey(self, mkey: int) -> None:
        rows = await self._fetch("SELECT match_id, game FROM matches WHERE mkey = ?", (mkey,))
        if not rows:
            raise CorruptEventError(f"event batch references unknown match key {mkey}")
        self._by_mkey[mkey] = (rows[0][0], self.catalogs.get(rows[0][1]))

    def _decode(self, row: Sequence[Any], types: Collection[int] | None = None) -> EventBatch:
        # With `types`, events of other types stay None (scan), and are not upcast.
        position, mkey, first_seq, count, base_tick, first_id, blob = row
        match_id, catalog = self._by_mkey[mkey]
        try:
            events: list[Any] = (
                decode_batch(blob, base_tick)
                if types is None
                else decode_batch(blob, base_tick, types)
            )
        except CorruptEventError as exc:
            raise CorruptEventError(f"{_where(match_id, first_seq, count)}: {exc}") from exc
        if len(events) != count:
            raise CorruptEventError(
                f"{_where(match_id, first_seq, count)}: holds {len(events)} events, not {count}"
            )
        decoded = events if types is None else [e for e in events if e is not None]
        # The hot path: one set comprehension decides that nothing needs upcasting.
        if catalog is not None and not {(e[0], e[1]) for e in decoded} <= catalog.current:
            current = catalog.current
            where = _where(match_id, first_seq, count)
            for i, e in enumerate(events):
                if e is None:
                    continue
                type_, version, tick, data = e
                if (type_, version) in current:
                    continue
                try:
                    data, version = catalog.upcast(type_, version, data)
                except UnknownEventType:
                    continue  # not in this build's catalog: returned as stored
                except Exception as exc:  # a version from the future, a failing upcaster
                    raise CorruptEventError(
                        f"{where}: event {first_seq + i} cannot be upcast: {exc}"
                    ) from exc
                events[i] = (type_, version, tick, data)
        return EventBatch(
            match_id,
            first_seq,
            position - count + 1,
            int.from_bytes(first_id, "big"),
            events,
        )


def _where(match_id: str, first_seq: int, count: int) -> str:
    return f"match {match_id!r} seq {first_seq}..{first_seq + count - 1}"


def _check_events(match_id: str, events: Sequence[NewEvent]) -> None:
    """Reject what SQLite columns or the reading rules cannot hold, before queueing: a
    bad request must fail alone, never inside the writer's shared transaction."""
    ticks = [e.tick for e in events]
    if not set(map(type, ticks)) <= {int}:
        raise InvalidEventError(f"match {match_id!r}: ticks must be integers")
    if ticks != sorted(ticks):
        i = next(i for i in range(1, len(ticks)) if ticks[i] < ticks[i - 1])
        raise InvalidEventError(
            f"match {match_id!r}: event {i} has tick {ticks[i]}, before the previous"
            f" event's tick {ticks[i - 1]}"
        )
    if ticks[0] < 0 or ticks[-1] > _MAX_TICK:
        raise InvalidEventError(f"match {match_id!r}: ticks must be in 0..{_MAX_TICK}")
    for type_, version in {(e.type, e.version) for e in events}:
        if type(type_) is not int or not 0 <= type_ <= 0xFFFF:
            raise InvalidEventError(f"match {match_id!r}: event type {type_!r} not in 0..65535")
        if type(version) is not int or version < 1:
            raise InvalidEventError(f"match {match_id!r}: event version {version!r} is not >= 1")


def _fail(req: _Append, exc: BaseException) -> None:
    if not req.future.done():  # the caller may have been cancelled
        req.future.set_exception(exc)


def _record(row: Sequence[Any]) -> MatchRecord:
    (
        _mkey,
        match_id,
        game,
        rules_version,
        tick_rate,
        players,
        settings,
        seed,
        created_at,
        ended_at,
        status,
        options,
        version,
        last_tick,
    ) = row
    return MatchRecord(
        match_id=match_id,
        game=game,
        rules_version=rules_version,
        tick_rate=tick_rate,
        players=tuple(json.loads(players)),
        settings=json.loads(settings),
        seed=seed,
        created_at=created_at,
        ended_at=ended_at,
        status=status,
        version=version or 0,
        last_tick=-1 if last_tick is None else last_tick,
        options=json.loads(options),
    )
