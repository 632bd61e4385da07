"""The leaderboard projection: the store's global stream folded into boards, persisted.

The read model lives in its own SQLite file (by default ``<event db>.boards.sqlite``),
never in the event store. Each step reads a chunk of events after the checkpoint,
folds it in memory (:class:`~replay.leaderboards.state.LeaderboardState`) and
writes the changed entries, the running matches' tallies and the new
checkpoint in ONE transaction. Invariant: the stored checkpoint is exactly the
position the stored boards reflect, so after a crash the projection resumes
from it with no event counted twice and none missed.

The loop is the store's subscription loop (``scan`` after the checkpoint for
the event types some board reads, then ``wait_for_commit``) taken a chunk at a
time, so one transaction covers a whole chunk instead of one event. The
checkpoint moves to the scanned position: batches without a relevant event
(movement, aim, shots: nearly all of them) are passed over undecoded. The
read model uses ``synchronous=NORMAL``: a power cut may lose its last commits,
which only moves the checkpoint back with the boards; they are replayed.

Queries read the in-memory boards; they never wait for the disk, and a
rebuild builds aside and swaps (:meth:`LeaderboardProjection.rebuild`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from replay.errors import UnknownMatchError
from replay.leaderboards.definitions import BoardDefinition, validate_definitions
from replay.leaderboards.errors import LeaderboardError, ReadModelBusyError, UnknownBoardError
from replay.leaderboards.metrics import GameMetrics, MatchTally
from replay.leaderboards.state import Changes, LeaderboardState
from replay.store import store_file
from replay.store.base import READ_ONLY_STATUSES, EventBatch, EventStore, wait_event

__all__ = [
    "LeaderboardProjection",
    "boards_path_for",
    "rebuild_request_path",
    "write_json_atomically",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS boards (board TEXT PRIMARY KEY, definition TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    board TEXT NOT NULL, period TEXT NOT NULL, owner TEXT NOT NULL,
    value INTEGER NOT NULL, subscore INTEGER NOT NULL, reached INTEGER NOT NULL,
    PRIMARY KEY (board, period, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tallies (match_id TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
"""

Progress = Callable[[int], object]
"""Called with the number of events just folded (e.g. ``tqdm.update``)."""


def boards_path_for(store_url: str) -> str:
    """Beside an SQLite store file; under data/ named after the database otherwise."""
    path = store_file(store_url)
    if path is None:  # postgresql://host/db, memory:
        path = os.path.join("data", store_url.rpartition("/")[2].partition("?")[0] or "store")
    return path + ".boards.sqlite"


def rebuild_request_path(boards_path: str) -> str:
    """Where another process asks the running projection for a rebuild (JSON:
    ``{"boards": [...] | null, "state": "requested" | "running" | "failed", "done",
    "total", "error"}``); the projection removes it when the rebuild is swapped in."""
    return boards_path + ".rebuild-request"


class LeaderboardProjection:
    """Boards kept current from ``store``, persisted in ``path``."""

    def __init__(
        self,
        store: EventStore,
        path: str,
        definitions: Iterable[BoardDefinition],
        metrics: Mapping[str, GameMetrics],
        *,
        read_limit: int = 2_000,
    ) -> None:
        self.store = store
        self.path = path
        self.definitions = validate_definitions(definitions, metrics)
        self.read_limit = read_limit
        """Stored batches per chunk (and per transaction; an arena tick is one batch of
        a few events): bounds memory and commit latency."""
        self.state = LeaderboardState(self.definitions, metrics)
        self._db: sqlite3.Connection | None = None
        # Held while folding and writing, so a rebuild's swap sees no half-applied chunk.
        self._lock = asyncio.Lock()
        self._advanced = asyncio.Event()
        self._stale: list[str] = []
        self._lock_fd: int | None = None
        self._rebuild_task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[None]] = set()
        """Read-model writes running in a thread: :meth:`close` waits for them, since a
        cancelled caller does not stop the thread (closing the database under it crashes)."""
        self._retire_checked = 0
        """The position at the previous :meth:`retire_finished`."""

    # -- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Load the stored boards and checkpoint; rebuild boards whose definition changed.

        Raises ReadModelBusyError when another projection has the file open: one
        writer per read model (an exclusive ``flock`` on ``<path>.lock``, released by
        the kernel even when the holder is killed)."""
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReadModelBusyError(
                f"the read model {self.path!r} is open in another process (a running server?)"
            ) from None
        self._lock_fd = fd
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        await asyncio.to_thread(self._load)
        if self._stale:
            await self.rebuild(self._stale)
        self._stale = []
        await self.retire_finished()  # matches interrupted while no projection ran

    async def close(self) -> None:
        if self._rebuild_task is not None:
            self._rebuild_task.cancel()
            await asyncio.gather(self._rebuild_task, return_exceptions=True)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._db is not None:
            async with self._lock:
                self._db.close()
                self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def __aenter__(self) -> LeaderboardProjection:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _load(self) -> None:
        db = self._conn()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        stored = dict(db.execute("SELECT board, definition FROM boards"))
        wanted = {d.id: json.dumps(d.as_dict(), sort_keys=True) for d in self.definitions}
        self._stale = [b for b, spec in wanted.items() if stored.get(b) != spec]
        # A stale board's definition is stored only with its rebuilt rows (in _swap), so a
        # crash before that leaves it stale and it is rebuilt again on the next open.
        with _transaction(db):
            for b in set(stored) - set(wanted) | set(self._stale):
                db.execute("DELETE FROM entries WHERE board = ?", (b,))
                db.execute("DELETE FROM boards WHERE board = ?", (b,))
        row = db.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()
        self.state.position = row[0] if row else 0
        self.state.load_entries(db.execute("SELECT * FROM entries"))
        self.state.load_tallies(dict(db.execute("SELECT match_id, data FROM tallies")))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the projection is not open")
        return self._db

    # -- position ------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The global position every board reflects."""
        return self.state.position

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until the boards reflect ``position`` (read-your-writes); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.state.position < position:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await wait_event(self._advanced, left)
        return True

    def _signal(self) -> None:
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    # -- folding -------------------------------------------------------------------

    async def step(self) -> int:
        """Fold and persist the next chunk; returns how many events it had (0: caught up)."""
        async with self._lock:
            start = self.state.position
            scanned = await self.store.scan(start, self.read_limit, self.state.codes)
            await self._fold(start, *scanned)
        return self.state.position - start

    async def _fold(self, start: int, batches: list[EventBatch], through: int) -> None:
        """Under the lock: fold a chunk scanned from ``start`` and persist it. Waiters
        are woken as soon as the boards in memory (what queries read) reflect it, not
        after the write: under a busy event loop every await costs a loop turn."""
        if through == start:
            return
        await _add_matches(self.store, self.state, batches)
        changes = self.state.apply(batches, through)
        self._signal()
        await self._persist(self._write, changes)

    async def catch_up(self, progress: Progress | None = None) -> int:
        """Fold everything stored now; returns how many events. Reads ahead: the next
        chunk is read from the store (in its thread) while this one folds."""
        total = 0
        async with _ScanAhead(self.store, self.read_limit, self.state.codes) as scans:
            while True:
                start = self.state.position
                batches, through = await scans.scan(start)
                if through == start:
                    return total
                async with self._lock:
                    if self.state.position != start:
                        continue  # a concurrent step moved on: this chunk is stale
                    await self._fold(start, batches, through)
                total += through - start
                if progress is not None:
                    progress(through - start)

    async def retire_finished(self) -> int:
        """Drop the tallies of matches that are over without having ended in the stream.

        A match the server marks ``interrupted`` (shutdown, a failed append) never
        appends ``match_ended``, so its tally would stay forever. The store's record
        says it is read-only: once every event of it is folded, nothing of it can come
        any more, and its tally is deleted (boards and checkpoint unchanged). Called
        at :meth:`open`, after a full rebuild and every ``retire_interval`` of
        :meth:`run`; one record lookup per match that had no event folded since the
        previous call (a live match keeps producing them). Returns how many matches
        were dropped."""
        since, self._retire_checked = self._retire_checked, self.state.position
        seen = self.state.last_seen
        over: list[str] = []
        for match_id in [*self.state.tallies, *self.state.ignored]:
            if seen.get(match_id, 0) > since:
                continue  # events came since the last check: it runs

            try:
                record = await self.store.get_match(match_id)
                if record.status not in READ_ONLY_STATUSES:
                    continue
                last = await _last_position(self.store, match_id, record.version)
            except UnknownMatchError:
                continue  # a store that forgets matches: nothing to decide from
            if last <= self.state.position:
                over.append(match_id)
        if not over:
            return 0
        async with self._lock:
            changes = self.state.retire(over)
            if changes.ended:
                await self._persist(self._write, changes)
        return len(over)

    async def run(
        self,
        poll_interval: float = 1.0,
        min_interval: float = 0.025,
        retire_interval: float = 30.0,
    ) -> None:
        """Follow the store forever (cancel to stop; a cancelled step writes nothing).

        ``min_interval`` paces the steps while events keep coming: a live server
        commits every tick of every match, and one read-model transaction per commit
        would cost the server a third of its CPU. Waiting 25 ms gathers the commits
        of that time into one step, at the price of at most 25 ms of extra lag.

        Also serves rebuild requests from other processes (``matchreplay leaderboards
        rebuild`` while a server runs): one ``stat`` per chunk or poll, and every
        ``retire_interval`` seconds drops the tallies of interrupted matches
        (:meth:`retire_finished`)."""
        loop = asyncio.get_running_loop()
        next_retire = loop.time() + retire_interval
        while True:
            self._check_rebuild_request()
            started = loop.time()
            if started >= next_retire:
                await self.retire_finished()
                next_retire = started + retire_interval
            if await self.step():
                await asyncio.sleep(started + min_interval - loop.time())
            else:
                await self.store.wait_for_commit(self.state.position, poll_interval)

    def _check_rebuild_request(self) -> None:
        path = rebuild_request_path(self.path)
        if self._rebuild_task is not None or not os.path.exists(path):
            return
        try:
            with open(path) as f:
                request = json.load(f)
        except (OSError, ValueError):
            return  # being written (it is replaced atomically): seen on the next check
        if request.get("state") == "requested":
            boards = request.get("boards") or None
            self._rebuild_task = asyncio.create_task(self._serve_rebuild(path, boards))

    async def _serve_rebuild(self, path: str, boards: list[str] | None) -> None:
        status = {"boards": boards, "state": "running", "done": 0, "total": self.position}
        last_write = 0.0

        def progress(n: int) -> None:
            nonlocal last_write
            status["done"] += n
            if time.monotonic() - last_write > 0.2:
                last_write = time.monotonic()
                write_json_atomically(path, status)

        try:
            write_json_atomically(path, status)
            await self.rebuild(boards, progress=progress)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        except (LeaderboardError, LookupError, TypeError) as exc:
            code = getattr(exc, "code", "bad_request")
            write_json_atomically(path, status | {"state": "failed", "error": f"{code}: {exc}"})
        finally:
            self._rebuild_task = None

    async def _persist(self, write_fn: Callable[..., None], *args: Any) -> None:
        """Run a read-model write in a thread; it completes even if the caller is cancelled."""
        write = asyncio.ensure_future(asyncio.to_thread(write_fn, *args))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        await asyncio.shield(write)

    def _write(self, changes: Changes) -> None:
        db = self._conn()
        with _transaction(db):
            db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", changes.entries
            )
            db.executemany("INSERT OR REPLACE INTO tallies VALUES (?, ?)", changes.tallies.items())
            db.executemany("DELETE FROM tallies WHERE match_id = ?", [(m,) for m in changes.ended])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('position', ?)", (changes.position,))

    # -- rebuild -------------------------------------------------------------------

    async def rebuild(
        self, board_ids: Sequence[str] | None = None, progress: Progress | None = None
    ) -> int:
        """Rebuild boards (default: all, with the match tallies) from position 0.

        Built aside in a fresh state while queries keep reading the current boards;
        the aside copy catches up to the live position, then, under the lock (no
        chunk is folded meanwhile), the boards are swapped in memory and their rows
        replaced in one transaction. Returns the number of events read.
        """
        ids = list(board_ids) if board_ids else list(self.state.definitions)
        for b in ids:
            if b not in self.state.definitions:
                raise UnknownBoardError(b, sorted(self.state.definitions))
        full = set(ids) == set(self.state.definitions)
        aside = LeaderboardState((self.state.definitions[b] for b in ids), self.state.metrics)
        read = 0
        while True:
            target = self.state.position
            async with _ScanAhead(self.store, self.read_limit, aside.codes) as scans:
                while aside.position < target:
                    start = aside.position
                    batches, through = await scans.scan(start, ahead=target)
                    if through == start:
                        break
                    batches = _until(batches, target)
                    await _add_matches(self.store, aside, batches)
                    aside.apply(batches, min(through, target))
                    n = aside.position - start
                    read += n
                    if progress is not None:
                        progress(n)
            async with self._lock:
                if aside.position < self.state.position:
                    continue  # the live projection moved on meanwhile: catch up again
                aside.position = self.state.position
                for b in ids:
                    self.state.boards[b] = aside.boards[b]
                if full:
                    self.state.tallies = aside.tallies
                await self._persist(self._swap, ids, aside, full)
            if full:
                await self.retire_finished()  # the rebuilt tallies of interrupted matches
            return read

    def _swap(self, ids: list[str], aside: LeaderboardState, full: bool) -> None:
        db = self._conn()
        specs = [(b, json.dumps(self.state.definitions[b].as_dict(), sort_keys=True)) for b in ids]
        with _transaction(db):
            db.executemany("INSERT OR REPLACE INTO boards VALUES (?, ?)", specs)
            db.executemany("DELETE FROM entries WHERE board = ?", [(b,) for b in ids])
            db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)", aside.rows(ids))
            if full:
                db.execute("DELETE FROM tallies")
                db.executemany(
                    "INSERT INTO tallies VALUES (?, ?)",
                    [(m, t.encode()) for m, t in aside.tallies.items()],
                )


class _ScanAhead:
    """``store.scan`` chunk after chunk, reading the next chunk while the caller folds
    this one: the store reads in its own thread, so the read overlaps the fold."""

    def __init__(self, store: EventStore, limit: int, codes: frozenset[int]) -> None:
        self.store = store
        self.limit = limit
        self.codes = codes
        self._next: tuple[int, asyncio.Task[tuple[list[EventBatch], int]]] | None = None

    async def scan(self, after: int, ahead: int | None = None) -> tuple[list[EventBatch], int]:
        """The chunk after ``after``; reads the following one unless the chunk reaches
        ``ahead`` (a position not worth reading past) or the end."""
        if self._next is not None and self._next[0] == after:
            task = self._next[1]
        else:
            await self._drop()
            task = asyncio.ensure_future(self.store.scan(after, self.limit, self.codes))
        self._next = None
        batches, through = await task
        if through != after and (ahead is None or through < ahead):
            self._next = (
                through,
                asyncio.ensure_future(self.store.scan(through, self.limit, self.codes)),
            )
        return batches, through

    async def _drop(self) -> None:
        if self._next is not None:
            task = self._next[1]
            self._next = None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> _ScanAhead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._drop()


def write_json_atomically(path: str, value: object) -> None:
    """Replace ``path`` atomically, so a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def _until(batches: list[EventBatch], target: int) -> list[EventBatch]:
    """The events of ``batches`` with position <= ``target``."""
    out = [b for b in batches if b.first_position <= target]
    if out and out[-1].last_position > target:
        b = out[-1]
        out[-1] = EventBatch(
            b.match_id,
            b.first_seq,
            b.first_position,
            b.first_id,
            b.events[: target - b.first_position + 1],
        )
    return out


async def _last_position(store: EventStore, match_id: str, version: int) -> int:
    """The global position of the match's last event (0: it has none)."""
    if version <= 0:
        return 0
    batches = await store.read_batches(match_id, from_seq=version, to_seq=version)
    b = batches[-1]
    return b.first_position + version - b.first_seq


async def _add_matches(store: EventStore, state: LeaderboardState, batches: list[EventBatch]):
    """Register the matches first seen in ``batches`` (one record lookup per match)."""
    for match_id in {b.match_id for b in batches if state.needs_match(b.match_id)}:
        try:
            r = await store.get_match(match_id)
        except UnknownMatchError:
            state.add_match(match_id, None)
            continue
        state.add_match(match_id, MatchTally(r.game, r.created_at, r.tick_rate))


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
