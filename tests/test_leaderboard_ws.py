"""Leaderboard queries over the websocket protocol (LEADERBOARD ``[48, ref, query, args]``),
against a real server on loopback: the answers equal the HTTP answers, waiting
queries run beside the connection's other messages, bad input is an ERROR."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgpack
import pytest
from leaderboard_fixtures import fill, record_matches
from server_helpers import FAST_SETTINGS, call, raw_connect, running_app, token, unpack, url
from websockets.protocol import State

from client_sdk.leaderboards import LeaderboardError, Leaderboards
from replay import protocol as p


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lbws") / "server.db"
    asyncio.run(fill(str(path), count=2, players=6, seconds=10, seed=5))
    return path


@pytest.fixture
async def app(filled: Path, tmp_path: Path):
    shutil.copy(filled, tmp_path / "server.db")
    async with running_app(tmp_path) as app:
        # The projection catches up in the background: wait until it has every event.
        assert await app.leaderboards.wait(await app.store.last_position(), 20)
        yield app


async def ask(ws: Any, ref: int, query: str, **args: Any) -> p.LeaderboardReply | p.Error:
    """Send one LEADERBOARD and return the answer or ERROR carrying ``ref``."""
    await ws.send(p.encode_leaderboard(ref, query, args))
    return await answer(ws, ref)


async def answer(ws: Any, ref: int) -> p.LeaderboardReply | p.Error:
    while True:
        msg = p.decode_server(await ws.recv())
        if isinstance(msg, p.LeaderboardReply | p.Error) and msg.ref == ref:
            return msg


def http_path(query: str, args: dict[str, Any]) -> str:
    path, rest = p.leaderboard_path(query, args)  # the one route table, the SDK's too
    return path + (f"?{urlencode(rest)}" if rest else "")


async def test_every_query_answers_what_http_answers(app) -> None:
    ws = await raw_connect(app, None)  # anonymous: queries need no token
    try:
        assert unpack(await ws.recv())[0] == p.WELCOME
        # The raw frame: [49, ref, body].
        await ws.send(msgpack.packb([48, 7, "count", {"board": "kills"}]))
        raw = unpack(await ws.recv())
        assert raw[:2] == [49, 7] and raw[2]["board"] == "kills" and raw[2]["count"] > 0

        top = await ask(ws, 1, "top", board="rating", limit=3)
        assert isinstance(top, p.LeaderboardReply) and top.body["next_cursor"]
        owner = top.body["entries"][1]["owner"]
        periods = await ask(ws, 2, "periods", board="kills_weekly")
        assert isinstance(periods, p.LeaderboardReply)
        position = app.projection.position
        queries: list[tuple[str, dict[str, Any]]] = [
            ("boards", {}),
            ("top", {"board": "rating", "limit": 3}),
            ("top", {"board": "rating", "limit": 3, "cursor": top.body["next_cursor"]}),
            ("entry", {"board": "rating", "player": owner}),
            ("around", {"board": "rating", "player": owner, "limit": 3}),
            ("count", {"board": "kills"}),
            ("periods", {"board": "kills_weekly"}),
            ("top", {"board": "kills_weekly", "period": periods.body["current"]}),
            ("count", {"board": "kills", "wait": position, "timeout": 5}),
        ]
        for ref, (query, args) in enumerate(queries, start=10):
            got = await ask(ws, ref, query, **args)
            assert isinstance(got, p.LeaderboardReply), (query, args, got)
            status, body = await call(app, "GET", http_path(query, args))
            assert status == 200 and got.body == body, (query, args)
            assert got.body["position"] == position
        assert got.body["reached"] is True

        # The SDK over both transports gives equal answers.
        over_ws = Leaderboards(url(app))
        over_http = Leaderboards(f"http://127.0.0.1:{app.port}")
        async with over_ws:
            for lb_query in (
                lambda lb: lb.boards(),
                lambda lb: lb.top("rating", limit=4),
                lambda lb: lb.entry("rating", owner),
                lambda lb: lb.around("rating", owner, limit=5),
                lambda lb: lb.count("kills"),
                lambda lb: lb.periods("kills_weekly"),
                lambda lb: lb.top("kills", wait=position, timeout=5),
            ):
                assert await lb_query(over_ws) == await lb_query(over_http)
            with pytest.raises(LeaderboardError) as ws_err:
                await over_ws.top("rating", limit=1001)
            with pytest.raises(LeaderboardError) as http_err:
                await over_http.top("rating", limit=1001)
            assert (ws_err.value.status, ws_err.value.code) == (400, "limit_too_large")
            assert (http_err.value.status, http_err.value.code) == (400, "limit_too_large")
    finally:
        await ws.close()


async def test_bad_queries_get_an_error_and_the_connection_goes_on(app) -> None:
    ws = await raw_connect(app, token("viewer", "spectator"))
    try:
        await ws.recv()  # WELCOME
        bad: list[tuple[str, dict[str, Any], str]] = [
            ("top", {"board": "nope"}, "unknown_board"),
            ("entry", {"board": "rating", "player": "nobody"}, "unknown_player"),
            ("around", {"board": "rating", "player": "nobody"}, "unknown_player"),
            ("top", {"board": "rating", "limit": 1001}, "limit_too_large"),
            ("top", {"board": "rating", "cursor": "%%%"}, "bad_cursor"),
            ("top", {"board": "kills", "cursor": "WyJ4IiwgImFsbCIsIDEsIDAsIDFd"}, "bad_cursor"),
            ("top", {"board": "kills_weekly", "period": "previous"}, "unknown_period"),
            ("count", {"board": "kills", "period": "1999-01-01"}, "unknown_period"),
            ("top", {"board": "rating", "limit": "many"}, "bad_parameter"),
            ("top", {"board": "rating", "limit": 0}, "bad_parameter"),
            ("top", {"board": "rating", "colour": "red"}, "bad_parameter"),
            ("entry", {"board": "rating"}, "bad_parameter"),
            ("everything", {}, "bad_parameter"),
            ("count", {"board": "kills", "wait": -1}, "bad_parameter"),
            ("count", {"board": "kills", "wait": 1, "timeout": 99}, "bad_parameter"),
        ]
        for ref, (query, args, code) in enumerate(bad, start=1):
            got = await ask(ws, ref, query, **args)
            assert isinstance(got, p.Error) and (got.code, got.ref) == (code, ref), (args, got)
            assert got.message
            ok = await ask(ws, 1000 + ref, "count", board="kills")
            assert isinstance(ok, p.LeaderboardReply)
        # A malformed LEADERBOARD frame is a protocol error, with its ref when it has one.
        await ws.send(msgpack.packb([48, 5, "top", "not-a-map"]))
        got = await answer(ws, 5)
        assert isinstance(got, p.Error) and got.code == p.E_INVALID_FIELD
        assert ws.state is State.OPEN
    finally:
        await ws.close()


async def test_a_waiting_query_answers_once_the_board_reaches_the_position(app) -> None:
    ws = await raw_connect(app, None)
    try:
        await ws.recv()  # WELCOME
        target = await app.store.last_position() + 1
        await ws.send(
            p.encode_leaderboard(1, "count", {"board": "kills", "wait": target, "timeout": 20})
        )
        await ws.send(
            p.encode_leaderboard(2, "count", {"board": "kills", "wait": 10**12, "timeout": 0.1})
        )
        # While both wait, the connection answers other queries.
        now = await ask(ws, 3, "count", board="kills")
        assert isinstance(now, p.LeaderboardReply) and now.body["position"] < target
        gave_up = await answer(ws, 2)
        assert isinstance(gave_up, p.LeaderboardReply) and gave_up.body["reached"] is False
        await record_matches(app.store, 1, players=2, seconds=2, prefix="late", seed=9)
        reached = await answer(ws, 1)
        assert isinstance(reached, p.LeaderboardReply)
        assert reached.body["reached"] is True and reached.body["position"] >= target
    finally:
        await ws.close()


async def test_waiting_queries_do_not_hold_up_a_players_inputs(app) -> None:
    match = await app.lobby.create(
        "arena", FAST_SETTINGS | {"time_limit_s": 60, "min_players": 1}, start_players=1
    )
    ws = await raw_connect(app, token("alice", match=match.match_id))
    try:
        await ws.recv()  # WELCOME
        # A query before JOIN, then JOIN.
        assert isinstance(await ask(ws, 1, "boards"), p.LeaderboardReply)
        await ws.send(p.encode_join(match.match_id, None))
        while not isinstance(joined := p.decode_server(await ws.recv()), p.Joined):
            pass
        slot = joined.slot
        # Fill this connection's waiting queries (they cannot be answered for 30 s) ...
        far = {"board": "kills", "wait": 10**12, "timeout": 30}
        for ref in range(100, 100 + p.MAX_PENDING_QUERIES):
            await ws.send(p.encode_leaderboard(ref, "count", far))
        over = await ask(ws, 200, "count", **far)
        assert isinstance(over, p.Error) and over.code == p.E_TOO_MANY_QUERIES
        # ... then play: inputs interleaved with immediate queries.
        n, acked, answered = 40, 0, []
        for seq in range(1, n + 1):
            await ws.send(p.encode_inputs([(seq, [1.0, 0.0, 0.5, False])]))
            if seq % 10 == 0:
                await ws.send(p.encode_leaderboard(300 + seq, "count", {"board": "kills"}))
        async with asyncio.timeout(20):  # a guard against hanging, not a measurement
            while acked < n or len(answered) < n // 10:
                msg = p.decode_server(await ws.recv())
                if isinstance(msg, p.Update):
                    acked = max(acked, msg.ack_for(slot) or 0)
                elif isinstance(msg, p.LeaderboardReply):
                    answered.append(msg.ref)
        # Every input acknowledged and every immediate query answered, in order, while
        # the waiting queries are all still pending.
        assert answered == [310, 320, 330, 340]
        assert not any(100 <= r < 100 + p.MAX_PENDING_QUERIES for r in answered)
        assert len(app.lobby.live) == 1
    finally:
        await ws.close()
