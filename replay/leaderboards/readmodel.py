"""The leaderboards read model on disk: one SQLite file beside the event store.

It holds the board entries, the running matches' tallies, the matches whose
batches are held back (visibility.py), the damaged batches passed over, whether a
rewind left the boards to be rebuilt (``meta.refold``), and the checkpoint
(``meta.position``), every change of them written in ONE transaction:
the stored checkpoint is exactly the position the stored boards reflect. It uses
``synchronous=NORMAL``: a power cut may lose the last commits, which only moves
the checkpoint back with the boards; they are folded again.

Writes run in a worker thread and always finish, even when the task that asked
for one is cancelled: :meth:`ReadModel.close` waits for them before closing the
connection (closing it under its writer thread crashed the process).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.state import Changes, DamagedBatch
from replay.store import store_file

__all__ = ["FORMAT", "ReadModel", "Stored", "boards_path_for"]

FORMAT = 3
"""Layout version of the stored data; a read model of another version is rebuilt from
the log on open. 3: entries fed by private matches are marked (``marked``), and a tally
keeps its match's rewinds; 2: a tally's data is the game's own (1: a fixed layout of
slots and stats)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS boards (board TEXT PRIMARY KEY, definition TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    board TEXT NOT NULL, period TEXT NOT NULL, owner TEXT NOT NULL,
    value INTEGER NOT NULL, subscore INTEGER NOT NULL, reached INTEGER NOT NULL,
    PRIMARY KEY (board, period, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tallies (match_id TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held (match_id TEXT PRIMARY KEY, from_position INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS damaged (position INTEGER PRIMARY KEY, error TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS marked (
    board TEXT NOT NULL, period TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (board, period, owner)
) WITHOUT ROWID;
"""

Row = tuple[str, str, str, int, int, int]
"""(board, period, owner, value, subscore, reached)."""


def boards_path_for(store_url: str) -> str:
    """The default read model of an event store: beside an SQLite store file
    (``<event db>.boards.sqlite``); under data/, named after the database, otherwise."""
    path = store_file(store_url)
    if path is None:  # postgresql://host/db, memory:
        path = os.path.join("data", store_url.rpartition("/")[2].partition("?")[0] or "store")
    return path + ".boards.sqlite"


def spec_of(d: BoardDefinition) -> str:
    return json.dumps(d.as_dict(), sort_keys=True)


@dataclass
class Stored:
    """What :meth:`ReadModel.open` found."""

    position: int
    stale: list[str]
    """Boards whose stored rows are gone (a changed definition, a new board, another
    format): to rebuild."""
    entries: list[Row]
    tallies: dict[str, bytes]
    held: dict[str, int]
    """Match -> position of its first held batch."""
    damaged: list[DamagedBatch]
    refold: bool = False
    """A rewind abandoned ticks the stored boards count: they must be rebuilt."""
    marked: list[tuple[str, str, str]] = field(default_factory=list)
    """(board, period, owner) fed by a private match."""


class ReadModel:
    def __init__(self, path: str, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        """Only read: no lock needed, nothing written (:meth:`persist` does nothing), so
        it works beside the process that writes the file (WAL readers never block it)."""
        self._db: sqlite3.Connection | None = None
        self._writes: set[asyncio.Future[None]] = set()

    def open(self, definitions: Iterable[BoardDefinition]) -> Stored:
        """Open (creating) the file and load it; blocking (run it in a thread). Rows of
        boards no longer defined, or defined differently, are deleted (read-only: they
        are only left out)."""
        if self.read_only:
            return self._open_read_only(definitions)
        db = self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT key, value FROM meta"))
        # No format row but a position: format 1, from before the format was stored.
        outdated = meta.get("format", FORMAT if "position" not in meta else 1) != FORMAT
        stored = {} if outdated else dict(db.execute("SELECT board, definition FROM boards"))
        wanted = {d.id: spec_of(d) for d in definitions}
        stale = [b for b, spec in wanted.items() if stored.get(b) != spec]
        # A stale board's definition is stored only with its rebuilt rows (swap), so a
        # crash before that leaves it stale and it is rebuilt again on the next open.
        with _transaction(db):
            if outdated:  # another layout: everything is folded again from position 0
                for table in ("entries", "boards", "tallies", "held", "damaged", "marked", "meta"):
                    db.execute(f"DELETE FROM {table}")
            for b in set(stored) - set(wanted) | set(stale):
                db.execute("DELETE FROM entries WHERE board = ?", (b,))
                db.execute("DELETE FROM marked WHERE board = ?", (b,))
                db.execute("DELETE FROM boards WHERE board = ?", (b,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
        row = db.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()
        return Stored(
            row[0] if row else 0,
            stale,
            db.execute("SELECT * FROM entries").fetchall(),
            dict(db.execute("SELECT match_id, data FROM tallies")),
            dict(db.execute("SELECT match_id, from_position FROM held")),
            [DamagedBatch(*r) for r in db.execute("SELECT position, error FROM damaged")],
            "refold" in meta,
            db.execute("SELECT * FROM marked").fetchall(),
        )

    def _open_read_only(self, definitions: Iterable[BoardDefinition]) -> Stored:
        wanted = {d.id: spec_of(d) for d in definitions}
        if not os.path.exists(self.path):  # nothing folded yet: every board from the log
            return Stored(0, list(wanted), [], {}, {}, [])
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        db = self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        # One read transaction: entries, tallies, holds and checkpoint of one commit.
        db.execute("BEGIN")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        meta = dict(db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        if meta.get("format", FORMAT if "position" not in meta else 1) != FORMAT or not (
            {"boards", "entries", "tallies", "held", "damaged", "marked"} <= tables
        ):
            db.rollback()
            return Stored(0, list(wanted), [], {}, {}, [])
        stored = dict(db.execute("SELECT board, definition FROM boards"))
        fresh = [b for b, spec in wanted.items() if stored.get(b) == spec]
        marks = ",".join("?" * len(fresh))
        out = Stored(
            meta.get("position", 0),
            [b for b in wanted if b not in fresh],
            db.execute(f"SELECT * FROM entries WHERE board IN ({marks})", fresh).fetchall(),
            dict(db.execute("SELECT match_id, data FROM tallies")),
            dict(db.execute("SELECT match_id, from_position FROM held")),
            [DamagedBatch(*r) for r in db.execute("SELECT position, error FROM damaged")],
            "refold" in meta,
            db.execute(f"SELECT * FROM marked WHERE board IN ({marks})", fresh).fetchall(),
        )
        db.rollback()
        return out

    async def persist(self, write: Callable[..., None], *args: Any) -> None:
        """Run a write (a method of this class) in a thread; it completes even if the
        caller is cancelled. Read-only: nothing is written (what was folded stays in
        memory)."""
        if self.read_only:
            return
        task = asyncio.ensure_future(asyncio.to_thread(write, *args))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        await asyncio.shield(task)

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the read model is not open")
        return self._db

    # -- writes (blocking: through persist) -----------------------------------------

    def write(self, changes: Changes) -> None:
        """A folded chunk: changed entries, tallies, holds, damage and the checkpoint."""
        db = self._conn()
        with _transaction(db):
            db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", changes.entries
            )
            db.executemany("INSERT OR REPLACE INTO tallies VALUES (?, ?)", changes.tallies.items())
            db.executemany("DELETE FROM tallies WHERE match_id = ?", [(m,) for m in changes.ended])
            if changes.held is not None:
                _replace_holds(db, changes.held)
            db.executemany("INSERT OR REPLACE INTO damaged VALUES (?, ?)", changes.damaged)
            db.executemany("INSERT OR IGNORE INTO marked VALUES (?, ?, ?)", changes.marked)
            if changes.refold:  # until a full rebuild swaps the boards in (swap)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('refold', 1)")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('position', ?)", (changes.position,))

    def swap(
        self,
        definitions: Iterable[BoardDefinition],
        rows: list[Row],
        tallies: Mapping[str, bytes] | None,
        held: Mapping[str, int] | None,
        marked: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    ) -> None:
        """Replace the rows (and marks) of rebuilt boards (and with ``tallies``, every
        tally)."""
        db = self._conn()
        specs = [(d.id, spec_of(d)) for d in definitions]
        with _transaction(db):
            db.executemany("INSERT OR REPLACE INTO boards VALUES (?, ?)", specs)
            db.executemany("DELETE FROM entries WHERE board = ?", [(b,) for b, _ in specs])
            db.executemany("DELETE FROM marked WHERE board = ?", [(b,) for b, _ in specs])
            db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO marked VALUES (?, ?, ?)", marked)
            if tallies is not None:  # a full rebuild: every board, every tally
                db.execute("DELETE FROM meta WHERE key = 'refold'")
                db.execute("DELETE FROM tallies")
                db.executemany("INSERT INTO tallies VALUES (?, ?)", tallies.items())
            if held is not None:
                _replace_holds(db, held)


def _replace_holds(db: sqlite3.Connection, held: Mapping[str, int]) -> None:
    db.execute("DELETE FROM held")
    db.executemany("INSERT INTO held VALUES (?, ?)", held.items())


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
