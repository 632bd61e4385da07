"""The PostgreSQL recorder: one database shared by any number of processes and machines.

Layout (the same rows as the SQLite recorder, see docs/operations.md)::

    matchreplay_schema(version)
    matches(mkey, match_id, game, rules_version, tick_rate, players, settings, seed,
            created_at, ended_at, status, options, owner, epoch, lease_until)
    batches(position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, types)
    keyframes(mkey, tick, format_version, data, checksum)
    nodes(node, name, url, started_at, seen_at, status, load)

Ordering. A group commit is one transaction that first takes a transaction-scoped
advisory lock (:data:`POSITION_LOCK`), then reads the highest position and the heads
of its matches, inserts its rows and commits; PostgreSQL makes a commit visible
before it releases the transaction's locks. So positions are assigned in commit
order across every writer process: a reader that has seen position ``p`` has seen
everything below it, and nothing can appear there later (the gap that Postgres
event stores using sequences shipped). Group commit pays the lock, the round trips
and the WAL flush once per group, not per append.

Conflicts are decided under that lock from the stored rows (and backed by the
unique key on ``(mkey, first_seq)``), so two processes appending to one match at
the same version get one winner and one conflict.

Leases. A match's owner, epoch and lease end are columns of its row; the lease
methods are single UPDATEs (two nodes taking one match: the row lock lets exactly one
win), and those that change the epoch also take the position lock, so a group commit
checks an append's epoch either before the change of owner or after it, never across.
Times are PostgreSQL's ``clock_timestamp()``: nodes whose clocks disagree agree on it.

Wake-ups. Each group's transaction sends ``NOTIFY matchreplay_commits, '<head>'``;
PostgreSQL delivers it at commit to every listening connection, so a subscriber in
any process wakes without polling.

Failures. A lost or refused connection (the server stopped, a network cut) fails
the call with :class:`~replay.errors.StoreUnavailableError` within ``timeout``
seconds, never a hang; the pool reconnects on the next call. A group whose COMMIT
was cut off may or may not be stored: a retry with the same ``first_id`` returns the
original result if it was (idempotent appends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from replay.errors import (
    MatchExistsError,
    StoreClosedError,
    StoreSchemaError,
    StoreUnavailableError,
)
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

__all__ = ["POSITION_LOCK", "SCHEMA_VERSION", "PostgresRecorder"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
"""The row in ``matchreplay_schema`` of a current database; a higher one is refused,
a lower one migrated (:data:`_MIGRATIONS`). 2: leases and nodes; 3: a batch with a
notable system event has ``recorder.NOTABLE_BIT`` in its types; 4: the group-commit
function returns the head and the refusals only."""

POSITION_LOCK = 0x6D_72_65_70_6C_61_79
"""``pg_advisory_xact_lock`` key taken by every group commit and match update: it
serialises position assignment, so positions follow commit order."""

CHANNEL = "matchreplay_commits"

_READ_ONLY = ("ended", "interrupted")

_SCHEMA_V1 = """
CREATE TABLE matches (
    mkey bigserial PRIMARY KEY,
    match_id text NOT NULL UNIQUE,
    game text NOT NULL,
    rules_version text NOT NULL,
    tick_rate integer NOT NULL,
    players text NOT NULL,
    settings text NOT NULL,
    seed bigint NOT NULL,
    created_at double precision NOT NULL,
    ended_at double precision,
    status text NOT NULL,
    options text NOT NULL DEFAULT '{}'
);
CREATE INDEX matches_created ON matches (created_at, mkey);
CREATE TABLE batches (
    position bigint PRIMARY KEY,
    mkey bigint NOT NULL REFERENCES matches (mkey),
    first_seq bigint NOT NULL,
    count integer NOT NULL,
    base_tick bigint NOT NULL,
    last_tick bigint NOT NULL,
    first_id bytea NOT NULL,
    blob bytea NOT NULL,
    types bigint,
    checksum bytea
);
CREATE UNIQUE INDEX batches_seq ON batches (mkey, first_seq);
CREATE INDEX batches_tick ON batches (mkey, last_tick);
CREATE TABLE keyframes (
    mkey bigint NOT NULL REFERENCES matches (mkey),
    tick bigint NOT NULL,
    format_version integer NOT NULL,
    data bytea NOT NULL,
    checksum bytea NOT NULL,
    PRIMARY KEY (mkey, tick)
);
"""
"""The first schema: a new database starts here and is migrated like an old one."""

_LIVE = f"status IN ({', '.join(map(repr, sorted(LIVE_STATUSES)))})"
"""records.LIVE_STATUSES in SQL: the matches a lease can be taken on."""
_LEASED = f"owner <> '' AND {_LIVE}"
"""The leased live matches: the partial indexes' condition, repeated verbatim by the
queries that use them."""

_MIGRATIONS = {
    2: f"""
ALTER TABLE matches
    ADD COLUMN owner text NOT NULL DEFAULT '',
    ADD COLUMN epoch bigint NOT NULL DEFAULT 0,
    ADD COLUMN lease_until double precision;
CREATE INDEX matches_owner ON matches (owner) WHERE {_LEASED};
CREATE INDEX matches_lease_until ON matches (lease_until) WHERE {_LEASED};
CREATE TABLE nodes (
    node text PRIMARY KEY,
    name text NOT NULL,
    url text NOT NULL,
    started_at double precision NOT NULL,
    seen_at double precision NOT NULL,
    status text NOT NULL,
    load text NOT NULL
);
DROP FUNCTION IF EXISTS matchreplay_insert_group(
    bigint[], bigint[], integer[], bigint[], bigint[], bytea[], bytea[], bigint[], bytea[]);
""",
    # Rows may hold a rewound or forked event under bit 62 only: every row with bit 62
    # gets bit 61 too (a superset, never a miss).
    3: f"UPDATE batches SET types = types | {1 << NOTABLE_BIT} WHERE types & {1 << TYPE_BITS} <> 0",
    # The group-commit function answers differently now: a new name, so that a node
    # still running the old code fails its group commits loudly (no such function)
    # instead of reading the new answer the old way.
    4: """
DROP FUNCTION IF EXISTS matchreplay_insert_group(
    bigint[], bigint[], integer[], bigint[], bigint[], bytea[], bytea[], bigint[], bytea[],
    bigint[]);
""",
}
"""Schema version -> the SQL that migrates the version before it (leases: version 2)."""

_INSERT_GROUP_FUNCTION = f"""
-- A whole group commit in one statement (one round trip; autocommit makes it one
-- transaction): take the position lock, read the highest position, decide each row
-- against the stored head of its match (earlier rows of the group count), insert the
-- accepted ones, notify listeners. Returns first the head before the group (i = 0,
-- in actual), then one row per refused input row (i: its 1-based index): the caller
-- numbers the accepted rows from that head in order, as the insert does. Replaced by
-- every migration.
CREATE OR REPLACE FUNCTION matchreplay_commit_group(
    p_mkey bigint[], p_first_seq bigint[], p_count integer[], p_base_tick bigint[],
    p_last_tick bigint[], p_first_id bytea[], p_blob bytea[], p_types bigint[],
    p_checksum bytea[], p_epoch bigint[])
RETURNS TABLE (i integer, reason text, actual bigint, status text)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_mkey, 1), 0);
    head bigint;
    refused integer[] := '{{}}';
    keys bigint[];
    sts text[];
    eps bigint[];
    vers bigint[];
    lts bigint[];
    k integer;
BEGIN
    PERFORM pg_advisory_xact_lock({POSITION_LOCK});
    SELECT coalesce(max(b.position), 0) INTO head FROM batches b;
    i := 0; reason := NULL; actual := head; status := '';
    RETURN NEXT;
    IF n = (SELECT count(DISTINCT x) FROM unnest(p_mkey) x) THEN
        -- Each match once (a tick's group): every row is decided against its match's
        -- stored head, all rows in one query.
        FOR i, reason, actual, status IN
            SELECT d.i, d.reason,
                   CASE d.reason WHEN 'epoch' THEN d.epoch WHEN 'version' THEN d.version
                                 WHEN 'tick' THEN d.last_tick ELSE 0 END,
                   CASE d.reason WHEN 'ended' THEN d.status ELSE '' END
              FROM (SELECT t.i::integer AS i, m.epoch, m.status,
                           coalesce(h.version, 0) AS version,
                           coalesce(h.last_tick, -1) AS last_tick,
                           CASE WHEN m.mkey IS NULL THEN 'unknown'
                                WHEN t.epoch <> {UNFENCED} AND t.epoch <> m.epoch THEN 'epoch'
                                WHEN m.status IN ('ended', 'interrupted') THEN 'ended'
                                WHEN t.first_seq - 1 <> coalesce(h.version, 0) THEN 'version'
                                WHEN t.base_tick < coalesce(h.last_tick, -1) THEN 'tick'
                           END AS reason
                      FROM unnest(p_mkey, p_first_seq, p_base_tick, p_epoch) WITH ORDINALITY
                           AS t(mkey, first_seq, base_tick, epoch, i)
                      LEFT JOIN matches m ON m.mkey = t.mkey
                      LEFT JOIN LATERAL
                           (SELECT b.first_seq + b.count - 1 AS version, b.last_tick
                              FROM batches b WHERE b.mkey = t.mkey
                             ORDER BY b.first_seq DESC LIMIT 1) h ON true) d
             WHERE d.reason IS NOT NULL
             ORDER BY d.i
        LOOP
            refused := refused || i;
            RETURN NEXT;
        END LOOP;
    ELSE
        -- A match more than once (appends chained in one group): in order, each
        -- accepted row moving its match's head for the rows after it.
        SELECT array_agg(m.mkey), array_agg(m.status), array_agg(m.epoch),
               array_agg(coalesce(h.version, 0)), array_agg(coalesce(h.last_tick, -1))
          INTO keys, sts, eps, vers, lts
          FROM matches m LEFT JOIN LATERAL
               (SELECT b.first_seq + b.count - 1 AS version, b.last_tick FROM batches b
                 WHERE b.mkey = m.mkey ORDER BY b.first_seq DESC LIMIT 1) h ON true
         WHERE m.mkey = ANY (p_mkey);
        FOR j IN 1 .. n LOOP
            k := array_position(keys, p_mkey[j]);
            i := j; actual := 0; status := '';
            IF k IS NULL THEN
                reason := 'unknown';
            ELSIF p_epoch[j] <> {UNFENCED} AND p_epoch[j] <> eps[k] THEN
                reason := 'epoch'; actual := eps[k];
            ELSIF sts[k] IN ('ended', 'interrupted') THEN
                reason := 'ended'; status := sts[k];
            ELSIF p_first_seq[j] - 1 <> vers[k] THEN
                reason := 'version'; actual := vers[k];
            ELSIF p_base_tick[j] < lts[k] THEN
                reason := 'tick'; actual := lts[k];
            ELSE
                vers[k] := vers[k] + p_count[j];
                lts[k] := p_last_tick[j];
                CONTINUE;
            END IF;
            refused := refused || j;
            RETURN NEXT;
        END LOOP;
    END IF;
    IF n > coalesce(array_length(refused, 1), 0) THEN
        WITH stored AS (
            INSERT INTO batches
                (position, mkey, first_seq, count, base_tick, last_tick, first_id, blob,
                 types, checksum)
            SELECT head + sum(u.count) OVER (ORDER BY u.i), u.mkey, u.first_seq, u.count,
                   u.base_tick, u.last_tick, u.first_id, u.blob, u.types, u.checksum
              FROM unnest(p_mkey, p_first_seq, p_count, p_base_tick, p_last_tick,
                          p_first_id, p_blob, p_types, p_checksum) WITH ORDINALITY
                   AS u(mkey, first_seq, count, base_tick, last_tick, first_id, blob, types,
                        checksum, i)
             WHERE u.i <> ALL (refused)
            RETURNING position)
        SELECT max(position) INTO head FROM stored;
        PERFORM pg_notify('{CHANNEL}', head::text);
    END IF;
END
$$;
"""

_NOW = "(SELECT extract(epoch FROM clock_timestamp())::float8 AS now) c"
"""The database's clock, once per statement, as a FROM item ``c``: every node reads
lease ends and heartbeat ages on the same clock."""
_LEASE_RETURNING = (
    "RETURNING match_id, owner, epoch, coalesce(lease_until - c.now, 0)::float8 AS expires_in"
)

_BATCH_COLS = "position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, checksum"
_MATCH_SELECT = (
    "SELECT m.mkey, "
    + ", ".join(f"m.{c}" for c in MATCH_COLUMNS)
    + ", h.version, h.last_tick, m.owner, m.epoch FROM matches m LEFT JOIN LATERAL"
    " (SELECT first_seq + count - 1 AS version, last_tick FROM batches b"
    "  WHERE b.mkey = m.mkey ORDER BY first_seq DESC LIMIT 1) h ON true"
)
_INSERT_GROUP = (
    "SELECT * FROM matchreplay_commit_group($1::text::bigint[], $2::text::bigint[],"
    " $3::text::integer[], $4::text::bigint[], $5::text::bigint[], $6::bytea[], $7::bytea[],"
    " $8::text::bigint[], $9::bytea[], $10::text::bigint[])"
)
"""The integer columns go as array literals (``{1,2,3}``): asyncpg encodes a list of
ints element by element (~0.3 us each, about a third of a group's client time);
``str.join`` and PostgreSQL's array parser take a tenth of that."""
_BYTEA_COLUMNS = frozenset({5, 6, 8})
"""NewBatch fields sent as bytea[] (first_id, blob, checksum); the others are integers."""


def _group_args(rows: Sequence[NewBatch]) -> list[Any]:
    """The arguments of :data:`_INSERT_GROUP` for ``rows``."""
    columns = list(zip(*rows, strict=True)) or [()] * len(NewBatch._fields)
    return [
        list(column) if i in _BYTEA_COLUMNS else "{" + ",".join(map(str, column)) + "}"
        for i, column in enumerate(columns)
    ]


_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # only "connection is closed" ones: see _unavailable
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
    asyncpg.exceptions.CannotConnectNowError,
)


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (not a bug of ours)."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "closing" in str(exc)
    return isinstance(exc, _UNAVAILABLE)


_T = TypeVar("_T")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing. asyncpg's default sends one more query
    (RESET ALL, UNLISTEN *, ...) after every call, doubling the round trips of each
    read; the store's pooled connections never change their session (no SET, no
    LISTEN, only transaction-scoped advisory locks), so there is nothing to reset."""


def _redact(url: str) -> str:
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


class PostgresRecorder(Recorder):
    """``url``: a libpq-style ``postgresql://`` URL. ``timeout`` bounds connecting and
    every statement (seconds); ``pool_size`` is the most connections this process opens
    for reads (plus one that listens for commits and one per group commit in flight)."""

    pipeline = 2
    """Group commits in flight: the second is sent while the first commits, and waits
    for it on the position lock inside PostgreSQL (one round trip saved, and the
    event loop prepares appends while the database writes)."""

    def __init__(self, url: str, *, timeout: float = 10.0, pool_size: int = 8) -> None:
        self.url = _redact(url)
        self._dsn = url
        self.timeout = timeout
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        # The group commits' own connections, one per commit in flight (no pool round
        # trips), opened when first needed and reopened after a loss.
        self._writers: list[asyncpg.Connection | None] = [None] * self.pipeline
        self._free_writers: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(self.pipeline):
            self._free_writers.put_nowait(slot)
        self._committed = asyncio.Event()
        self._head = 0
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        # Opened again after close(): waits wait again (close set the event for good).
        self._closed = False
        self._committed = asyncio.Event()
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self.timeout,
                command_timeout=self.timeout,
                reset=_keep_session,
            )
        except _UNAVAILABLE as exc:
            if not _unavailable(exc):
                raise
            raise StoreUnavailableError(f"cannot connect to {self.url}: {exc}") from exc
        try:
            await self._run(self._prepare)
        except BaseException:
            await self._pool.close()
            raise
        await self._listen()
        self._head = await self.head()
        # The group commits' connections now, not in the first appends' time; one that
        # cannot be had now is tried again (and its failure reported) by a group commit.
        await asyncio.gather(
            *map(self._writer_connection, range(self.pipeline)), return_exceptions=True
        )

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            # Two processes opening an empty database at once: one creates, one waits.
            await conn.execute(f"SELECT pg_advisory_xact_lock({POSITION_LOCK})")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS matchreplay_schema (version integer NOT NULL)"
            )
            version = await conn.fetchval("SELECT max(version) FROM matchreplay_schema")
            if version is None:
                await conn.execute(_SCHEMA_V1)
                await conn.execute("INSERT INTO matchreplay_schema VALUES (1)")
                version = 1
            elif version > SCHEMA_VERSION:
                raise StoreSchemaError(
                    f"{self.url}: store schema version {version} is newer than this"
                    f" matchreplay's ({SCHEMA_VERSION}); upgrade matchreplay to open it"
                )
            if version < SCHEMA_VERSION:
                # One step at a time, in this transaction: all of it or none.
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    await conn.execute(_MIGRATIONS[step])
                await conn.execute(_INSERT_GROUP_FUNCTION)
                await conn.execute("UPDATE matchreplay_schema SET version = $1", SCHEMA_VERSION)

    async def close(self) -> None:
        self._closed = True
        self._committed.set()
        for conn in (self._listener, *self._writers):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), self.timeout)
        self._listener = None
        self._writers = [None] * self.pipeline
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except Exception:  # the server is gone: drop the connections
                pool.terminate()

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        """``fn`` on a pooled connection; a lost database is a StoreUnavailableError."""
        if self._pool is None:
            raise StoreClosedError("the event store is not open")
        try:
            async with self._pool.acquire(timeout=self.timeout) as conn:
                return await fn(conn)
        except _UNAVAILABLE as exc:
            if not _unavailable(exc):
                raise
            raise StoreUnavailableError(f"PostgreSQL at {self.url} is unavailable: {exc}") from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._run(lambda c: c.fetch(sql, *args))

    # -- matches ---------------------------------------------------------------

    async def insert_match(self, row: MatchRow) -> int:
        async def insert(c: asyncpg.Connection) -> int:
            try:
                return await c.fetchval(
                    f"INSERT INTO matches ({', '.join(MATCH_COLUMNS)}) VALUES"
                    f" ({', '.join(f'${i + 1}' for i in range(len(MATCH_COLUMNS)))})"
                    " RETURNING mkey",
                    *row[1:12],
                )
            except asyncpg.UniqueViolationError:
                raise MatchExistsError(row.match_id) from None

        return await self._run(insert)

    async def match(self, match_id: str | None = None, mkey: int | None = None) -> MatchRow | None:
        if match_id is not None:
            rows = await self._fetch(f"{_MATCH_SELECT} WHERE m.match_id = $1", match_id)
        else:
            rows = await self._fetch(f"{_MATCH_SELECT} WHERE m.mkey = $1", mkey)
        return _match_row(rows[0]) if rows else None

    async def matches(
        self,
        statuses: Sequence[str] | None,
        game: str | None,
        limit: int,
        offset: int,
        match_ids: Sequence[str] | None = None,
    ) -> list[MatchRow]:
        rows = await self._fetch(
            f"{_MATCH_SELECT} WHERE ($1::text[] IS NULL OR m.status = ANY($1::text[]))"
            " AND ($2::text IS NULL OR m.game = $2)"
            " AND ($5::text[] IS NULL OR m.match_id = ANY($5::text[]))"
            " ORDER BY m.created_at DESC, m.mkey DESC LIMIT $3 OFFSET $4",
            None if statuses is None else list(statuses),
            game,
            limit,
            offset,
            None if match_ids is None else list(match_ids),
        )
        return [_match_row(r) for r in rows]

    async def update_match(
        self, match_id: str, changes: dict[str, Any], allowed: Any
    ) -> MatchRow | None:
        async def update(c: asyncpg.Connection) -> MatchRow | None:
            async with c.transaction():
                # The group commits' lock: a status change lands between two groups.
                await c.execute(f"SELECT pg_advisory_xact_lock({POSITION_LOCK})")
                found = await c.fetchrow(
                    "SELECT status, epoch FROM matches WHERE match_id = $1", match_id
                )
                if found is None:
                    return None
                allowed(*found)
                if changes:
                    sets = ", ".join(f"{col} = ${i + 2}" for i, col in enumerate(changes))
                    await c.execute(
                        f"UPDATE matches SET {sets} WHERE match_id = $1",
                        match_id,
                        *changes.values(),
                    )
                row = await c.fetchrow(f"{_MATCH_SELECT} WHERE m.match_id = $1", match_id)
                return _match_row(row)

        return await self._run(update)

    # -- batches ---------------------------------------------------------------

    async def insert_group(self, rows: Sequence[NewBatch]) -> list[int | Conflict]:
        # One statement, so one round trip and one transaction (autocommit): the
        # checks, positions and inserts happen in the database under the lock.
        args = _group_args(rows)
        slot = await self._free_writers.get()
        try:
            writer = await self._writer_connection(slot)
            found = await writer.fetch(_INSERT_GROUP, *args)
        except _UNAVAILABLE as exc:
            if not _unavailable(exc):
                raise
            raise StoreUnavailableError(f"PostgreSQL at {self.url} is unavailable: {exc}") from exc
        finally:
            self._free_writers.put_nowait(slot)
        # found[0]: the head before the group; then the refused rows by index. The
        # accepted rows were numbered from that head in order: the same sums here.
        head = found[0][2]
        refused = {i: Conflict(reason, actual, status) for i, reason, actual, status in found[1:]}
        outcomes: list[int | Conflict] = []
        for i, row in enumerate(rows, 1):
            conflict = refused.get(i)
            if conflict is None:
                head += row.count
                outcomes.append(head)
            else:
                outcomes.append(conflict)
        self._advance(head)
        return outcomes

    async def _writer_connection(self, slot: int) -> asyncpg.Connection:
        writer = self._writers[slot]
        if writer is None or writer.is_closed():
            self._writers[slot] = None
            writer = await asyncpg.connect(
                self._dsn, timeout=self.timeout, command_timeout=self.timeout
            )
            try:
                # An empty group: the statement is prepared and the function compiled
                # in this session now, not in a group commit's time.
                await writer.fetch(_INSERT_GROUP, *_group_args([]))
            except BaseException:
                await writer.close()
                raise
            if self._closed:  # closed meanwhile: nobody would close it
                await writer.close()
                raise StoreClosedError("the event store is closed")
            self._writers[slot] = writer
        return writer

    async def find_batch(self, mkey: int, first_seq: int) -> BatchRow | None:
        rows = await self._fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = $1 AND first_seq = $2",
            mkey,
            first_seq,
        )
        return BatchRow(*rows[0]) if rows else None

    async def batches_by_seq(self, mkey: int, from_seq: int, to_seq: int) -> list[BatchRow]:
        rows = await self._fetch(
            f"SELECT {_BATCH_COLS} FROM batches WHERE mkey = $1 AND first_seq >= coalesce("
            " (SELECT max(first_seq) FROM batches WHERE mkey = $1 AND first_seq <= $2), 1)"
            " AND first_seq <= $3 ORDER BY first_seq",
            mkey,
            from_seq,
            to_seq,
        )
        return [BatchRow(*r) for r in rows]

    async def batches_by_tick(self, mkey: int, from_tick: int, to_tick: int) -> list[BatchRow]:
        # Ticks never go back: the batches ending in the range, plus the first one
        # ending after it (it may start inside). Both parts are index ranges.
        rows = await self._fetch(
            f"(SELECT {_BATCH_COLS} FROM batches WHERE mkey = $1"
            "  AND last_tick BETWEEN $2 AND $3)"
            f" UNION ALL (SELECT {_BATCH_COLS} FROM batches WHERE mkey = $1 AND last_tick > $3"
            "  ORDER BY last_tick, position LIMIT 1) ORDER BY first_seq",
            mkey,
            from_tick,
            to_tick,
        )
        return [BatchRow(*r) for r in rows if r[4] <= to_tick]

    async def scan(self, after: int, limit: int, mask: int | None) -> tuple[int, list[BatchRow]]:
        if mask is None:
            rows = await self._fetch(
                f"SELECT {_BATCH_COLS} FROM batches WHERE position > $1 ORDER BY position LIMIT $2",
                after,
                limit,
            )
            return (rows[-1][0] if rows else after), [BatchRow(*r) for r in rows]
        rows = await self._fetch(
            "WITH upto AS (SELECT max(position) AS through FROM"
            " (SELECT position FROM batches WHERE position > $1 ORDER BY position LIMIT $2) s)"
            f" SELECT upto.through, {', '.join(f'b.{c}' for c in _BATCH_COLS.split(', '))}"
            " FROM upto LEFT JOIN batches b ON b.position > $1 AND b.position <= upto.through"
            " AND (b.types IS NULL OR b.types & $3 <> 0) ORDER BY b.position",
            after,
            limit,
            mask,
        )
        through = rows[0][0]
        if through is None:
            return after, []
        return through, [BatchRow(*row[1:]) for row in rows if row[1] is not None]

    async def head(self) -> int:
        rows = await self._fetch("SELECT coalesce(max(position), 0) FROM batches")
        return rows[0][0]

    # -- wake-ups ----------------------------------------------------------------

    def _advance(self, head: int) -> None:
        if head > self._head:
            self._head = head
            committed, self._committed = self._committed, asyncio.Event()
            committed.set()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._advance(int(payload))

    async def _listen(self) -> bool:
        """A connection listening on the commit channel; False while it cannot be had."""
        if self._listener is not None and not self._listener.is_closed():
            return True
        self._listener = None
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self.timeout)
            await conn.add_listener(CHANNEL, self._notified)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("cannot listen for commits on %s: %s", self.url, exc)
            return False
        self._listener = conn
        return True

    async def wait_for_commit(self, after: int, timeout: float) -> None:
        if self._head > after or self._closed:
            return
        if not await self._listen():
            # No notifications while the server is away: look again after a while.
            await asyncio.sleep(min(timeout, 0.5))
            return
        if self._head > after:  # a commit was notified meanwhile
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._committed.wait(), timeout)

    # -- leases --------------------------------------------------------------------

    async def _lease_update(self, sql: str, *args: Any, fence: bool = True) -> list[Lease]:
        """One ``UPDATE matches ... FROM c`` (c: :data:`_NOW`) returning leases; with
        ``fence`` (it changes an epoch) under the position lock, so no group commit
        checks an epoch across it."""

        async def update(c: asyncpg.Connection) -> list[Any]:
            if not fence:
                return await c.fetch(f"{sql} {_LEASE_RETURNING}", *args)
            async with c.transaction():
                await c.execute(f"SELECT pg_advisory_xact_lock({POSITION_LOCK})")
                return await c.fetch(f"{sql} {_LEASE_RETURNING}", *args)

        return [Lease(*row) for row in await self._run(update)]

    async def acquire_lease(
        self, match_id: str, owner: str, ttl: float, epoch: int | None
    ) -> Lease | None:
        condition = (
            "(owner = '' OR lease_until IS NULL OR lease_until <= c.now)"
            if epoch is None
            else "epoch = $4"
        )
        rows = await self._lease_update(
            f"UPDATE matches SET owner = $2, epoch = epoch + 1, lease_until = c.now + $3"
            f" FROM {_NOW} WHERE match_id = $1 AND {_LIVE} AND {condition}",
            match_id,
            owner,
            ttl,
            *([] if epoch is None else [epoch]),
        )
        return rows[0] if rows else None

    async def renew_leases(self, owner: str, ttl: float) -> dict[str, int]:
        rows = await self._lease_update(
            f"UPDATE matches SET lease_until = c.now + $2 FROM {_NOW}"
            f" WHERE owner = $1 AND {_LEASED}",
            owner,
            ttl,
            fence=False,
        )
        return {lease.match_id: lease.epoch for lease in rows}

    async def release_lease(
        self, match_id: str, owner: str, epoch: int, to: str | None, ttl: float
    ) -> Lease | None:
        where = "WHERE match_id = $1 AND owner = $2 AND epoch = $3"
        if to is None:
            rows = await self._lease_update(
                f"UPDATE matches SET lease_until = c.now FROM {_NOW} {where}",
                match_id,
                owner,
                epoch,
                fence=False,
            )
        else:
            rows = await self._lease_update(
                "UPDATE matches SET owner = $4, epoch = epoch + 1, lease_until = c.now + $5"
                f" FROM {_NOW} {where}",
                match_id,
                owner,
                epoch,
                to,
                ttl,
            )
        return rows[0] if rows else None

    async def _leases(self, where: str, *args: Any) -> list[Lease]:
        rows = await self._fetch(
            "SELECT match_id, owner, epoch, coalesce(lease_until - c.now, 0)::float8"
            f" FROM matches, {_NOW} {where}",
            *args,
        )
        return [Lease(*row) for row in rows]

    async def lease(self, match_id: str) -> Lease | None:
        rows = await self._leases("WHERE match_id = $1", match_id)
        return rows[0] if rows else None

    async def lapsed_leases(self, limit: int) -> list[Lease]:
        return await self._leases(
            f"WHERE {_LEASED} AND lease_until <= c.now ORDER BY lease_until, mkey LIMIT $1",
            limit,
        )

    async def leases_of(self, owner: str) -> list[Lease]:
        return await self._leases(f"WHERE owner = $1 AND {_LEASED} ORDER BY match_id", owner)

    # -- nodes -------------------------------------------------------------------

    async def heartbeat(self, node: str, name: str, url: str, status: str, load: str) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO nodes (node, name, url, started_at, seen_at, status, load)"
                f" SELECT $1, $2, $3, c.now, c.now, $4, $5 FROM {_NOW}"
                " ON CONFLICT (node) DO UPDATE SET name = excluded.name, url = excluded.url,"
                " seen_at = excluded.seen_at, status = excluded.status, load = excluded.load",
                node,
                name,
                url,
                status,
                load,
            )
        )

    async def nodes(self, max_age: float | None) -> list[NodeRow]:
        rows = await self._fetch(
            "SELECT node, name, url, started_at, c.now - seen_at, status, load"
            f" FROM nodes, {_NOW} WHERE $1::float8 IS NULL OR c.now - seen_at <= $1"
            " ORDER BY name, node",
            max_age,
        )
        return [NodeRow(*row) for row in rows]

    async def forget_nodes(self, older_than: float) -> int:
        status = await self._run(
            lambda c: c.execute(
                f"DELETE FROM nodes USING {_NOW} WHERE c.now - seen_at > $1", older_than
            )
        )
        return int(status.split()[-1])

    # -- keyframes ---------------------------------------------------------------

    async def put_keyframe(
        self, mkey: int, tick: int, format_version: int, data: bytes, checksum: bytes
    ) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO keyframes (mkey, tick, format_version, data, checksum)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mkey, tick) DO UPDATE SET"
                " format_version = excluded.format_version, data = excluded.data,"
                " checksum = excluded.checksum",
                mkey,
                tick,
                format_version,
                data,
                checksum,
            )
        )

    async def keyframe(self, mkey: int, at_or_before: int) -> tuple[int, int, bytes, bytes] | None:
        rows = await self._fetch(
            "SELECT tick, format_version, data, checksum FROM keyframes"
            " WHERE mkey = $1 AND tick <= $2 ORDER BY tick DESC LIMIT 1",
            mkey,
            at_or_before,
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def keyframe_ticks(self, mkey: int) -> list[int]:
        rows = await self._fetch("SELECT tick FROM keyframes WHERE mkey = $1 ORDER BY tick", mkey)
        return [r[0] for r in rows]

    async def delete_keyframes(self, mkey: int, before_tick: int) -> int:
        status = await self._run(
            lambda c: c.execute(
                "DELETE FROM keyframes WHERE mkey = $1 AND tick < $2", mkey, before_tick
            )
        )
        return int(status.split()[-1])


def _match_row(row: Sequence[Any]) -> MatchRow:
    *columns, version, last_tick, owner, epoch = row
    return MatchRow(*columns, version or 0, -1 if last_tick is None else last_tick, owner, epoch)
