"""Spectating options are stored with the match: after a real server restart on the same
database, a finished delayed/public match stays delayed and public, a private one private,
on every read path (WATCH, LIST, the viewer routes, the replay engine)."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from games import GAMES
from server_helpers import FAST_SETTINGS, call, raw_connect, running_app, token, unpack, url

from client_sdk.bots import run_bots
from replay import protocol as p
from replay.engine import ReplayEngine
from replay.store.base import MatchRecord
from replay.store.sqlite import SQLiteEventStore

DELAY = 120.0


async def play_and_end(app: Any, match: Any) -> None:
    """Two bots play a second or so of the match, then an admin-style stop ends it."""
    tokens = [token(f"{match.match_id}-b{i}", match=match.match_id) for i in range(2)]
    bots = asyncio.create_task(run_bots(url(app), match.match_id, tokens))
    while match.tick < 45:
        await asyncio.sleep(0.02)
    await match.stop("ended", "test over")
    await bots
    assert match.status == "ended"


async def watch(app: Any, tok: str | None, match_id: str) -> list:
    """The first answer to an anonymous (or ``tok``) WATCH: WATCHING or ERROR."""
    ws = await raw_connect(app, tok)
    try:
        await ws.recv()  # WELCOME
        await ws.send(p.encode_watch(match_id, "live"))
        while True:
            msg = unpack(await ws.recv())
            if msg[0] in (p.WATCHING, p.ERROR):
                return msg
    finally:
        await ws.close()


async def listed(app: Any) -> dict[str, dict]:
    ws = await raw_connect(app, None)
    try:
        await ws.recv()  # WELCOME
        await ws.send(p.encode_list(1, "finished", 50))
        msg = unpack(await ws.recv())
        assert msg[0] == p.MATCHES
        return {m["match_id"]: m for m in msg[2]}
    finally:
        await ws.close()


async def check(app: Any, delayed: str, private: str) -> None:
    record = await app.store.get_match(delayed)
    assert record.status == "ended" and record.last_tick >= 10
    assert record.options == {"spectator_delay": DELAY, "public_spectating": True}
    assert "spectator_delay" not in record.settings  # the game's settings stay the game's
    # The replay engine starts from initial_state(record.settings, seed) and folds.
    engine = ReplayEngine(app.store, GAMES)
    assert (await engine.state_at(delayed, record.last_tick)).tick == record.last_tick

    # Anonymous WATCH: the public match is shown, but only up to the delayed edge.
    msg = await watch(app, None, delayed)
    assert msg[0] == p.WATCHING, msg
    info = msg[1]
    assert (info["spectator_delay"], info["public_spectating"]) == (DELAY, True)
    assert info["last_tick"] == 0 < record.last_tick  # ended just now: all still delayed
    # An admin has no delay.
    msg = await watch(app, token("root", "admin"), delayed)
    assert msg[1]["last_tick"] == record.last_tick

    # The private match: refused to anonymous spectators, and not listed for them.
    msg = await watch(app, None, private)
    assert msg[:2] == [p.ERROR, "forbidden"], msg
    matches = await listed(app)
    assert private not in matches and matches[delayed]["spectator_delay"] == DELAY

    # The HTTP read routes (match info, the viewer's list) apply the same options.
    status, body = await call(app, "GET", f"/api/matches/{delayed}")
    assert status == 200 and body["tick"] == 0, body
    status, body = await call(app, "GET", f"/api/matches/{private}")
    assert status == 403, body
    status, body = await call(app, "GET", "/api/viewer/matches?status=ended")
    assert status == 200, body
    assert [(m["match_id"], m["tick"]) for m in body["matches"]] == [(delayed, 0)]


async def test_finished_match_keeps_delay_and_visibility_across_a_restart(tmp_path) -> None:
    async with running_app(tmp_path) as app:  # the server default: no delay
        delayed = await app.lobby.create(
            "arena",
            FAST_SETTINGS | {"spectator_delay": DELAY, "public_spectating": True},
        )
        private = await app.lobby.create("arena", FAST_SETTINGS)
        await asyncio.gather(play_and_end(app, delayed), play_and_end(app, private))
        ids = delayed.match_id, private.match_id
        await check(app, *ids)
    async with running_app(tmp_path) as app:  # a new process's state: only the database
        assert not app.spectators.options
        await check(app, *ids)


async def test_a_store_file_from_before_options_opens_with_empty_options(tmp_path) -> None:
    db = str(tmp_path / "old.db")
    async with SQLiteEventStore(db) as store:
        await store.create_match(MatchRecord("old", "arena", "1.0.0", 30, options={"x": 1}))
    with sqlite3.connect(db) as raw:  # the schema before MatchRecord.options
        raw.execute("ALTER TABLE matches DROP COLUMN options")
    async with SQLiteEventStore(db) as store:
        assert (await store.get_match("old")).options == {}
        new = await store.create_match(
            MatchRecord("new", "arena", "1.0.0", 30, options={"public_spectating": True})
        )
        assert (await store.get_match("new")).options == new.options
