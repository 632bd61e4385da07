"""Plain HTTP on the websocket port: route tables served from ``process_request``.

websockets' handshake parser reads no request bodies, so write calls take their
parameters in the query string (``POST /api/matches?game=G&settings={...}``).
Responses are JSON unless noted. Auth: ``Authorization: Bearer <token>`` or
``?token=<token>``.

A module of routes keeps a :class:`RouteTable`; its handlers take, first, the
narrow things they use (``MatchApi`` here: the lobby, the store, the spectator access
rules, the token checker), bound once by :meth:`RouteTable.bind`. The app hands the
bound routes of every module to one :class:`Router`. Nothing here knows the app.

Requests reach :meth:`Router.dispatch` from the connection (server/http_keepalive.py),
which keeps it alive between them; only websocket upgrades go through websockets'
handshake. A handler is a plain function when it can answer at once (the connection
then sends the answer without a task) and a coroutine function when it must wait; one
that waits only sometimes (leaderboards' ``wait=``) returns the answer or a coroutine.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from replay.audit import MAX_AUDIT_PAGE, audit
from replay.engine import ReplayEngine
from replay.errors import MatchExistsError, ReplayError, UnknownMatchError
from replay.leaderboards.projection import LeaderboardProjection
from replay.leaderboards.service import Leaderboards
from replay.machine import RewindError
from replay.protocol import (
    E_FORBIDDEN,
    E_MATCH_MOVING,
    E_SERVER_FULL,
    E_TOO_LARGE,
    LEADERBOARD_PREFIX,
    SUBPROTOCOL,
    ProtocolError,
    error_body,
    loads_limited,
    match_info,
)
from replay.store.base import EventStore, MatchRecord
from server import auth, leaderboard_api
from server.answer_cache import AnswerCache
from server.forking import ForkError, prepare_fork
from server.lobby import Lobby, LobbyError, MatchMovingError, ServerFullError
from server.match import JoinRefused, Match
from server.metrics import CONTENT_TYPE, Metrics
from server.proxy import FORWARDED_HEADER, ProxyError, forward, http_base

__all__ = [
    "SPECTATOR_LIST_SCAN",
    "Authenticator",
    "BoardsApi",
    "HttpError",
    "HttpRequest",
    "MatchApi",
    "RouteTable",
    "Router",
    "ValidHeaders",
    "json_response",
    "leaderboard_routes",
    "match_routes",
    "ops_routes",
    "query",
    "request_path",
    "request_token",
    "spectator_info",
    "split_target",
]

log = logging.getLogger(__name__)

Params = dict[str, str]
Handler = Callable[[ServerConnection, Request, Params], "Response | Awaitable[Response]"]
"""A route's handler: the answer, or an awaitable of it when it must wait (the store, a
match, another node). Plain ones are answered at once by the connection, no task."""
Route = tuple[str, re.Pattern[str], Handler]
Quick = Callable[[str, str], "Response | None"]
"""A route's answer from the request target alone (path, query string), for a request
that carries no credentials and no header that changes the answer: given at once, or
None when the request needs its route's handler after all (server/http_keepalive.py)."""
D = TypeVar("D")
MAX_TOKEN_TTL_S = 366 * 24 * 3600.0
"""Longest lifetime ``POST /api/tokens`` issues (``ttl``): a year and a day."""
SPECTATOR_LIST_SCAN = 1000
"""Newest matches a non-admin ``GET /api/matches`` looks through for ones it may see
(one MatchRecord each, ~1 KiB)."""


@dataclass
class HttpRequest(Request):
    """A plain HTTP request with its target split once: ``route_path`` (what routes
    match) and ``query_string``; :func:`query` parses the latter once."""

    route_path: str = ""
    query_string: str = ""
    _args: Params | None = None

    @classmethod
    def of(cls, path: str, headers: Headers, method: str, protocol: str) -> HttpRequest:
        route_path, query_string = split_target(path)
        return cls(path, headers, method, protocol, None, route_path, query_string)

    @property
    def args(self) -> Params:
        # Parsed on first use (not functools.cached_property: on 3.11 it takes a lock
        # per instance, a microsecond on every leaderboard query).
        if self._args is None:
            self._args = query_args(self.query_string)
        return self._args


def query_args(query_string: str) -> Params:
    """A query string's parameters, the last value of each."""
    return {k: v[-1] for k, v in parse_qs(query_string).items()} if query_string else {}


def split_target(target: str) -> tuple[str, str]:
    """A request target's path and query string, as ``urlsplit`` gives them. A target in
    origin form (``/path?query``, what clients send) is split without it: ~0.3 us
    against ~2."""
    if target[:1] == "/" and target[1:2] != "/" and not _URLSPLIT_CHANGES.search(target):
        path, _, query_string = target.partition("?")
        return path, query_string
    url = urlsplit(target)
    return url.path, url.query


_URLSPLIT_CHANGES = re.compile(r"[#\t\r\n]")
"""What makes ``urlsplit`` do more than split an origin-form target at its first ``?``: a
fragment, and the characters it removes."""


class RouteTable(Generic[D]):
    """The routes of one module, whose handlers take their dependencies ``D`` first."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = []

    def route(self, method: str, pattern: str) -> Callable[[Any], Any]:
        def add(handler: Callable[..., Any]) -> Any:
            self._routes.append((method, re.compile(pattern + r"\Z"), handler))
            return handler

        return add

    def at_once(self, handler: Callable[..., Any]) -> Callable[[Any], Any]:
        """Give ``handler``'s route a :data:`Quick` answer, which takes the dependencies
        first as the handler does."""

        def add(quick: Callable[..., Any]) -> Any:
            handler.at_once = quick
            return quick

        return add

    def bind(self, deps: D) -> list[Route]:
        routes: list[Route] = []
        for m, pattern, h in self._routes:
            bound = functools.partial(h, deps)
            if (quick := getattr(h, "at_once", None)) is not None:
                bound.at_once = functools.partial(quick, deps)  # type: ignore[attr-defined]
            routes.append((m, pattern, bound))
        return routes


_GROUP = re.compile(r"\(\?P<(\w+)>")


class Router:
    """Dispatches a request to the first route whose path matches.

    The routes of each method are one compiled alternation (each route's pattern a
    named group, in order: the first that matches wins, as when trying them one by
    one), so finding the route is one match in C whatever the number of routes; only
    a path no route of its method serves is tried against them all (405 or 404)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._by_method: dict[str, tuple[re.Pattern[str], dict[str, _Found]]] = {}
        for method in dict.fromkeys(m for m, _, _ in self.routes):
            alternatives, found = [], {}
            for i, (m, pattern, handler) in enumerate(self.routes):
                if m != method:
                    continue
                names = _GROUP.findall(pattern.pattern)
                assert "(?P=" not in pattern.pattern, "back references cannot be renamed"
                alternatives.append(
                    f"(?P<r{i}>"
                    + _GROUP.sub(lambda g, i=i: f"(?P<r{i}_{g[1]}>", pattern.pattern)
                    + ")"
                )
                found[f"r{i}"] = (handler, tuple((n, f"r{i}_{n}") for n in names))
            self._by_method[method] = (re.compile("|".join(alternatives)), found)

    def serves(self, path: str) -> bool:
        return any(pattern.match(path) for _, pattern, _ in self.routes)

    def at_once(self, target: str) -> Response | None:
        """The answer to ``GET target`` from the target alone, when the route it goes to
        has a :data:`Quick` answer and gives it (the caller sent no credentials nor any
        header that changes the answer); else None: :meth:`dispatch` answers it."""
        path, query_string = split_target(target)
        table = self._by_method.get("GET")
        m = table[0].match(path) if table is not None else None
        if m is None:
            return None
        handler, _ = table[1][m.lastgroup]  # type: ignore[index,union-attr]
        quick: Quick | None = getattr(handler, "at_once", None)
        answer = quick(path, query_string) if quick is not None else None
        if answer is not None:
            log.debug("GET %s %d", path, answer.status_code)
        return answer

    def dispatch(self, conn: ServerConnection, request: Request) -> Response | Awaitable[Response]:
        """The answer, at once when the route's handler needs no waiting, else an
        awaitable of it (the connection awaits it in a task)."""
        if not isinstance(request, HttpRequest):
            request = HttpRequest.of(
                request.path, request.headers, request.method, request.protocol
            )
        path = request.route_path
        try:
            answer = self._answer(conn, request, path)
        except Exception as exc:
            answer = self._refusal(conn, request, path, exc)
        if isinstance(answer, Response):
            # The access log: one line per request, at DEBUG (the path only: the query
            # string may hold a token).
            log.debug("%s %s %d", request.method, path, answer.status_code)
            return answer
        return self._finish(conn, request, path, answer)

    async def _finish(
        self, conn: ServerConnection, request: Request, path: str, pending: Awaitable[Response]
    ) -> Response:
        try:
            response = await pending
        except Exception as exc:
            refusal = self._refusal(conn, request, path, exc)
            response = refusal if isinstance(refusal, Response) else await refusal
        log.debug("%s %s %d", request.method, path, response.status_code)
        return response

    def _answer(
        self, conn: ServerConnection, request: HttpRequest, path: str
    ) -> Response | Awaitable[Response]:
        table = self._by_method.get(request.method)
        m = table[0].match(path) if table is not None else None
        if m is None:
            if any(pattern.match(path) for _, pattern, _ in self.routes):
                return json_response(conn, error_body("method_not_allowed", path), 405)
            return json_response(conn, error_body("not_found", f"no route {path}"), 404)
        handler, groups = table[1][m.lastgroup]  # type: ignore[index]
        return handler(conn, request, {name: m[group] for name, group in groups})

    def _refusal(
        self, conn: ServerConnection, request: Request, path: str, exc: Exception
    ) -> Response | Awaitable[Response]:
        """The answer to a handler's exception (raised again when it is a bug)."""
        if isinstance(exc, Elsewhere):  # a cluster: the node that runs the match answers
            return self._forward(conn, request, exc.base)
        if isinstance(exc, HttpError):
            return json_response(conn, error_body(exc.code, exc.message), exc.status)
        if isinstance(exc, UnknownMatchError):
            return json_response(conn, error_body(exc.code, str(exc)), 404)
        if isinstance(exc, MatchExistsError):
            return json_response(conn, error_body(exc.code, str(exc)), 409)
        if isinstance(exc, ServerFullError | MatchMovingError):  # try later, or another node
            return json_response(conn, error_body(exc.code, str(exc)), 503)
        if isinstance(exc, LobbyError | ReplayError):
            return json_response(conn, error_body(exc.code, str(exc)), 400)
        if isinstance(exc, RecursionError | OverflowError):
            # The decoders bound depth and size; this is the backstop that keeps a
            # value they missed from becoming a 500 with a traceback.
            log.warning("%s %s: %r", request.method, path, exc)
            return json_response(conn, error_body(E_TOO_LARGE, "value too large"), 400)
        raise exc

    async def _forward(self, conn: ServerConnection, request: Request, base: str) -> Response:
        try:
            return await forward(base, request)
        except ProxyError as err:
            return json_response(conn, error_body(E_MATCH_MOVING, str(err)), 503)


_Found = tuple[Handler, tuple[tuple[str, str], ...]]
"""A route's handler and its path parameters: (name, group name in the alternation)."""


class Elsewhere(Exception):
    """The request is for another node of the cluster: forward it to ``base``."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.base = base


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def respond(
    conn: ServerConnection | None, status: int, body: str | bytes, content_type: str
) -> Response:
    """An answer to a plain HTTP request (``conn``: the handlers' one call shape; None for
    an answer given at once, which has none); the connection adds its ``Connection``
    header (server/http_keepalive.py)."""
    data = body if isinstance(body, bytes) else body.encode()
    headers = ValidHeaders(
        [("Date", http_date()), ("Content-Length", str(len(data))), ("Content-Type", content_type)]
    )
    return Response(status, _REASONS.get(status) or HTTPStatus(status).phrase, headers, data)


_REASONS = {s.value: s.phrase for s in HTTPStatus}


class ValidHeaders(Headers):
    """Headers known to be valid (the server's own, or checked by a parser), built in one
    step: websockets' ``Headers([...])`` goes through ``MutableMapping.update`` and checks
    each value again, ~5 us per answer against ~1. The same object otherwise."""

    __slots__ = ()

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._dict: dict[str, list[str]] = {}
        for name, value in items:
            self._dict.setdefault(name.lower(), []).append(value)
        self._list = items


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` header of this second (formatted once per second, not per answer)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def json_response(conn: ServerConnection, value: Any, status: int = 200) -> Response:
    return respond(conn, status, json_bytes(value), "application/json")


def json_bytes(value: Any) -> bytes:
    """An answer's JSON body (with a final newline)."""
    # orjson: a top-100 leaderboard page in ~10 us against ~180 us (json module); keys
    # that are not strings (ints) double that, so they are allowed only when present.
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        try:
            return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:  # an integer past 64 bits (user settings): json's answer
            return (json.dumps(value) + "\n").encode()


def query(request: Request) -> Params:
    """The query string's parameters (the last value of each), parsed once per request."""
    if isinstance(request, HttpRequest):
        return request.args
    return {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}


def request_path(request: Request) -> str:
    """The path of the request's target, without its query string."""
    if isinstance(request, HttpRequest):
        return request.route_path
    return split_target(request.path)[0]


def request_token(request: Request) -> str | None:
    # The last one counts, as for query parameters (and no KeyError raised when absent).
    authorization = request.headers.get_all("Authorization")
    header = authorization[-1] if authorization else ""
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return query(request).get("token")


class Authenticator:
    """Who makes a request, from its token: the one thing routes need of the secret."""

    def __init__(self, secret: str, origin: str) -> None:
        self._secret = secret
        self._origin = origin
        """Where the secret comes from: a refused signature says so (server/auth.py)."""

    def requester(self, request: Request) -> auth.Identity:
        """Who asks a read route: anonymous without a token, else the token's identity.
        A token that is sent must be valid (401): a stale link says so instead of
        silently reading as anonymous."""
        token = request_token(request)
        if not token:
            return auth.ANONYMOUS
        try:
            return auth.verify(self._secret, token, self._origin)
        except auth.AuthError as exc:
            raise HttpError(401, "unauthorized", f"the server refused the token: {exc}") from None

    def require(self, request: Request, *roles: str) -> auth.Identity:
        """The token's identity, which must have one of ``roles`` (401, 403)."""
        token = request_token(request)
        if not token:
            raise HttpError(401, "unauthorized", "a token is required (Authorization: Bearer ...)")
        try:
            ident = auth.verify(self._secret, token, self._origin)
        except auth.AuthError as exc:
            raise HttpError(401, "unauthorized", str(exc)) from None
        if roles and ident.role not in roles:
            raise HttpError(403, "forbidden", f"this call needs role {' or '.join(roles)}")
        return ident

    def issue(self, player: str, role: str, match: str, ttl: float) -> str:
        return auth.issue(self._secret, player, role, match, ttl)


class SpectatorAccess(Protocol):
    """The two spectating rules a match listing follows (docs/protocol.md 11.1, 11.3)."""

    def visible_to(self, ident: auth.Identity, record: MatchRecord) -> bool: ...

    def edge(self, record: MatchRecord, privileged: bool) -> int: ...


def spectator_info(
    lobby: Lobby, access: SpectatorAccess, record: MatchRecord, privileged: bool
) -> dict[str, Any]:
    """A match as a spectator may see it: ``tick`` is its live edge (the one delay
    rule), and nothing that counts what happened after it (``last_seq``)."""
    live = lobby.get_live(record.match_id)
    return match_info(
        record,
        status=live.status if live is not None else None,
        tick=access.edge(record, privileged),
        players=live.info()["players"] if live is not None else None,
    )


# -- operations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ops:
    metrics: Metrics
    lobby: Lobby
    connections: Callable[[], int]
    """Connections open now: websocket sessions and plain HTTP ones kept alive."""
    projection: LeaderboardProjection
    """Its health: damaged batches passed over."""
    nodes: Callable[[], list[dict[str, Any]]] | None = None
    """A cluster node: the nodes heard from lately (server/cluster.py)."""

    def headroom(self) -> dict[str, Any]:
        """The admission figures (server/headroom.py), also set on the gauges."""
        report = self.lobby.headroom.report(self.lobby.seated())
        self.metrics.cpu.set(report["cpu"])
        self.metrics.tick_lateness.set(report["tick_lateness_p90_s"])
        self.metrics.seated_players.set(report["players"])
        self.metrics.full.set(1 if report["full"] else 0)
        self.metrics.leaderboard_skipped_batches.set(self.projection.skipped_batches)
        self.metrics.store_damaged_matches.set(len(self.lobby.store.damaged))
        return report


_ops: RouteTable[Ops] = RouteTable()
ops_routes = _ops.bind


@_ops.route("GET", r"/healthz")
async def healthz(ops: Ops, conn: ServerConnection, request: Request, _: Params) -> Response:
    body: dict[str, Any] = {
        "status": "ok",
        "matches": len(ops.lobby.live),
        "connections": ops.connections(),
        "headroom": ops.headroom(),  # "full": new players and matches get server_full
    }
    if (down := await ops.lobby.store.check_available()) is not None:  # 503 until it is back
        return json_response(conn, body | {"status": "unavailable", "unavailable": str(down)}, 503)
    # Serving, but part of the data is passed over (docs/operations.md): still 200.
    if (reason := ops.projection.degraded()) is not None:
        body |= {"status": "degraded", "degraded": {"leaderboards": reason}}
    if damaged := ops.lobby.store.damaged:  # left out of listings (docs/operations.md)
        reasons = [f"{m}: {why}" for m, why in sorted(damaged.items())[:10]]
        body["status"] = "degraded"
        body.setdefault("degraded", {})["matches"] = f"{len(damaged)} damaged: {'; '.join(reasons)}"
    return json_response(conn, body)


@_ops.route("GET", r"/api/nodes")
def nodes(ops: Ops, conn: ServerConnection, request: Request, _: Params) -> Response:
    """The cluster's nodes with status and load (docs/operations.md, "A cluster"); a single
    server lists none."""
    return json_response(conn, {"nodes": ops.nodes() if ops.nodes is not None else []})


@_ops.route("GET", r"/metrics")
def metrics(ops: Ops, conn: ServerConnection, request: Request, _: Params) -> Response:
    ops.headroom()
    return respond(conn, 200, ops.metrics.render().decode(), CONTENT_TYPE)


@_ops.route("GET", r"/ws")
def websocket_path(ops: Ops, conn: ServerConnection, request: Request, _: Params) -> Response:
    """``/ws`` asked for as a page (a browser, curl): say what it is instead of a 404."""
    return json_response(
        conn,
        error_body(
            "upgrade_required",
            f"/ws is the websocket endpoint: connect with a WebSocket client offering"
            f" Sec-WebSocket-Protocol: {SUBPROTOCOL} (docs/protocol.md: a session in order,"
            f" section 10: a minimal client). The viewer is at /, the HTTP API under /api"
            f" (docs/protocol.md section 8).",
        ),
        426,
    )


# -- matches and tokens ---------------------------------------------------------------------


@dataclass(frozen=True)
class MatchApi:
    lobby: Lobby
    store: EventStore
    access: SpectatorAccess
    auth: Authenticator
    default_game: str
    token_ttl: float
    """Default lifetime of tokens issued by ``POST /api/tokens``."""
    placement: Placement | None = None
    """A cluster node's choice of node for a new match (server/cluster.py)."""


class Placement(Protocol):
    def place(self, name: str | None = None) -> str | None:
        """The websocket URL of the node a new match goes to; None: this node."""


_matches: RouteTable[MatchApi] = RouteTable()
match_routes = _matches.bind


@_matches.route("GET", r"/api/matches")
async def list_matches(
    api: MatchApi, conn: ServerConnection, request: Request, _: Params
) -> Response:
    q = query(request)
    limit = _int(q.get("limit", "100"), "limit", 1, 1000)
    ident = api.auth.requester(request)
    if ident.role == "admin":
        return json_response(conn, await api.lobby.list(q.get("status"), limit))
    # Everyone else sees what a spectator may (docs/protocol.md 11.1, 11.3): the matches
    # it may watch, each at its delayed live edge, among the newest SPECTATOR_LIST_SCAN.
    records = await api.store.list_matches(status=q.get("status"), limit=SPECTATOR_LIST_SCAN)
    visible = [r for r in records if api.access.visible_to(ident, r)]
    return json_response(
        conn, [spectator_info(api.lobby, api.access, r, False) for r in visible[:limit]]
    )


@_matches.route("GET", r"/api/matches/(?P<match_id>[^/]+)")
async def get_match(api: MatchApi, conn: ServerConnection, request: Request, p: Params) -> Response:
    ident = api.auth.requester(request)
    if ident.role == "admin":
        return json_response(conn, await api.lobby.describe(p["match_id"]))
    record = await api.store.get_match(p["match_id"])  # UnknownMatchError -> 404
    if not api.access.visible_to(ident, record):
        raise HttpError(403, "forbidden", f"not allowed to watch {record.match_id!r}")
    return json_response(conn, spectator_info(api.lobby, api.access, record, False))


@_matches.route("POST", r"/api/matches")
async def create_match(
    api: MatchApi, conn: ServerConnection, request: Request, _: Params
) -> Response:
    ident = api.auth.require(request, "admin")
    q = query(request)
    try:
        settings = loads_limited(q.get("settings", "{}"))
    except ProtocolError as exc:
        raise HttpError(400, exc.code, f"settings: {exc.message}") from None
    except ValueError as exc:
        raise HttpError(400, "invalid_settings", f"settings is not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise HttpError(400, "invalid_settings", "settings must be a JSON object")
    if api.placement is not None and not forwarded(request):
        try:
            target = api.placement.place(q.get("node"))
        except LookupError as exc:
            raise HttpError(404, "unknown_node", str(exc)) from None
        if target is not None:
            raise Elsewhere(http_base(target))
    match = await api.lobby.create(
        q.get("game", api.default_game),
        settings,
        start_players=_int(q["start_players"], "start_players", 1, 1 << 16)
        if "start_players" in q
        else None,
        match_id=q.get("match_id"),
        seed=_int(q["seed"], "seed", 0, 2**63 - 1) if "seed" in q else None,
    )
    match.note_admin(ident.player, "create", q.get("reason", ""))
    return json_response(conn, match.info() | {"settings": match.record.settings}, 201)


@_matches.route("POST", r"/api/matches/(?P<match_id>[^/]+)/(?P<action>start|end)")
async def admin_action(
    api: MatchApi, conn: ServerConnection, request: Request, p: Params
) -> Response:
    ident = api.auth.require(request, "admin")
    match = await _live(api, p["match_id"], request)
    action = p["action"]
    reason = query(request).get("reason", "")  # the audit trail's why (an end's reason too)
    args = {"reason": reason or "ended by admin"} if action == "end" else {"reason": reason}
    outcome: list[Any] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    match.command(ident.player, action, args, lambda r: (outcome.append(r), done.set_result(None)))
    await done
    if not isinstance(outcome[0], int):
        raise HttpError(409, outcome[0].code, outcome[0].reason)
    if action == "end":
        await match.stop("ended", args["reason"])  # the match is over: waits for its finish
        return json_response(conn, match.info() | {"ended_tick": outcome[0]})
    return json_response(conn, match.info() | {"started_tick": outcome[0]})


@_matches.route("POST", r"/api/matches/(?P<match_id>[^/]+)/kick")
async def kick(api: MatchApi, conn: ServerConnection, request: Request, p: Params) -> Response:
    """``?player=P&reason=...``: P gives its seat up at the next tick, its connection is
    closed (4003) and it may not take a seat in this match again (docs/protocol.md 8)."""
    ident = api.auth.require(request, "admin")
    q = query(request)
    if "player" not in q:
        raise HttpError(400, "invalid_field", "player (the one to kick) is required")
    match = await _live(api, p["match_id"], request)
    if not match.kick(q["player"], actor=ident.player, reason=q.get("reason", "")):
        raise HttpError(409, "not_seated", f"{q['player']!r} holds no seat in {match.match_id!r}")
    return json_response(conn, match.info() | {"kicked": q["player"]})


@_matches.route("POST", r"/api/matches/(?P<match_id>[^/]+)/reserve")
async def reserve(api: MatchApi, conn: ServerConnection, request: Request, p: Params) -> Response:
    ident = api.auth.require(request, "player", "admin")
    player = query(request).get("player", ident.player)
    if player != ident.player and ident.role != "admin":
        raise HttpError(403, "forbidden", "a player can only reserve a seat for itself")
    if not ident.may_enter(p["match_id"]):
        raise HttpError(403, "forbidden", f"this token is not for match {p['match_id']!r}")
    match = await _live(api, p["match_id"], request)
    try:
        match.reserve(player)
    except JoinRefused as exc:
        status = {E_SERVER_FULL: 503, E_FORBIDDEN: 403}.get(exc.code, 409)
        raise HttpError(status, exc.code, exc.message) from None
    return json_response(
        conn, {"match_id": match.match_id, "player": player, "expires_in": match.seat_timeout}
    )


@_matches.route("POST", r"/api/tokens")
async def issue_token(
    api: MatchApi, conn: ServerConnection, request: Request, _: Params
) -> Response:
    api.auth.require(request, "admin")
    q = query(request)
    if "player" not in q:
        raise HttpError(400, "invalid_field", "player is required")
    try:
        token = api.auth.issue(
            q["player"],
            q.get("role", "player"),
            q.get("match", auth.ANY_MATCH),
            _number(q["ttl"], "ttl", 1.0, MAX_TOKEN_TTL_S) if "ttl" in q else api.token_ttl,
        )
    except ValueError as exc:
        raise HttpError(400, "invalid_field", str(exc)) from None
    return json_response(conn, {"token": token}, 201)


def forwarded(request: Request) -> bool:
    """Another node sent this request here: answer it, never forward it again."""
    return FORWARDED_HEADER in request.headers


async def _live(api: MatchApi, match_id: str, request: Request) -> Match:
    """The match if it runs here; on a cluster the node it runs on answers (Elsewhere);
    else 404 ``unknown_match`` or 409 ``match_over``."""
    match = await api.lobby.locate(match_id)  # MatchMovingError: 503, retry
    if isinstance(match, str):
        if forwarded(request):  # the nodes disagree for a moment: the client retries
            raise MatchMovingError(f"match {match_id!r} is moving between nodes")
        raise Elsewhere(http_base(match))
    if match is None:
        record = await api.store.get_match(match_id)  # UnknownMatchError -> 404
        where = "" if record.status in ("ended", "interrupted") else ", not on this server"
        raise HttpError(409, "match_over", f"match {match_id!r} is {record.status}{where}")
    return match


def _number(raw: str, name: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, "invalid_field", f"{name} must be a number") from None
    if not lo <= value <= hi:  # NaN and infinities too
        raise HttpError(400, "invalid_field", f"{name} must be in [{lo:g}, {hi:g}]")
    return value


def _int(raw: str, name: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "invalid_field", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise HttpError(400, "invalid_field", f"{name} must be in [{lo}, {hi}]")
    return value


# -- leaderboards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardsApi:
    service: Leaderboards
    auth: Authenticator
    """Whether a caller is anonymous: it sees private matches' players hidden."""
    answers: AnswerCache = field(default_factory=AnswerCache)
    """Anonymous answers kept while the boards are unchanged (server/answer_cache.py)."""


_boards: RouteTable[BoardsApi] = RouteTable()
leaderboard_routes = _boards.bind


@_boards.route("GET", LEADERBOARD_PREFIX + r"(?:/.*)?")
def leaderboards(
    api: BoardsApi, conn: ServerConnection, request: Request, _: Params
) -> Response | Awaitable[Response]:
    """Answered at once (the boards are in memory), but for read-your-writes (``wait``)."""
    # The handler validates its own parameters and answers every bad one with a 4xx.
    anonymous = api.auth.requester(request) is auth.ANONYMOUS  # a bad token: 401
    path, query_string = split_target(request.path)
    args = query(request)
    answer = _board_answer(api, path, query_string, args, anonymous)
    if answer is None:
        return _leaderboards_later(api.service, conn, path, args, anonymous)
    return answer


@_boards.at_once(leaderboards)
def leaderboards_at_once(api: BoardsApi, path: str, query_string: str) -> Response | None:
    """:func:`leaderboards` for a request without credentials: anonymous, answered from
    the target alone. A ``token`` parameter is checked by :func:`leaderboards` (None)."""
    args = query_args(query_string)
    if "token" in args:
        return None
    return _board_answer(api, path, query_string, args, anonymous=True)


def _board_answer(
    api: BoardsApi, path: str, query_string: str, args: Params, anonymous: bool
) -> Response | None:
    """The answer now, or None when it waits for a position (``wait``). An anonymous
    answer is kept under its target while the boards are unchanged (``api.answers``)."""
    target = f"{path}?{query_string}"
    stamp = api.service.stamp() if anonymous else None
    kept = api.answers.get(target, stamp) if anonymous else None
    if kept is not None:
        return respond(None, kept[0], kept[1], "application/json")
    answer = leaderboard_api.handle_now(api.service, "GET", path, args, anonymous)
    if answer is None:
        return None
    status, body = answer[0], json_bytes(answer[1])
    if anonymous and status == 200:
        api.answers.put(target, stamp, status, body)
    return respond(None, status, body, "application/json")


async def _leaderboards_later(
    service: Leaderboards, conn: ServerConnection, path: str, args: Params, anonymous: bool
) -> Response:
    status, body = await leaderboard_api.handle(service, "GET", path, args, anonymous)
    return json_response(conn, body, status)


# -- rewinds (docs/replay.md "Rewinds and forks") --------------------------------------------


@_matches.route("POST", r"/api/matches/(?P<match_id>[^/]+)/rewind")
async def rewind_match(
    api: MatchApi, conn: ServerConnection, request: Request, p: Params
) -> Response:
    """``?to=T&reason=...``: the match goes on from the exact state of tick T at the next
    tick B; answers once B is durable: ``{"match_id", "to_tick", "rewound_tick": B}``."""
    ident = api.auth.require(request, "admin")
    q = query(request)
    if "to" not in q:
        raise HttpError(400, "invalid_field", "to (the tick to rewind to) is required")
    to_tick = _int(q["to"], "to", 0, 2**31 - 1)
    match = await _live(api, p["match_id"], request)
    try:
        tick = await match.rewind(to_tick, actor=ident.player, reason=q.get("reason", ""))
    except RewindError as exc:
        raise HttpError(409, exc.code, str(exc)) from None
    return json_response(
        conn, {"match_id": match.match_id, "to_tick": to_tick, "rewound_tick": tick}
    )


@_matches.route("POST", r"/api/matches/(?P<match_id>[^/]+)/fork")
async def fork_match(
    api: MatchApi, conn: ServerConnection, request: Request, p: Params
) -> Response:
    """``?at=T[&match_id=ID]``: a new live match from the exact state of the parent's tick T
    (running, ended or imported); 201 with the fork's info and its ``forked_from``."""
    ident = api.auth.require(request, "admin")
    q = query(request)
    if "at" not in q:
        raise HttpError(400, "invalid_field", "at (the parent's tick) is required")
    at_tick = _int(q["at"], "at", 0, 2**31 - 1)
    try:
        start = await prepare_fork(api.store, api.lobby.games, p["match_id"], at_tick)
    except ForkError as exc:
        raise HttpError(409, exc.code, str(exc)) from None
    parent = start.parent
    match = await api.lobby.create(
        parent.game, parent.settings, match_id=q.get("match_id"), seed=parent.seed, fork=start
    )
    origin = {"match_id": parent.match_id, "tick": at_tick, "players": start.players}
    match.note_admin(ident.player, "fork", q.get("reason", ""), origin)
    return json_response(conn, match.info() | {"forked_from": origin}, 201)


@_matches.route("GET", r"/api/matches/(?P<match_id>[^/]+)/audit")
async def match_audit(
    api: MatchApi, conn: ServerConnection, request: Request, p: Params
) -> Response:
    """``?player=&from=&to=&limit=``: the audit trail (replay/audit.py), one page. An admin
    reads any of it; a player only its own (``player`` is itself, and no admin actions)."""
    ident = api.auth.require(request, "admin", "player")
    q = query(request)
    player = q.get("player")
    if ident.role != "admin":
        if player not in (None, ident.player):
            raise HttpError(403, "forbidden", "a player can only read its own audit")
        player = ident.player
    page = await audit(
        ReplayEngine(api.store, api.lobby.games, cache_bytes=0),
        p["match_id"],
        player=player,
        from_tick=_int(q.get("from", "0"), "from", 0, 2**31 - 1),
        to_tick=_int(q["to"], "to", 0, 2**31 - 1) if "to" in q else None,
        limit=_int(q.get("limit", "1000"), "limit", 1, MAX_AUDIT_PAGE),
    )
    return json_response(conn, page)
