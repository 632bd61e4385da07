"""What keeps the leaderboards' watch for rewinds cheap: a batch holding a ``rewound`` or
``forked`` event has a type bit of its own (``recorder.NOTABLE_BIT``), so the scan for
them reads those batches only, not every batch with another system event (the input
audit is in many). Stores from before it (schema version 1) still find every rewind:
read as they are (read-only), and migrated when opened for writing, on real SQLite
files and a real PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from games import open_test_store
from test_leaderboard_rewind import start

from replay.events import SYSTEM_INPUTS, SYSTEM_REWOUND
from replay.store import open_store
from replay.store.postgres import SCHEMA_VERSION as PG_SCHEMA
from replay.store.recorder import NOTABLE_BIT, TYPE_BITS, scan_mask
from replay.store.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA
from replay.store.sqlite import SQLiteEventStore

REWOUND = frozenset({SYSTEM_REWOUND})


async def rewound_match(store) -> int:
    """A bot match rewound twice; how many of its batches hold a system event."""
    d = await start(store, "m")
    await d.play(200)
    await d.rewind(100)
    await d.play(300)
    await d.rewind(250)
    await d.play(320)
    audited = 0
    for b in await store.read_batches("m"):
        audited += any(e is not None and e[0] >= SYSTEM_INPUTS for e in b.events)
    return audited


async def rewinds_found(store) -> list[int]:
    batches, _ = await store.scan(0, 100_000, REWOUND)
    return [e[2] for b in batches for e in b.events if e is not None]


async def test_the_scan_for_rewinds_reads_their_batches_only(tmp_path: Path) -> None:
    async with open_test_store(tmp_path / "s.db") as store:
        audited = await rewound_match(store)
        assert audited > 10  # the input audit: most of them
        _, rows = await store._recorder().scan(0, 100_000, scan_mask(REWOUND))
        assert len(rows) == 2
        assert await rewinds_found(store) == [201, 301]


async def test_a_version_2_sqlite_store_finds_its_rewinds_read_only_and_migrated(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    async with open_test_store(db) as store:
        await rewound_match(store)
    # As a version 2 store (leases, no notable bit) wrote them: no bit 61.
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE batches SET types = types & ?", (~(1 << NOTABLE_BIT),))
        raw.execute("PRAGMA user_version=2")
    async with SQLiteEventStore(str(db), read_only=True) as store:
        assert await rewinds_found(store) == [201, 301]
    async with SQLiteEventStore(str(db)) as store:  # opened for writing: migrated
        assert await rewinds_found(store) == [201, 301]
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SQLITE_SCHEMA,)
        missing = raw.execute(
            "SELECT count(*) FROM batches WHERE types & ? AND NOT types & ?",
            (1 << TYPE_BITS, 1 << NOTABLE_BIT),
        ).fetchone()
        assert missing == (0,)


async def test_a_version_2_postgresql_store_is_migrated(pg_url: str) -> None:
    import asyncpg
    from games import GAMES

    async with open_store(pg_url, catalogs=GAMES.catalogs()) as store:
        await rewound_match(store)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("UPDATE batches SET types = types & $1", ~(1 << NOTABLE_BIT))
        await conn.execute("DELETE FROM matchreplay_schema")
        await conn.execute("INSERT INTO matchreplay_schema VALUES (2)")
    finally:
        await conn.close()
    async with open_store(pg_url, catalogs=GAMES.catalogs()) as store:
        assert await rewinds_found(store) == [201, 301]
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT max(version) FROM matchreplay_schema") == PG_SCHEMA
    finally:
        await conn.close()
