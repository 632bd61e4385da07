"""A full match from create to end: HTTP admin calls, several SDK clients, the store."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from games import GAMES
from server_helpers import FAST_SETTINGS, call, running_app, token, url

from client_sdk import GameClient
from replay import protocol as p
from replay.engine import ReplayEngine
from replay.games.arena.events import MATCH_ENDED


async def play_until_end(client: GameClient, inputs: list) -> p.Ended:
    i = 0
    async for message in client:
        if isinstance(message, p.Update) and client.state.alive[client.slot]:
            client.send_input(inputs[i % len(inputs)])
            i += 1
        if isinstance(message, p.Ended):
            return message
    raise AssertionError("the stream ended without ENDED")


async def test_full_match_with_sdk_clients(tmp_path):
    async with running_app(tmp_path) as app:
        admin = token("root", "admin")
        settings = quote(json.dumps(FAST_SETTINGS | {"max_players": 4}))
        status, created = await call(
            app, "POST", f"/api/matches?game=arena&settings={settings}&start_players=3", admin
        )
        assert status == 201, created
        match_id = created["match_id"]
        assert created["status"] == "created"

        clients = [GameClient(url(app), token(f"p{i}", match=match_id)) for i in range(3)]
        for c in clients:
            await c.connect()
            joined = await c.join(match_id)
            assert joined.slot is not None and not joined.resumed
        assert sorted(c.slot for c in clients) == [0, 1, 2]

        moves = [[[1, 0, 0.1, True], [0, 1, 1.6, False]], [[-1, 0, 3.1, True]], [[0, -1, 4.7, 1]]]
        games = asyncio.gather(*(play_until_end(c, m) for c, m in zip(clients, moves, strict=True)))
        # A spectator arriving mid-match gets the history (CATCHUP) then the live UPDATEs.
        while clients[0].tick < 45:
            await asyncio.sleep(0.02)
        spectator = GameClient(url(app), token("watcher", "spectator"))
        await spectator.connect()
        watching = await spectator.join(match_id)
        assert watching.slot is None and watching.last_seq > 0
        watched = [m async for m in spectator]
        assert any(isinstance(m, p.Catchup) for m in watched)
        ended = await asyncio.wait_for(games, 30)
        assert {e.status for e in ended} == {"ended"}
        assert {e.reason for e in ended} == {"time_limit"}
        assert len(ended[0].scoreboard) == 3

        # Every client folded the same events to the same state as the server.
        match_state = app.lobby.live.get(match_id)
        assert match_state is None  # finished matches leave the live table
        record = await app.store.get_match(match_id)
        assert record.status == "ended"
        assert set(record.players) == {"p0", "p1", "p2"}
        engine = ReplayEngine(app.store, GAMES)
        replayed = await engine.state_at(match_id, record.last_tick)
        rules = clients[0].rules
        for c in [*clients, spectator]:
            assert c.last_seq == record.version
            assert rules.state_hash(c.state) == rules.state_hash(replayed)
        for c in clients:
            # Acknowledged means applied and durable: nothing acked is past the store.
            assert 0 < c.acked_seq < c.next_seq
            assert c.acked_tick <= record.last_tick

        status, listed = await call(app, "GET", "/api/matches", admin)
        assert status == 200 and listed[0]["match_id"] == match_id
        assert listed[0]["status"] == "ended"
        status, one = await call(app, "GET", f"/api/matches/{match_id}", admin)
        assert status == 200 and one["last_seq"] == record.version

        status, health = await call(app, "GET", "/healthz")
        assert status == 200 and health["status"] == "ok"
        status, metrics = await call(app, "GET", "/metrics")
        assert status == 200
        for name in (
            "matchreplay_connections",
            "matchreplay_inputs_total",
            "matchreplay_events_appended_total",
            "matchreplay_append_latency_seconds_bucket",
            "matchreplay_tick_overruns_total",
            "process_cpu_seconds_total",
        ):
            assert name in metrics
        events_line = next(
            ln for ln in metrics.splitlines() if ln.startswith("matchreplay_events_appended_total")
        )
        assert float(events_line.split()[1]) == record.version
        for c in clients:
            await c.close()


async def test_admin_start_and_end_and_concurrent_matches(tmp_path):
    async with running_app(tmp_path) as app:
        admin_tok = token("root", "admin")
        a = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=8)
        b = await app.lobby.create("arena", FAST_SETTINGS, start_players=2)
        players = [GameClient(url(app), token(f"a{i}")) for i in range(2)]
        for c in players:
            await c.connect()
            await c.join(a.match_id)
        # Not enough players for the auto start (8): the admin starts it.
        status, body = await call(app, "POST", f"/api/matches/{a.match_id}/start", admin_tok)
        assert status == 200, body
        status, body = await call(app, "POST", f"/api/matches/{a.match_id}/start", admin_tok)
        assert status == 409 and body["error"]["code"] == "already_started"
        # A player may not end a match; an admin may.
        status, body = await call(app, "POST", f"/api/matches/{a.match_id}/end", token("a0"))
        assert status == 403
        status, body = await call(app, "POST", f"/api/matches/{a.match_id}/end", admin_tok)
        assert status == 200 and body["status"] == "ended"
        for c in players:
            messages = [m async for m in c]
            assert isinstance(messages[-1], p.Ended) and messages[-1].reason == "ended by admin"
        # The end is an event in the match's log (its replay ends too), at the tick answered.
        last = (await app.store.read(a.match_id))[-1]
        assert last.type == MATCH_ENDED and last.data[1] == "ended by admin"
        assert last.tick == body["ended_tick"]
        # The other match was never disturbed and is still waiting for players.
        assert b.status == "created" and not b.read_only and b.tick > 0
        records = {r.match_id: r.status for r in await app.store.list_matches()}
        assert records == {a.match_id: "ended", b.match_id: "created"}
