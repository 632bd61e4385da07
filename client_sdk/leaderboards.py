"""``Leaderboards``: an async client for the leaderboard queries, over HTTP or websocket.

Point it at the server's HTTP port (``http://host:8765``: the JSON routes of
docs/leaderboards.md, on kept-alive connections, see :mod:`client_sdk.http_client`
and :data:`HTTP_CONNECTIONS`) or at its websocket endpoint (``ws://host:8765/ws``: the
LEADERBOARD message of docs/protocol.md, whose encoding comes from
:mod:`replay.protocol`). An error answer raises :class:`LeaderboardError` with
the server's ``code`` and ``message``, the same for both.

Every node of a cluster answers leaderboard queries (docs/protocol.md section 14):
when a node cannot be reached (or its connection drops with a query in flight),
the query is sent to the next known node (``nodes``, then ``GET /api/nodes``). A
query only reads, so sending it again is safe.

Why a transport of ``Leaderboards`` and not methods on ``GameClient``/``Spectator``:
one class keeps one copy of the query methods and of the reply matching, and a
leaderboard view needs no seat or watched match.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from client_sdk.http_client import HttpConnection
from client_sdk.nodes import Nodes, http_base, is_ws_url
from replay import protocol as p
from replay.leaderboards import errors as lb_errors

__all__ = ["HTTP_CONNECTIONS", "Entry", "LeaderboardError", "Leaderboards", "Page"]

HTTP_CONNECTIONS = 4
"""Kept-alive connections per node in HTTP mode: queries asked at the same time go
over up to this many at once; more wait for one of them (a query is answered in about
a round trip, so a few connections keep many concurrent callers busy)."""


class LeaderboardError(Exception):
    """An error answer: ``status`` (HTTP), ``code`` (stable, documented), ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class Entry(NamedTuple):
    """One row of a board. A named tuple, not a frozen dataclass: a top-100 page builds
    100 of them, and a frozen dataclass's ``__init__`` made that the client's largest
    cost per page (benchmarks/leaderboard.py)."""

    rank: int
    owner: str
    value: int
    subscore: int
    reached_at: int
    """Global position of the event that set this value (the first-reached tie-break)."""


@dataclass(frozen=True)
class Page:
    board: str
    period: str
    position: int
    """The global event position the board reflected when answering."""
    count: int
    """Entries in the board period."""
    entries: list[Entry]
    next_cursor: str | None = None
    reached: bool | None = None
    """With ``wait``: whether the board had reached that position."""


_ENTRY_FIELDS = operator.itemgetter(*Entry._fields)


def _entry(row: dict[str, Any]) -> Entry:
    """An answer's entry object as an :class:`Entry`; fields a newer server adds are
    left out (an older client keeps working). Built from the tuple of its fields at
    once: half the cost of ``Entry(**row)``, which a top-100 page pays 100 times."""
    return tuple.__new__(Entry, _ENTRY_FIELDS(row))


def _page(body: dict[str, Any]) -> Page:
    return Page(
        body["board"],
        body["period"],
        body["position"],
        body["count"],
        [_entry(e) for e in body.get("entries", ())],
        body.get("next_cursor"),
        body.get("reached"),
    )


class Leaderboards:
    """Queries against ``base_url``: ``http(s)://host:port`` for the HTTP API, or
    ``ws(s)://host:port/ws`` for LEADERBOARD messages on one websocket connection
    (opened on the first query, reopened if the server closed it while idle).

    Every method builds one ``(query, args)`` pair, the server's own unit
    (server/leaderboard_api.py ``query``); the transports only carry it, so both
    give the same answers and the same error codes."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        nodes: Sequence[str] = (),
    ) -> None:
        """``nodes``: other nodes of the same cluster (their websocket URLs, or HTTP
        bases in HTTP mode), asked when ``base_url``'s node cannot be reached."""
        self.base_url = base_url.rstrip("/")
        """The node queried (the last one that answered)."""
        self.token = token  # (a property: it sets the HTTP headers too)
        self.timeout = timeout
        self.websocket = self.base_url.startswith(("ws://", "wss://"))
        self.nodes = Nodes([self.base_url, *(n.rstrip("/") for n in nodes)])
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refs = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._connecting = asyncio.Lock()
        self._http: dict[str, list[HttpConnection]] = {}
        """Per node (HTTP base URL), its kept-alive connections (at most
        :data:`HTTP_CONNECTIONS`)."""

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, token: str | None) -> None:
        self._token = token
        # The headers of every HTTP query, built once rather than per query.
        self._http_headers = {"Accept": "application/json"}
        if token:
            self._http_headers["Authorization"] = f"Bearer {token}"

    async def __aenter__(self) -> Leaderboards:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections: the websocket, or the kept-alive HTTP ones."""
        for pool in self._http.values():
            for http in pool:
                http.close()
        self._http.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def boards(self) -> dict[str, Any]:
        """Every board's definition and current period, with the position."""
        return await self.query("boards", {})

    async def periods(self, board: str) -> dict[str, Any]:
        return await self.query("periods", {"board": board})

    async def top(
        self,
        board: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        period: str | None = None,
        wait: int | None = None,
        timeout: float | None = None,
    ) -> Page:
        """The best ``limit`` entries, or the page after ``cursor``."""
        args = {"board": board, "limit": limit, "cursor": cursor, "period": period}
        return _page(await self.query("top", args, wait, timeout))

    async def entry(
        self,
        board: str,
        player: str,
        *,
        period: str | None = None,
        wait: int | None = None,
        timeout: float | None = None,
    ) -> tuple[Entry, Page]:
        """``player``'s rank and entry (the page has the board, period, position, count)."""
        args = {"board": board, "player": player, "period": period}
        body = await self.query("entry", args, wait, timeout)
        return _entry(body["entry"]), _page(body)

    async def around(
        self,
        board: str,
        player: str,
        *,
        limit: int = 21,
        period: str | None = None,
        wait: int | None = None,
        timeout: float | None = None,
    ) -> Page:
        """``limit`` entries around ``player``, ``player`` included."""
        args = {"board": board, "player": player, "limit": limit, "period": period}
        return _page(await self.query("around", args, wait, timeout))

    async def count(self, board: str, *, period: str | None = None) -> int:
        return (await self.query("count", {"board": board, "period": period}))["count"]

    async def query(
        self,
        query: str,
        args: dict[str, Any],
        wait: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One query; the answer is the server's JSON object as is."""
        args = {k: v for k, v in args.items() if v is not None}
        if wait is not None:
            args["wait"] = wait
        if timeout is not None:
            args["timeout"] = timeout
        # A waiting query may take its whole timeout on the server: allow for it.
        deadline = self.timeout + (timeout or 0)
        send = self._ws_query if self.websocket else self._http_query
        return await self._on_any_node(send, query, args, deadline)

    async def _on_any_node(
        self,
        send: Callable[[str, str, dict[str, Any], float], Awaitable[dict[str, Any]]],
        *query: Any,
    ) -> dict[str, Any]:
        """``send(url, *query)`` to the current node, then to every other known node in
        turn while none can be reached (the node list is fetched once, when needed)."""
        tried: set[str] = set()
        refreshed = False
        url = self.base_url
        while True:
            try:
                body = await send(url, *query)
            except (OSError, InvalidHandshake, ConnectionClosed) as exc:
                # OSError: refused, reset, timed out, a malformed answer; an error
                # answer (LeaderboardError) is an answer and is raised as it is.
                self.nodes.fail(url)
                tried.add(url)
                if not refreshed:
                    refreshed = True
                    await self.nodes.refresh(self.token)
                untried = [u for u in map(self._in_mode, self.nodes.order()) if u not in tried]
                if not untried:
                    raise exc
                url = untried[0]
                continue
            self.nodes.answered(url)
            self.base_url = url
            return body

    def _in_mode(self, url: str) -> str:
        """A node's URL for this client's transport: ``GET /api/nodes`` lists websocket
        URLs, which an HTTP client turns into the node's HTTP base."""
        return http_base(url) if not self.websocket and is_ws_url(url) else url

    # -- HTTP ------------------------------------------------------------------------------

    async def _http_query(
        self, url: str, query: str, args: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        http = self._connection_to(url)
        response = await http.request(
            "GET", _http_target(query, args), self._http_headers, timeout=timeout
        )
        try:
            body = orjson.loads(response.body)
            if response.status == 200:
                return body
            err = body["error"]
            error = LeaderboardError(response.status, err["code"], err["message"])
        except (ValueError, KeyError, TypeError):
            error = LeaderboardError(
                response.status, "http_error", f"HTTP {response.status}: {response.body[:200]!r}"
            )
        raise error

    def _connection_to(self, url: str) -> HttpConnection:
        """An idle kept-alive connection to ``url``, a new one while there are fewer than
        :data:`HTTP_CONNECTIONS`, else the one with the fewest queries waiting."""
        pool = self._http.setdefault(url, [])
        for http in pool:
            if not http.pending:
                return http
        if len(pool) < HTTP_CONNECTIONS:
            pool.append(HttpConnection(url, timeout=self.timeout))
            return pool[-1]
        return min(pool, key=lambda http: http.pending)

    def http_connections(self) -> int:
        """TCP connections opened so far in HTTP mode, to every node."""
        return sum(http.connections for pool in self._http.values() for http in pool)

    # -- websocket -------------------------------------------------------------------------

    async def _ws_query(
        self, url: str, query: str, args: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        ws = await self._connection(url)
        ref = next(self._refs)
        fut = self._replies[ref] = asyncio.get_running_loop().create_future()
        try:
            await ws.send(p.encode_leaderboard(ref, query, args))
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._replies.pop(ref, None)

    async def _connection(self, url: str) -> ClientConnection:
        async with self._connecting:
            if self._ws is not None and self._ws.state is State.OPEN and url != self.base_url:
                await self._ws.close()  # moving to another node
            if self._ws is None or self._ws.state is not State.OPEN:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                ws = await connect(
                    url,
                    subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers=headers,
                    max_size=None,
                    compression=None,
                    open_timeout=self.timeout,
                )
                welcome = p.decode_server(await ws.recv())  # type: ignore[arg-type]
                if not isinstance(welcome, p.Welcome):
                    await ws.close()
                    raise p.ProtocolError(p.E_MALFORMED, f"expected WELCOME, got {welcome!r}")
                self._ws = ws
                self._reader = asyncio.create_task(self._read(ws))
            return self._ws

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for data in ws:
                try:
                    msg = p.decode_server(data)  # type: ignore[arg-type]
                except p.ProtocolError:
                    continue
                if isinstance(msg, p.LeaderboardReply):
                    self._resolve(msg.ref, msg.body, None)
                elif isinstance(msg, p.Error) and isinstance(msg.ref, int):
                    status = _STATUS.get(msg.code, 400)
                    self._resolve(msg.ref, None, LeaderboardError(status, msg.code, msg.message))
        except ConnectionClosed:
            pass
        finally:
            lost = ConnectionError(f"connection closed ({ws.close_code})")
            for ref in list(self._replies):
                self._resolve(ref, None, lost)

    def _resolve(self, ref: int, body: dict[str, Any] | None, exc: Exception | None) -> None:
        fut = self._replies.get(ref)
        if fut is None or fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(body)  # type: ignore[arg-type]


def _http_target(query: str, args: dict[str, Any]) -> str:
    """The HTTP request target of ``(query, args)`` (the protocol's one route table)."""
    path, rest = p.leaderboard_path(query, args)
    return f"{path}?{urlencode(rest)}" if rest else path


# The HTTP status of each error code, so both transports raise the same error.
_STATUS = {
    cls.code: cls.status
    for cls in (
        lb_errors.BadCursorError,
        lb_errors.BadParameterError,
        lb_errors.LimitTooLargeError,
        lb_errors.UnknownBoardError,
        lb_errors.UnknownPeriodError,
        lb_errors.UnknownPlayerError,
    )
}
