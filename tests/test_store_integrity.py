"""Damaged stored batches are found on read (issue 18, "silent wrong data"): a checksum
on every batch row, seq continuity per match and position continuity in the log. The
damage is done with the backend's own SQL on a real SQLite file and a real PostgreSQL
database; the error is ``corrupt_event`` naming the match and seq range, and other
matches read on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest
from store_contract import record, tick_batch

from replay.errors import CorruptEventError
from replay.store import open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("pg_url")


async def damage(url: str, sql: str, *args: object) -> None:
    """Run ``sql`` (``?`` placeholders) on the store's database behind its back."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
            raw.execute(sql, args)
        return
    n = 0
    while "?" in sql:
        n += 1
        sql = sql.replace("?", f"${n}", 1)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def blob_of(url: str, match_id: str, first_seq: int) -> bytes:
    sql = f"SELECT blob FROM batches WHERE first_seq = {first_seq} AND mkey = {MKEY}"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
            return raw.execute(sql, (match_id,)).fetchone()[0]
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql.replace("?", "$1"), match_id)
    finally:
        await conn.close()


async def two_matches(url: str) -> tuple[str, str]:
    async with open_store(url) as store:
        good, bad = await store.create_match(record()), await store.create_match(record())
        for m in (good, bad):
            for b in range(3):
                await store.append(m.match_id, tick_batch(b, 3), b * 3)
    return good.match_id, bad.match_id


MKEY = "(SELECT mkey FROM matches WHERE match_id = ?)"

DAMAGE = {
    # A byte of the blob changed: decodes fine, to a wrong value, without the checksum.
    "flipped byte": (
        f"UPDATE batches SET blob = ? WHERE first_seq = 4 AND mkey = {MKEY}",
        "seq 4..6",
    ),
    "edited base tick": (
        f"UPDATE batches SET base_tick = base_tick + 5 WHERE first_seq = 4 AND mkey = {MKEY}",
        "seq 4..6",
    ),
    "edited first seq": (
        f"UPDATE batches SET first_seq = 5 WHERE first_seq = 4 AND mkey = {MKEY}",
        "seq 4..4",
    ),
    "deleted batch": (f"DELETE FROM batches WHERE first_seq = 4 AND mkey = {MKEY}", "seq 4..6"),
}


@pytest.mark.parametrize("kind", DAMAGE)
async def test_damaged_batches_are_typed_errors_naming_match_and_seqs(url: str, kind: str) -> None:
    good, bad = await two_matches(url)
    sql, where = DAMAGE[kind]
    if kind == "flipped byte":
        blob = await blob_of(url, bad, 4)
        flipped = blob[:7] + bytes([blob[7] ^ 0x04]) + blob[8:]
        await damage(url, sql, flipped, bad)
    else:
        await damage(url, sql, bad)
    async with open_store(url) as store:
        with pytest.raises(CorruptEventError) as err:
            await store.read(bad)
        assert err.value.code == "corrupt_event"
        assert f"match {bad!r} {where}" in str(err.value), str(err.value)
        assert len(await store.read(bad, 1, 3)) == 3  # the batches before it still read
        assert len(await store.read(good)) == 9  # and other matches are untouched
        if kind != "edited first seq":  # the log itself then still has every position
            with pytest.raises(CorruptEventError, match=bad):
                await store.read_all(0)
