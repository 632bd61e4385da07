"""Token misuse: missing, malformed, wrongly signed, expired, wrong role, wrong match,
another player's id. Refusals are typed and documented (close 4001, ERROR forbidden,
HTTP 401/403)."""

from __future__ import annotations

import asyncio
import time

import jwt
import msgpack
import pytest
from server_helpers import FAST_SETTINGS, SECRET, call, raw_connect, running_app, token, unpack, url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from replay import protocol as p
from server import auth


async def refused(app, tok: str | None) -> tuple[int | None, str]:
    ws = await raw_connect(app, tok)
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            await ws.recv()
    return ws.close_code, ws.close_reason


async def test_bad_tokens_are_refused_with_4001(tmp_path):
    now = int(time.time())
    expired = jwt.encode(
        {"sub": "p", "role": "player", "match": "*", "iat": now - 100, "exp": now - 10}, SECRET
    )
    forged = auth.issue("another-secret-of-enough-length-000", "p", "admin")
    no_role = jwt.encode({"sub": "p", "match": "*", "exp": now + 100}, SECRET)
    bad_role = jwt.encode({"sub": "p", "role": "god", "match": "*", "exp": now + 100}, SECRET)
    none_alg = jwt.encode(
        {"sub": "p", "role": "admin", "match": "*", "exp": now + 100}, None, "none"
    )
    async with running_app(tmp_path) as app:
        # No token: an anonymous spectator of public matches (docs/protocol.md 11.1).
        ws = await connect(url(app), subprotocols=["matchreplay.v1"])
        assert unpack(await ws.recv())[:4] == [p.WELCOME, 1, "", "spectator"]
        await ws.close()
        assert await refused(app, expired) == (p.CLOSE_UNAUTHORIZED, "token expired")
        code, reason = await refused(app, forged)
        assert code == p.CLOSE_UNAUTHORIZED and reason.startswith("token signature is invalid")
        assert reason.endswith("the server's is set by MATCHREPLAY_SECRET or --secret")
        code, reason = await refused(app, "not.a.token")
        assert code == p.CLOSE_UNAUTHORIZED and reason.startswith("token is malformed")
        for tok in (no_role, bad_role, none_alg):
            code, _ = await refused(app, tok)
            assert code == p.CLOSE_UNAUTHORIZED
        # The query-string transport works like the header.
        ws = await connect(f"{url(app)}?token={token('q')}", subprotocols=["matchreplay.v1"])
        assert unpack(await ws.recv())[:4] == [p.WELCOME, 1, "q", "player"]
        await ws.close()


async def test_roles_and_match_scope_are_enforced(tmp_path):
    async with running_app(tmp_path) as app:
        a = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=8)
        b = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=8)
        # A player token for match a cannot enter match b.
        ws = await raw_connect(app, token("alice", match=a.match_id))
        await ws.recv()
        await ws.send(msgpack.packb([p.JOIN, b.match_id, None]))
        assert unpack(await ws.recv())[1] == p.E_FORBIDDEN
        await ws.send(msgpack.packb([p.JOIN, a.match_id, None]))
        assert unpack(await ws.recv())[0] == p.JOINED
        await ws.close()
        # A spectator watches (no seat) and can never send inputs or commands.
        spec = await raw_connect(app, token("eve", role="spectator"))
        await spec.recv()
        await spec.send(msgpack.packb([p.JOIN, a.match_id, 0]))
        joined = unpack(await spec.recv())
        assert joined[0] == p.JOINED and joined[2] is None
        assert "eve" not in a.seats
        await spec.send(msgpack.packb([p.INPUT, [[1, 0, 0, 0, False]]]))
        msg = unpack(await spec.recv())
        while msg[0] != p.ERROR:
            msg = unpack(await spec.recv())
        assert msg[1] == p.E_FORBIDDEN
        await spec.close()

        admin = token("root", "admin")
        player = token("alice", match=a.match_id)
        # Only admins create matches and issue tokens.
        status, body = await call(app, "POST", "/api/matches?game=arena", player)
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, body = await call(app, "POST", "/api/matches?game=arena")
        assert status == 401
        status, body = await call(app, "POST", "/api/tokens?player=x&role=admin", player)
        assert status == 403
        status, body = await call(app, "POST", "/api/matches?game=chess", admin)
        assert status == 400 and body["error"]["code"] == "invalid_settings"
        status, body = await call(app, "POST", '/api/matches?settings={"speed_mps":-1}', admin)
        assert status == 400 and "speed_mps" in body["error"]["message"]
        # A player reserves a seat for itself only.
        status, body = await call(
            app, "POST", f"/api/matches/{a.match_id}/reserve?player=bob", player
        )
        assert status == 403
        status, body = await call(app, "POST", f"/api/matches/{b.match_id}/reserve", player)
        assert status == 403
        status, body = await call(app, "POST", f"/api/matches/{a.match_id}/reserve", player)
        assert status == 200 and body["player"] == "alice"
        # An admin-issued token works on the websocket.
        status, body = await call(
            app, "POST", f"/api/tokens?player=carol&role=player&match={a.match_id}&ttl=60", admin
        )
        assert status == 201
        assert auth.verify(SECRET, body["token"]).player == "carol"
        ws = await raw_connect(app, body["token"])
        assert unpack(await ws.recv())[2] == "carol"
        await ws.close()


async def test_seat_reservation_expires(tmp_path):
    async with running_app(tmp_path, seat_timeout=0.2) as app:
        m = await app.lobby.create("arena", FAST_SETTINGS | {"max_players": 2}, start_players=2)
        m.reserve("x")
        m.reserve("y")
        with pytest.raises(Exception, match="seats are taken"):
            m.reserve("z")
        async with asyncio.timeout(5):
            while m.seats:
                await asyncio.sleep(0.02)
        m.reserve("z")
