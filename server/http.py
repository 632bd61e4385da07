"""Plain HTTP on the websocket port: a small route table served from ``process_request``.

websockets' handshake parser reads no request bodies, so write calls take their
parameters in the query string (``POST /api/matches?game=G&settings={...}``).
Add a route with :func:`route`; a handler gets ``(app, connection, request, params)``
and returns a :class:`websockets.http11.Response`. Responses are JSON unless
noted. Auth: ``Authorization: Bearer <token>`` or ``?token=<token>``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from replay.errors import MatchExistsError, ReplayError, UnknownMatchError
from replay.store.base import MatchRecord
from server import auth, leaderboard_api
from server.lobby import LobbyError
from server.match import JoinRefused
from server.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from server.app import App

__all__ = ["ROUTES", "dispatch", "request_token", "route"]

Params = dict[str, str]
Handler = Callable[["App", ServerConnection, Request, Params], Awaitable[Response]]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []
SPECTATOR_LIST_SCAN = 1000
"""Newest matches a non-admin ``GET /api/matches`` looks through for ones it may see
(one MatchRecord each, ~1 KiB)."""


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def add(handler: Handler) -> Handler:
        ROUTES.append((method, re.compile(pattern + r"\Z"), handler))
        return handler

    return add


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error shape of every JSON route, leaderboards included."""
    return {"error": {"code": code, "message": message}}


def respond(conn: ServerConnection, status: int, body: str, content_type: str) -> Response:
    response = conn.respond(HTTPStatus(status), body)
    del response.headers["Content-Type"]  # Headers is a multimap: replace, not add
    response.headers["Content-Type"] = content_type
    return response


def json_response(conn: ServerConnection, value: Any, status: int = 200) -> Response:
    return respond(conn, status, json.dumps(value) + "\n", "application/json")


def query(request: Request) -> Params:
    return {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}


def request_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return query(request).get("token")


def requester(app: App, request: Request) -> auth.Identity:
    """Who asks a read route: anonymous without a token, else the token's identity. A
    token that is sent must be valid (401): a stale link says so instead of silently
    reading as anonymous."""
    token = request_token(request)
    if not token:
        return auth.ANONYMOUS
    try:
        return auth.verify(app.secret, token, app.secret_origin)
    except auth.AuthError as exc:
        raise HttpError(401, "unauthorized", f"the server refused the token: {exc}") from None


def identity(app: App, request: Request, *roles: str) -> auth.Identity:
    token = request_token(request)
    if not token:
        raise HttpError(401, "unauthorized", "a token is required (Authorization: Bearer ...)")
    try:
        ident = auth.verify(app.secret, token, app.secret_origin)
    except auth.AuthError as exc:
        raise HttpError(401, "unauthorized", str(exc)) from None
    if roles and ident.role not in roles:
        raise HttpError(403, "forbidden", f"this call needs role {' or '.join(roles)}")
    return ident


async def dispatch(app: App, conn: ServerConnection, request: Request) -> Response:
    path = urlsplit(request.path).path
    allowed: list[str] = []
    for method, pattern, handler in ROUTES:
        m = pattern.match(path)
        if m is None:
            continue
        if method != request.method:
            allowed.append(method)
            continue
        try:
            return await handler(app, conn, request, m.groupdict())
        except HttpError as exc:
            return json_response(conn, error_body(exc.code, exc.message), exc.status)
        except UnknownMatchError as exc:
            return json_response(conn, error_body(exc.code, str(exc)), 404)
        except MatchExistsError as exc:
            return json_response(conn, error_body(exc.code, str(exc)), 409)
        except (LobbyError, ReplayError) as exc:
            return json_response(conn, error_body(exc.code, str(exc)), 400)
    if allowed:
        return json_response(conn, error_body("method_not_allowed", path), 405)
    return json_response(conn, error_body("not_found", f"no route {path}"), 404)


# -- routes --------------------------------------------------------------------------------


@route("GET", r"/healthz")
async def healthz(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    return json_response(
        conn,
        {"status": "ok", "matches": len(app.lobby.live), "connections": app.connections},
    )


@route("GET", r"/metrics")
async def metrics(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    return respond(conn, 200, app.metrics.render().decode(), CONTENT_TYPE)


@route("GET", r"/api/matches")
async def list_matches(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    q = query(request)
    limit = _int(q.get("limit", "100"), "limit", 1, 1000)
    ident = requester(app, request)
    if ident.role == "admin":
        return json_response(conn, await app.lobby.list(q.get("status"), limit))
    # Everyone else sees what a spectator may (docs/protocol.md 11.1, 11.3): the matches
    # it may watch, each at its delayed live edge, among the newest SPECTATOR_LIST_SCAN.
    records = await app.store.list_matches(status=q.get("status"), limit=SPECTATOR_LIST_SCAN)
    visible = [r for r in records if app.spectating.visible_to(ident, r)]
    return json_response(conn, [spectator_info(app, r, False) for r in visible[:limit]])


@route("GET", r"/api/matches/(?P<match_id>[^/]+)")
async def get_match(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    ident = requester(app, request)
    if ident.role == "admin":
        return json_response(conn, await app.lobby.describe(p["match_id"]))
    record = await app.store.get_match(p["match_id"])  # UnknownMatchError -> 404
    if not app.spectating.visible_to(ident, record):
        raise HttpError(403, "forbidden", f"not allowed to watch {record.match_id!r}")
    return json_response(conn, spectator_info(app, record, False))


def spectator_info(app: App, record: MatchRecord, privileged: bool) -> dict[str, Any]:
    """A match as a spectator may see it: ``tick`` is its live edge (``Spectating.edge``,
    the one delay rule), and nothing that counts what happened after it (``last_seq``)."""
    live = app.lobby.get_live(record.match_id)
    return {
        "match_id": record.match_id,
        "game": record.game,
        "status": live.status if live is not None else record.status,
        "tick": app.spectating.edge(record, privileged),
        "tick_rate": record.tick_rate,
        "players": live.info()["players"] if live is not None else list(record.players),
        "created_at": record.created_at,
        "ended_at": record.ended_at,
    }


@route("POST", r"/api/matches")
async def create_match(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    identity(app, request, "admin")
    q = query(request)
    try:
        settings = json.loads(q.get("settings", "{}"))
    except json.JSONDecodeError as exc:
        raise HttpError(400, "invalid_settings", f"settings is not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise HttpError(400, "invalid_settings", "settings must be a JSON object")
    match = await app.lobby.create(
        q.get("game", app.games.default),
        settings,
        start_players=_int(q["start_players"], "start_players", 1, 1 << 16)
        if "start_players" in q
        else None,
        match_id=q.get("match_id"),
        seed=_int(q["seed"], "seed", 0, 2**63 - 1) if "seed" in q else None,
    )
    return json_response(conn, match.info() | {"settings": match.record.settings}, 201)


@route("POST", r"/api/matches/(?P<match_id>[^/]+)/(?P<action>start|end)")
async def admin_action(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    ident = identity(app, request, "admin")
    match = _live(app, p["match_id"])
    action = p["action"]
    args = {"reason": "ended by admin"} if action == "end" else {}
    outcome: list[Any] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    match.command(ident.player, action, args, lambda r: (outcome.append(r), done.set_result(None)))
    await done
    if not isinstance(outcome[0], int):
        raise HttpError(409, outcome[0].code, outcome[0].reason)
    if action == "end":
        await match.stop("ended", "ended by admin")  # the match is over: waits for its finish
        return json_response(conn, match.info() | {"ended_tick": outcome[0]})
    return json_response(conn, match.info() | {"started_tick": outcome[0]})


@route("POST", r"/api/matches/(?P<match_id>[^/]+)/reserve")
async def reserve(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    ident = identity(app, request, "player", "admin")
    player = query(request).get("player", ident.player)
    if player != ident.player and ident.role != "admin":
        raise HttpError(403, "forbidden", "a player can only reserve a seat for itself")
    if not ident.may_enter(p["match_id"]):
        raise HttpError(403, "forbidden", f"this token is not for match {p['match_id']!r}")
    match = _live(app, p["match_id"])
    try:
        match.reserve(player)
    except JoinRefused as exc:
        raise HttpError(409, exc.code, exc.message) from None
    return json_response(
        conn, {"match_id": match.match_id, "player": player, "expires_in": match.seat_timeout}
    )


@route("POST", r"/api/tokens")
async def issue_token(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    identity(app, request, "admin")
    q = query(request)
    if "player" not in q:
        raise HttpError(400, "invalid_field", "player is required")
    try:
        token = auth.issue(
            app.secret,
            q["player"],
            q.get("role", "player"),
            q.get("match", auth.ANY_MATCH),
            float(q.get("ttl", app.settings.token_ttl)),
        )
    except ValueError as exc:
        raise HttpError(400, "invalid_field", str(exc)) from None
    return json_response(conn, {"token": token}, 201)


@route("GET", leaderboard_api.PREFIX + r"(?:/.*)?")
async def leaderboards(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    # The handler validates its own parameters and answers every bad one with a 4xx.
    status, body = await leaderboard_api.handle(
        app.leaderboards, "GET", urlsplit(request.path).path, query(request)
    )
    return json_response(conn, body, status)


def _live(app: App, match_id: str) -> Any:
    match = app.lobby.get_live(match_id)
    if match is None:
        raise HttpError(409, "match_over", f"match {match_id!r} is not running here")
    return match


def _int(raw: str, name: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "invalid_field", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise HttpError(400, "invalid_field", f"{name} must be in [{lo}, {hi}]")
    return value


# The spectator viewer's page and match-list routes (server/viewer_api.py) register themselves.
from server import viewer_api  # noqa: E402, F401
