"""A damaged page deep in a real SQLite store, one ``serve`` does not read at start
(issue 18): the server starts, and its leaderboard projection, which meets the page
(``database disk image is malformed``), passes over the unreadable positions instead
of stopping: reported in the log, /healthz (degraded, with the reason) and /metrics,
and every other batch folded and served."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

from games import open_test_store
from leaderboard_fixtures import record_matches
from server_helpers import call, running_app, token

import replay.games.arena.events as ev


def damage_a_middle_page(path: Path) -> int:
    """Overwrite the header of a leaf page of the ``batches`` table in the middle of the
    file (SQLite then calls the image malformed when a read reaches it); its number."""
    with sqlite3.connect(path) as db:
        pages = [
            n
            for (n,) in db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'batches' AND pagetype = 'leaf'"
                " ORDER BY pageno"
            )
        ]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    page = pages[len(pages) // 2]
    with path.open("r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xff" * 64)
    return page


async def kills_outside(path: Path, match_ids: list[str], lo: int, hi: int) -> Counter[str]:
    """Kills per player as the intact store's events say, but for positions lo..hi."""
    kills: Counter[str] = Counter()
    async with open_test_store(str(path)) as store:
        for m in match_ids:
            slots: dict[int, str] = {}
            for e in await store.read(m):
                if lo <= e.position <= hi:
                    continue
                if e.type == ev.JOINED:
                    slots[e.data[0]] = e.data[1]
                elif e.type == ev.LEFT:
                    slots.pop(e.data[0], None)
                elif e.type == ev.KILLED and e.data[0] in slots:
                    kills[slots[e.data[0]]] += 1
    return kills


async def test_a_damaged_page_is_passed_over_reported_and_the_rest_served(tmp_path: Path) -> None:
    db, intact = tmp_path / "server.db", tmp_path / "intact.db"
    store = open_test_store(str(db), synchronous="NORMAL")
    await store.open()
    ids = await record_matches(store, 4, players=6, seconds=15, seed=8)
    last = await store.last_position()
    await store.close()
    shutil.copy(db, intact)
    damage_a_middle_page(db)

    async with running_app(tmp_path) as app:  # it starts: nothing at start reads the page
        status, top = await call(app, "GET", f"/api/leaderboards/kills?wait={last}&limit=100")
        assert status == 200 and top["reached"] is True and top["position"] == last, top
        status, health = await call(app, "GET", "/healthz")
        assert status == 200 and health["status"] == "degraded", health
        reason = health["degraded"]["leaderboards"]
        found = re.search(r"positions (\d+)\.\.(\d+) unreadable \(a damaged page", reason)
        assert found is not None and "malformed" in reason, reason
        lo, hi = int(found[1]), int(found[2])
        assert 1 < lo <= hi < last
        status, metrics = await call(app, "GET", "/metrics")
        assert "matchreplay_leaderboard_skipped_batches 1.0" in metrics
        # Every other batch is on the boards; the unreadable ones are not.
        expected = await kills_outside(intact, ids, lo, hi)
        assert {e["owner"]: e["value"] for e in top["entries"]} == dict(expected)
        assert expected != await kills_outside(intact, ids, 0, -1), "the page held no kill"
        # The skipped range is what the damaged file cannot read, and no more: the
        # positions just outside it read back.
        assert await app.store.scan(hi, 1, frozenset()) != ([], hi)
        assert (await app.store.scan(lo - 2, 1, frozenset()))[1] == lo - 1
        # The rest is served: the matches list, and the boards to anyone.
        status, listed = await call(app, "GET", "/api/matches", token("root", "admin"))
        assert status == 200 and {m["match_id"] for m in listed} >= set(ids)
