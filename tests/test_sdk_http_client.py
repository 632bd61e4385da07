"""The SDK's kept-alive HTTP client (client_sdk/http_client.py) and the leaderboard
queries over it: one connection for many queries against the real server, a
connection the server closed reopened by itself, a GET on a reused connection closed
before any answer sent once more (and only then), every body framing a server may
use, malformed or endless answers turned into ``OSError`` within the timeout, never a
hang. Real servers on loopback: ours, and small asyncio servers that misbehave on
purpose (they stand for proxies and broken servers, which we do not control)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from server_helpers import running_app

from client_sdk import LeaderboardError, Leaderboards
from client_sdk.http_client import MAX_HEAD, HttpConnection
from client_sdk.leaderboards import HTTP_CONNECTIONS, Entry


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., asyncio.Future]]:
    """A server answering each connection's requests with ``answers[connection][i]``
    (bytes to send, or None: close without answering), closing the connection after
    its last answer; returns its base URL."""
    servers: list[asyncio.Server] = []

    async def start(*answers: list[bytes | None]) -> str:
        connections = iter(answers)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                for answer in next(connections):
                    await reader.readuntil(b"\r\n\r\n")
                    if answer is None:
                        break
                    writer.write(answer)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


@contextlib.asynccontextmanager
async def serving(serve: Callable[..., Awaitable[None]]) -> AsyncIterator[str]:
    """``serve`` (an ``asyncio.start_server`` callback) on a loopback port: its base URL."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(h + "\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


async def test_many_queries_one_connection_and_a_closed_one_is_reopened(tmp_path) -> None:
    # The server closes a connection after 5 answers: the client goes on, on a new one.
    async with running_app(tmp_path, http_max_requests=5) as app:
        base = f"http://127.0.0.1:{app.port}"
        async with Leaderboards(base) as boards:
            answers = [await boards.count("kills") for _ in range(12)]
            assert answers == [0] * 12
            assert boards.http_connections() == 3  # 5 + 5 + 2
            with pytest.raises(LeaderboardError) as error:
                await boards.top("no-such-board")
            assert (error.value.status, error.value.code) == (404, "unknown_board")
            assert (await boards.boards())["position"] == 0  # the error kept the connection
            assert boards.http_connections() == 3
        async with running_app(tmp_path / "b") as other:
            base = f"http://127.0.0.1:{other.port}"
            async with HttpConnection(base) as http:
                for _ in range(20):
                    response = await http.request("GET", "/api/leaderboards")
                    assert response.status == 200 and b'"position"' in response.body
                assert http.connections == 1


async def test_a_get_on_a_reused_connection_closed_unanswered_is_sent_once_more(scripted) -> None:
    # The first connection answers once, then closes as the second request arrives (a
    # server's idle timeout racing the request): sent again on a new connection.
    base = await scripted([ok(b"one"), None], [ok(b"two")])
    async with HttpConnection(base) as http:
        assert (await http.request("GET", "/a")).body == b"one"
        assert (await http.request("GET", "/a")).body == b"two"
        assert http.connections == 2
    # A new connection closed unanswered was never answered by anyone: no second try.
    base = await scripted([None], [ok(b"never asked")])
    async with HttpConnection(base) as http:
        with pytest.raises(ConnectionResetError):
            await http.request("GET", "/a")
        assert http.connections == 1
    # Nor is a request that is not idempotent sent twice.
    base = await scripted([ok(b"one"), None], [ok(b"two")])
    async with HttpConnection(base) as http:
        await http.request("GET", "/a")
        with pytest.raises(ConnectionResetError):
            await http.request("POST", "/a")


async def test_every_body_framing_and_connection_close(scripted) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end"
    base = await scripted(
        [chunked, ok(b"", "X-Empty: 1"), ok(b"bye", "Connection: close")], [until_close], [ok(b"x")]
    )
    async with HttpConnection(base) as http:
        assert (await http.request("GET", "/")).body == b"wikipedia"
        empty = await http.request("GET", "/")
        assert (empty.body, empty.headers["x-empty"]) == (b"", "1")
        assert (await http.request("GET", "/")).body == b"bye"
        assert (await http.request("GET", "/")).body == b"to the end"  # a new connection
        assert (await http.request("GET", "/")).body == b"x"
        assert http.connections == 3


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEAD,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server closes
    ],
)
async def test_a_malformed_answer_is_an_os_error_and_the_next_request_works(
    scripted, answer
) -> None:
    base = await scripted([answer], [ok(b"fine")])
    async with HttpConnection(base, timeout=5) as http:
        with pytest.raises(ConnectionError):
            await http.request("GET", "/")
        assert (await http.request("GET", "/")).body == b"fine"  # on a new connection


async def test_a_server_that_never_answers_times_out_and_refused_is_an_os_error(
    scripted,
) -> None:
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
        async with HttpConnection(base, timeout=0.3) as http:
            with pytest.raises(TimeoutError):
                await http.request("GET", "/")
            with pytest.raises(TimeoutError):  # a per-request timeout
                await http.request("GET", "/", timeout=0.1)
    finally:
        silent.close()
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}"
    async with HttpConnection(closed) as http:
        with pytest.raises(OSError):
            await http.request("GET", "/")
    with pytest.raises(ValueError):
        HttpConnection("ftp://example.com")


async def test_each_request_keeps_its_own_deadline_on_one_connection() -> None:
    # One timer watches a connection's deadlines: a request with a shorter timeout than
    # the one before still times out at its own, and a timer set for an earlier
    # request's deadline does not fail the slow answer of a later one within its own.
    delays = iter([0.0, 0.3, None])  # seconds before each answer; None: never

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                delay = next(delays)
                if delay is None:
                    await reader.read()  # until the client gives up
                    break
                await asyncio.sleep(delay)
                writer.write(ok(b"x"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with serving(serve) as base, HttpConnection(base, timeout=60) as http:
        # Its timer is set for 0.5 s from now and fires while the next one waits.
        assert (await http.request("GET", "/", timeout=0.5)).body == b"x"
        await asyncio.sleep(0.3)
        assert (await http.request("GET", "/", timeout=30)).body == b"x"
        with pytest.raises(TimeoutError) as late:
            # The connection's own 60 s is far: only the request's 0.2 s ends it.
            await asyncio.wait_for(http.request("GET", "/", timeout=0.2), 10)
        assert "no answer within the timeout" in str(late.value)
        assert http.connections == 1


async def test_an_answer_with_fields_a_newer_server_adds_still_reads(scripted) -> None:
    entry = {"rank": 1, "owner": "amy", "value": 9, "subscore": 0, "reached_at": 4, "badge": "x"}
    page = {"board": "kills", "period": "all", "position": 4, "count": 1, "entries": [entry]}
    base = await scripted(
        [
            ok(json.dumps(page | {"cursor_ttl": 60}).encode()),
            ok(json.dumps({**page, "entry": entry}).encode()),
        ]
    )
    async with Leaderboards(base) as boards:
        top = await boards.top("kills")
        assert top.entries == [Entry(1, "amy", 9, 0, 4)] and top.position == 4
        got, _ = await boards.entry("kills", "amy")
        assert got == Entry(1, "amy", 9, 0, 4) and got.owner == "amy"


async def test_queries_asked_together_go_over_several_connections() -> None:
    # Each connection's first answer is held until HTTP_CONNECTIONS requests have
    # arrived: queries sent one after another over one connection would never get it.
    arrived = asyncio.Barrier(HTTP_CONNECTIONS)
    connections = 0
    body = json.dumps({"board": "kills", "period": "all", "position": 1, "count": 7}).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = True
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if first:
                    first = False
                    await arrived.wait()
                writer.write(ok(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with serving(serve) as base, Leaderboards(base, timeout=5) as boards:
        counts = await asyncio.gather(*(boards.count("kills") for _ in range(10)))
        assert counts == [7] * 10
        assert boards.http_connections() == connections == HTTP_CONNECTIONS
        # Asked one at a time, they keep to one idle connection of the pool.
        for _ in range(5):
            assert await boards.count("kills") == 7
        assert boards.http_connections() == HTTP_CONNECTIONS
