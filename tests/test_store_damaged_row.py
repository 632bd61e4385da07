"""One damaged match row stays contained (a real SQLite file, a real server over HTTP):
its match answers a coded error, listings leave it out, /healthz says degraded with
the reason, /metrics counts it, and every other match keeps working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from server_helpers import call, running_app, token
from store_contract import record

from replay.errors import CorruptMatchError
from replay.store import open_store


@pytest.mark.parametrize(
    ("column", "garbage"),
    [("settings", "{not json"), ("players", '{"a": 1}'), ("options", "[1, 2]")],
)
async def test_one_damaged_match_row_is_left_out_and_reported(
    tmp_path: Path, column: str, garbage: str
) -> None:
    admin = token("root", "admin")
    async with running_app(tmp_path) as app:
        ids = []
        for _ in range(3):
            status, created = await call(app, "POST", "/api/matches", admin)
            assert status == 201, created
            ids.append(created["match_id"])
    bad, good = ids[1], [ids[0], ids[2]]
    with sqlite3.connect(tmp_path / "server.db") as db:
        db.execute(f"UPDATE matches SET {column} = ? WHERE match_id = ?", (garbage, bad))

    async with running_app(tmp_path) as app:
        status, health = await call(app, "GET", "/healthz")
        assert status == 200
        status, listed = await call(app, "GET", "/api/matches", admin)
        assert status == 200, listed
        assert sorted(m["match_id"] for m in listed) == sorted(good)
        status, viewer = await call(app, "GET", "/api/viewer/matches", admin)
        assert status == 200, viewer
        for match_id in good:
            status, one = await call(app, "GET", f"/api/matches/{match_id}", admin)
            assert status == 200 and one["match_id"] == match_id
        status, one = await call(app, "GET", f"/api/matches/{bad}", admin)
        assert status == 400 and one["error"]["code"] == "corrupt_match", one
        assert bad in one["error"]["message"]
        # Reported: /healthz degraded with the reason, /metrics counts it.
        status, health = await call(app, "GET", "/healthz")
        assert status == 200 and health["status"] == "degraded", health
        assert bad in health["degraded"]["matches"] and column in health["degraded"]["matches"]
        status, metrics = await call(app, "GET", "/metrics")
        assert "matchreplay_store_damaged_matches 1.0" in metrics
        # New matches still work.
        status, created = await call(app, "POST", "/api/matches", admin)
        assert status == 201, created


async def test_the_store_names_the_damaged_match_and_copy_refuses_to_skip_it(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "s.db")
    async with open_store(db) as store:
        a, b = (await store.create_match(record())), (await store.create_match(record()))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE matches SET settings = 'garbage' WHERE match_id = ?", (a.match_id,))
    async with open_store(db, read_only=True) as store:
        assert [m.match_id for m in await store.list_matches()] == [b.match_id]
        assert list(store.damaged) == [a.match_id] and store.damaged_skipped == 1
        with pytest.raises(CorruptMatchError, match=a.match_id):
            await store.get_match(a.match_id)
        # Many records at once (the leaderboard projection's lookups): the damaged one is
        # left out and reported, like an unknown one; the others come.
        skipped = store.damaged_skipped
        found = await store.get_matches([a.match_id, b.match_id, "unknown"])
        assert list(found) == [b.match_id] and found[b.match_id].settings == b.settings
        assert store.damaged_skipped == skipped + 1
