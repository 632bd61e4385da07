"""Plain HTTP on the server's port: what a user hitting the wrong thing is told, what
the log says per request, the one shape of a match, and the command names each game
allows over the websocket protocol."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

from games import TUG_SPEC
from server_helpers import FAST_SETTINGS, call, raw_connect, running_app, token, unpack

from client_sdk import ReplayFile
from replay import protocol as p
from replay.replay_file import export_match
from replay.store.base import MatchRecord

MATCH_KEYS = set(p.match_info(MatchRecord("m", "game", "1", 30)))


async def test_start_end_reserve_of_an_unknown_match_say_unknown_match(tmp_path):
    async with running_app(tmp_path) as app:
        admin = token("root", "admin")
        for action in ("start", "end", "reserve"):
            status, body = await call(app, "POST", f"/api/matches/nope/{action}", admin)
            assert (status, body["error"]["code"]) == (404, p.E_UNKNOWN_MATCH), (action, body)
        # A match that exists but is over: 409 match_over, with its status.
        settings = quote(json.dumps(FAST_SETTINGS))
        status, created = await call(app, "POST", f"/api/matches?settings={settings}", admin)
        assert status == 201, created
        match_id = created["match_id"]
        status, ended = await call(app, "POST", f"/api/matches/{match_id}/end", admin)
        assert status == 200 and ended["status"] == "ended", ended
        status, again = await call(app, "POST", f"/api/matches/{match_id}/end", admin)
        assert status == 409 and again["error"]["code"] == p.E_MATCH_OVER, again
        assert "is ended" in again["error"]["message"]


async def test_a_plain_get_of_the_websocket_path_says_what_it_is(tmp_path):
    async with running_app(tmp_path) as app:
        status, body = await call(app, "GET", "/ws")
        assert status == 426, body  # Upgrade Required
        error = body["error"]
        assert error["code"] == "upgrade_required"
        assert p.SUBPROTOCOL in error["message"] and "docs/protocol.md" in error["message"]
        # The same path with an upgrade is still the websocket endpoint.
        ws = await raw_connect(app, None)
        assert unpack(await ws.recv())[0] == p.WELCOME
        await ws.close()


async def test_one_access_line_per_http_request_at_debug(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with running_app(tmp_path) as app:
        caplog.clear()
        for _ in range(3):
            assert (await call(app, "GET", "/healthz"))[0] == 200
        # A websocket session afterwards: once its close is logged, the HTTP
        # connections (answered and dropped before it opened) have logged theirs.
        ws = await raw_connect(app, None)
        await ws.recv()
        await ws.close()
        while not any(r.getMessage() == "connection closed" for r in caplog.records):
            await asyncio.sleep(0.01)
        access = [r for r in caplog.records if r.name == "server.http"]
        assert [(r.levelno, r.getMessage()) for r in access] == [
            (logging.DEBUG, "GET /healthz 200")
        ] * 3
        info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        # Only the websocket session's own lines remain at INFO.
        assert info == ["connection open", "connection closed"], info


async def test_every_match_listing_has_the_one_match_shape(tmp_path):
    async with running_app(tmp_path) as app:
        admin, watcher = token("root", "admin"), token("eve", "spectator")
        settings = quote(json.dumps(FAST_SETTINGS))
        status, live = await call(app, "POST", f"/api/matches?settings={settings}", admin)
        assert status == 201
        status, ended = await call(app, "POST", f"/api/matches?settings={settings}", admin)
        await call(app, "POST", f"/api/matches/{ended['match_id']}/end", admin)
        ended_id, live_id = ended["match_id"], live["match_id"]
        bodies = {
            "created (Match.info)": live,
            "admin list": (await call(app, "GET", "/api/matches", admin))[1],
            "admin one, ended": (await call(app, "GET", f"/api/matches/{ended_id}", admin))[1],
            "spectator list": (await call(app, "GET", "/api/matches", watcher))[1],
            "spectator one": (await call(app, "GET", f"/api/matches/{live_id}", watcher))[1],
            "viewer list": (await call(app, "GET", "/api/viewer/matches", watcher))[1]["matches"],
        }
        path = tmp_path / "ended.mrp"
        await export_match(app.store, ended_id, path)
        async with await ReplayFile.open(path) as replay:
            bodies["replay file"] = await replay.list_matches()
        for where, body in bodies.items():
            items = body if isinstance(body, list) else [body]
            assert items, where
            for item in items:
                assert set(item) >= MATCH_KEYS, (where, MATCH_KEYS - set(item))
        # What a spectator may not see is not there: counts of what happened after its edge.
        assert "last_seq" not in bodies["spectator one"]


async def test_command_names_come_from_each_games_rules(tmp_path):
    """The session asks the match's rules which commands a role may send: an admin may
    chat in arena (its ``admin_commands``) but not in tug (none), and may start either."""
    async with running_app(tmp_path, games=TUG_SPEC) as app:
        answers = {}
        for game in ("tug", "arena"):
            match = await app.lobby.create(game, {}, start_players=2)
            ws = await raw_connect(app, token("root", "admin"))
            await ws.recv()  # WELCOME
            await ws.send(p.encode_join(match.match_id, None))
            assert isinstance(p.decode_server(await ws.recv()), p.Joined)
            await ws.send(p.encode_command(1, "chat", {"text": "hi"}))
            await ws.send(p.encode_command(2, "start", {}))
            got = {}
            while len(got) < 2:
                msg = p.decode_server(await ws.recv())
                if isinstance(msg, p.Error | p.Ok):
                    got[msg.ref] = msg.code if isinstance(msg, p.Error) else "ok"
            answers[game] = got
            await ws.close()
        assert answers["tug"][1] == p.E_FORBIDDEN
        assert answers["arena"][1] != p.E_FORBIDDEN  # the rules decide (no such player: rejected)
        # start is a lifecycle command: the game's rules answer it (too few players here).
        assert answers["tug"][2] == answers["arena"][2] == p.E_REJECTED
