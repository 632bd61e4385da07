"""The client side of a cluster (docs/protocol.md section 14), against real servers on
loopback: redirects (close 4011), a match between nodes (close 4012), reconnecting
through another node, the node list of ``GET /api/nodes``, and a node SIGKILLed
under a playing client.

A node that does not own the match is played by :class:`FrontDoor`: a real
websockets server on loopback that speaks the documented contract of a non-owner
(WELCOME; JOIN answered by ERROR ``moved`` + close 4011 with the owner's URL, or by
ERROR ``match_moving`` + close 4012; ``GET /api/nodes``). The owner is a real
matchreplay server. The cluster's own end-to-end tests run real nodes on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import msgpack
import numpy as np
import pytest
from server_helpers import FAST_SETTINGS, running_app, token, url
from test_server_resume import aim_of, units, until
from test_server_shutdown import http, start_server
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import replay.games.arena.events as ev
from client_sdk import ClientClosed, GameClient, LeaderboardError, Leaderboards, Spectator
from client_sdk.bots import run_bots
from client_sdk.game_client import MAX_REDIRECTS
from client_sdk.nodes import Nodes
from replay import protocol as p

ALONE = FAST_SETTINGS | {"min_players": 1, "time_limit_s": 0}
"""A match one player starts and nothing ends."""


@dataclass
class FrontDoor:
    """A node that owns no match: every JOIN gets the next answer of ``script``
    (``("moved", url)``, ``("moving",)`` or ``("going_away",)``; the last one repeats)."""

    script: list[tuple[str, ...]]
    listed: list[dict[str, Any]] | None = None
    """Its answer to ``GET /api/nodes`` (None: 404, like a server without a cluster)."""
    full: bool = False
    """Refuse every connection with 4009 before WELCOME."""
    joins: list[tuple[str, int | None]] = field(default_factory=list)
    node_requests: int = 0
    connections: int = 0
    url: str = ""

    async def _http(self, _conn: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] != "/api/nodes":
            return None  # a websocket upgrade
        self.node_requests += 1
        if self.listed is None:
            return _respond(HTTPStatus.NOT_FOUND, {"error": {"code": "not_found"}})
        return _respond(HTTPStatus.OK, {"nodes": self.listed})

    async def _session(self, ws: ServerConnection) -> None:
        self.connections += 1
        if self.full:  # refused before WELCOME, as a node at max_connections does
            await ws.close(p.CLOSE_TOO_MANY_CONNECTIONS, "server full")
            return
        await ws.send(p.welcome("someone", "player", {}))
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                msg = msgpack.unpackb(frame)
                if msg[0] != p.JOIN:
                    continue
                self.joins.append((msg[1], msg[2]))
                answer = self.script[min(len(self.joins), len(self.script)) - 1]
                if answer[0] == "moved":
                    await ws.send(p.error(p.E_MOVED, answer[1]))
                    await ws.close(p.CLOSE_MOVED, answer[1])
                elif answer[0] == "going_away":  # shutting down, no ENDED: match not over
                    await ws.close(p.CLOSE_GOING_AWAY, "shutting down")
                else:
                    await ws.send(p.error(p.E_MATCH_MOVING, "its node is gone: join again"))
                    await ws.close(p.CLOSE_TRY_AGAIN, "match moving")


def _respond(status: HTTPStatus, body: dict[str, Any]) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status.value, status.phrase, headers, data)


@contextlib.asynccontextmanager
async def front_door(door: FrontDoor) -> AsyncIterator[FrontDoor]:
    async with serve(
        door._session,
        "127.0.0.1",
        0,
        subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
        process_request=door._http,
    ) as server:
        door.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        yield door


def closed_port_url() -> str:
    """A websocket URL where nothing listens (a node that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/ws"


async def collect(client: GameClient, into: list[Any]) -> None:
    async for message in client:
        into.append(message)


def stored_aims(events: list[Any], slot: int) -> list[int]:
    aims: list[int] = []
    for e in events:
        if e.type == ev.AIMED:
            slots = np.frombuffer(e.data[0], np.uint8)
            values = np.frombuffer(e.data[1], "<u2")
            aims += values[slots == slot].tolist()
    return aims


# -- redirects -----------------------------------------------------------------------------


async def test_join_follows_a_redirect_to_the_owner(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", ALONE, start_players=1)
        async with front_door(FrontDoor([("moved", url(app))])) as door:
            client = GameClient(door.url, token("p1"))
            joined = await client.join(match.match_id)
            # join() answers with the owner's JOINED, as if the client had gone there.
            assert joined.match_id == match.match_id and joined.slot is not None
            assert door.joins == [(match.match_id, 0)]
            assert client.url == url(app) and client.redirects == 1
            assert url(app) in client.nodes.urls
            seen: list[Any] = []
            reader = asyncio.create_task(collect(client, seen))
            await until(lambda: client.state.alive[client.slot])
            for _ in range(10):
                client.send_input([1.0, 0.0, 0.0, False])
            await until(lambda: client.acked_seq == 10)
            await client.close()
            await reader
            # The redirect never reaches the caller: no ERROR moved among its messages.
            codes = {m.code for m in seen if isinstance(m, p.Error)}
            assert not codes & {p.E_MOVED, p.E_MATCH_MOVING}
            assert any(isinstance(m, p.Update) for m in seen)
        await match.stop()


async def test_a_redirect_loop_ends_the_session_with_a_clear_reason():
    door = FrontDoor([])
    async with front_door(door):
        door.script = [("moved", door.url)]  # "the owner is... me": a loop
        client = GameClient(door.url, token("p1"))
        async with asyncio.timeout(30):  # guards against a hang; not a timing check
            with pytest.raises(ClientClosed) as closed:
                await client.join("m1")
        assert closed.value.code == p.CLOSE_MOVED
        assert f"more than {MAX_REDIRECTS} redirects in a row" in closed.value.reason
        # The first JOIN and MAX_REDIRECTS redirected ones, then it stopped.
        assert len(door.joins) == 1 + MAX_REDIRECTS
        await client.close()


async def test_a_redirect_to_a_node_that_refuses_the_join_raises_its_error(tmp_path):
    async with running_app(tmp_path) as app, front_door(FrontDoor([("moved", url(app))])) as door:
        client = GameClient(door.url, token("p1"))
        with pytest.raises(p.ProtocolError) as refused:
            await client.join("no-such-match")
        assert refused.value.code == p.E_UNKNOWN_MATCH
        await client.close()


# -- a match between nodes; the node list -------------------------------------------------


async def test_try_again_goes_through_another_node_learned_from_the_node_list(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", ALONE, start_players=1)
        down = closed_port_url()
        door = FrontDoor([("moving",)])
        async with front_door(door):
            door.listed = [
                {"name": "n1", "url": door.url, "status": "up", "age": 0.1, "load": {}},
                {"name": "n2", "url": url(app), "status": "up", "age": 0.2, "load": {}},
                {"name": "n3", "url": down, "status": "down", "age": 9.0, "load": {}},
            ]
            client = GameClient(door.url, token("p1"))  # knows only the door
            async with asyncio.timeout(30):
                joined = await client.join(match.match_id)
            assert joined.slot is not None and client.url == url(app)
            assert door.joins == [(match.match_id, 0)] and door.node_requests >= 1
            # Learned the node that is up; the one listed down is not a place to go.
            assert url(app) in client.nodes.urls and down not in client.nodes.urls
            assert client.redirects == 0
            await client.close()
        await match.stop()


async def test_try_again_gives_up_after_its_budget(monkeypatch):
    from client_sdk import game_client

    monkeypatch.setattr(game_client, "TRY_AGAIN_FOR_S", 0.5)
    async with front_door(FrontDoor([("moving",)])) as door:
        client = GameClient(door.url, token("p1"))
        async with asyncio.timeout(30):
            with pytest.raises(ClientClosed) as closed:
                await client.join("m1")
        assert closed.value.code == p.CLOSE_TRY_AGAIN
        assert "still between nodes" in closed.value.reason
        assert len(door.joins) >= 2  # it did retry before giving up
        await client.close()


def test_nodes_are_tried_in_turn_with_failed_ones_last():
    nodes = Nodes(["ws://a/ws", "ws://b/ws", "ws://a/ws"])
    assert nodes.urls == ["ws://a/ws", "ws://b/ws"]
    nodes.learn("ws://c/ws")
    assert [nodes.after(u) for u in nodes.urls] == ["ws://b/ws", "ws://c/ws", "ws://a/ws"]
    nodes.fail("ws://a/ws")
    assert nodes.order() == ["ws://b/ws", "ws://c/ws", "ws://a/ws"]
    assert nodes.after("ws://a/ws") == "ws://b/ws"  # from the failed node: to a live one
    nodes.answered("ws://a/ws")
    assert nodes.order()[0] == "ws://a/ws"
    assert Nodes(["ws://solo/ws"]).after("ws://solo/ws") == "ws://solo/ws"


# -- reconnecting through another node ---------------------------------------------------


async def test_going_away_is_retried_elsewhere_only_in_a_cluster_and_never_after_ended(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", ALONE, start_players=1)
        async with front_door(FrontDoor([("going_away",)])) as door:
            # One known node: 1001 ends a player's session, as on a single server.
            alone = GameClient(door.url, token("p1"))
            with pytest.raises(ClientClosed) as closed:
                await alone.join(match.match_id)
            assert closed.value.code == p.CLOSE_GOING_AWAY and len(door.joins) == 1
            await alone.close()
            # Another node known: the match outlived its node (no ENDED came): go there.
            clustered = GameClient(door.url, token("p1"), nodes=[url(app)])
            joined = await clustered.join(match.match_id)
            assert joined.slot is not None and clustered.url == url(app)
            assert len(door.joins) == 2
            # A shutdown that ends the match (ENDED interrupted, then 1001): never retried.
            await match.stop("interrupted", "server shutdown")
            async with asyncio.timeout(30):  # a hang guard, not a timing check
                async for _ in clustered:
                    pass
            assert clustered.ended is not None and clustered.ended.status == "interrupted"
            async with asyncio.timeout(30):
                await clustered._reader  # the session's end: it tried no other node
            assert clustered._closed.code == p.CLOSE_GOING_AWAY
            assert len(door.joins) == 2 and clustered.reconnects == 1  # the JOIN's, above
            await clustered.close()


async def test_a_dropped_player_resumes_through_another_node_and_loses_nothing(tmp_path):
    n = 30
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", ALONE, start_players=1)
        async with front_door(FrontDoor([("moved", url(app))])) as door:
            # Its node first, the door second: after a drop the door is tried first.
            client = GameClient(url(app), token("p1"), nodes=[door.url], backoff=(0.02, 0.2))
            await client.join(match.match_id)
            reader = asyncio.create_task(collect(client, []))
            await until(lambda: client.state.alive[client.slot])
            slot = client.slot
            last_seqs: list[int] = []
            for seq in range(1, n + 1):
                if seq == 20:
                    # Input 20 is sent while reconnecting: queued, sent after JOINED.
                    last_seqs.append(client.last_seq)
                    client.ws.transport.abort()
                    await until(lambda: client.slot is None or client.reconnects == 2)
                assert client.send_input([0.0, 0.0, aim_of(seq), False]) == seq
                await until(lambda s=seq: client.acked_seq >= s)
                if seq == 10:
                    # Dropped without a close frame, as when a node is SIGKILLed.
                    last_seqs.append(client.last_seq)
                    client.ws.transport.abort()
                    await until(lambda: client.reconnects == 1 and client.slot is not None)
                    # It went through the door (the failed node is tried last), which sent
                    # it back with the same JOIN: a resume from the last seq it had.
                    assert door.joins == [(match.match_id, last_seqs[0])] and last_seqs[0] > 0
                    assert client.joined.resumed and client.slot == slot
                    assert client.joined.acked_seq == 10
            assert door.joins == [(match.match_id, s) for s in last_seqs]
            assert client.reconnects == 2 and client.redirects == 2
            assert not client.unacked and client.acked_seq == n
            await client.close()
            await reader
        await match.stop("ended", "test over")
        # Every input took effect exactly once, in order: no duplicate, none lost.
        aims = stored_aims(await app.store.read(match.match_id), slot)
        assert aims == [units(aim_of(s)) for s in range(1, n + 1)]


async def test_a_full_node_is_passed_over_on_reconnect(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", ALONE, start_players=1)
        async with front_door(FrontDoor([], full=True)) as full:
            client = GameClient(url(app), token("p1"), nodes=[full.url], backoff=(0.02, 0.2))
            await client.join(match.match_id)
            client.ws.transport.abort()  # its node is tried last: the full one first
            async with asyncio.timeout(30):  # a hang guard, not a timing check
                await until(lambda: client.reconnects == 1 and client.slot is not None)
            assert client.url == url(app) and client.joined.resumed
            assert full.connections == 1  # tried first (the dropped node last), refused
            await client.close()
        await match.stop()


@pytest.mark.slow
async def test_sigkilled_node_the_client_tries_the_next_and_ends_cleanly(tmp_path):
    """A single node's match dies with it: the client must go to the other known node
    (which has never heard of the match) and end with a clear ClientClosed, not hang."""
    proc, port = await start_server(tmp_path / "doomed.db")
    try:
        settings = quote(json.dumps(ALONE))
        status, created = await http(
            port, "POST", f"/api/matches?settings={settings}&start_players=1", token("a", "admin")
        )
        assert status == 201
        async with running_app(tmp_path / "other") as other:
            client = GameClient(
                f"ws://127.0.0.1:{port}/ws", token("p1"), nodes=[url(other)], backoff=(0.02, 0.2)
            )
            await client.join(created["match_id"])
            client.send_input([1.0, 0.0, 0.0, False])
            await until(lambda: client.acked_seq == 1)
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            client.send_input([0.0, 1.0, 0.0, False])  # queued: no node has the match
            async with asyncio.timeout(30):  # a hang guard, not a timing check
                with pytest.raises(ClientClosed) as closed:
                    async for _ in client:
                        pass
            assert client.url == url(other)
            # The close that lost the node, and why the other node could not take it.
            assert closed.value.code == 1006 and p.E_UNKNOWN_MATCH in closed.value.reason
            assert closed.value.__cause__.code == p.E_UNKNOWN_MATCH
            assert [seq for seq, _ in client.unacked] == [2]  # never acknowledged
            await client.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- spectators and leaderboards on any node ------------------------------------------


def copy_store(src: str, dst: str) -> None:
    """A consistent copy of a SQLite store (the backup API: WAL contents included)."""
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)


@pytest.mark.slow
async def test_a_spectator_whose_node_is_sigkilled_watches_on_where_it_was(tmp_path):
    """Two nodes hold the same finished match (copies of one store): the spectator's node
    is SIGKILLed, and it goes on watching at the same tick on the other node."""
    (tmp_path / "a").mkdir()
    async with running_app(tmp_path / "a") as app:
        match = await app.lobby.create("arena", FAST_SETTINGS)
        tokens = [token(f"b{i}") for i in range(2)]
        bots = asyncio.create_task(run_bots(url(app), match.match_id, tokens))
        await until(lambda: match.tick >= 60)
        await match.stop("ended", "test over")
        await bots
    copy_store(str(tmp_path / "a" / "server.db"), str(tmp_path / "doomed.db"))
    copy_store(str(tmp_path / "a" / "server.db"), str(tmp_path / "other.db"))
    proc, port = await start_server(tmp_path / "doomed.db")
    try:
        async with running_app(tmp_path, db=str(tmp_path / "other.db")) as other:
            doomed = f"ws://127.0.0.1:{port}/ws"
            spec = await Spectator.connect(doomed, token("eve", "admin"), nodes=[url(other)])
            await spec.watch(match.match_id, from_=30)
            await spec.pause()
            assert spec.tick == 30
            before = spec.rules.encode_state(spec.state)
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            async with asyncio.timeout(30):  # a hang guard, not a timing check
                await until(lambda: spec.reconnects == 1, timeout=30)
                # The same tick and state, now served by the other node.
                assert spec.url == url(other) and spec.tick == 30
                assert spec.rules.encode_state(spec.state) == before
                status = await spec.step(1)
            assert status.tick == 31 == spec.tick
            await spec.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_leaderboard_queries_go_to_the_next_node_when_one_is_down(tmp_path, transport):
    async with running_app(tmp_path) as app:
        down, up = closed_port_url(), url(app)
        if transport == "http":
            down, up = down.replace("ws://", "http://")[:-3], f"http://127.0.0.1:{app.port}"
        boards = Leaderboards(down, nodes=[up])
        answer = await boards.boards()
        assert "position" in answer and boards.base_url == up
        assert boards.nodes.order()[-1] == down  # the node that failed is asked last
        # An error answer is an answer: raised as it is, not sent to another node.
        with pytest.raises(LeaderboardError) as error:
            await boards.top("no-such-board")
        assert error.value.code == "unknown_board" and boards.base_url == up
        await boards.close()
