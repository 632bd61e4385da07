"""HTTP routes of the spectator replay viewer: the page itself and the data it reads.

The page (``server/static/``, docs/viewer.md) is served from the installed package
at ``/`` and ``/static/...``: no build step, no separate web server. Its data:

    GET /api/viewer/matches                     match list with standings and duration
    GET /api/viewer/matches/{id}                 metadata: status, tick rate, live edge, delay
    GET /api/viewer/matches/{id}/state?tick=T    msgpack [base_tick, keyframe]: a fragment base
    GET /api/viewer/matches/{id}/events?from&to  msgpack [from, to, live_edge, batch]
    GET /api/viewer/matches/{id}/markers         timeline markers (JSON)
    GET /api/viewer/matches/{id}/clip?tick=T     the seconds before the kill at tick T (JSON)

A seek answers a *fragment base*, not the asked tick: the state at the multiple of
``FRAGMENT_TICKS`` at or before it (CS:GO broadcast fragments, League keyframes). The
page folds the events after it itself, so every seek exercises its fold, and the
server's state cache holds one state per fragment instead of one per asked tick.

Access and the delay are the spectator protocol's own (docs/protocol.md, "Spectating"),
through the same two calls as WATCH: ``Spectating.visible_to`` (token-less requests see
only ``public_spectating`` matches; spectator tokens their match; players none) and
``Spectating.edge`` (THE delay rule: nothing past a requester's live edge is ever served;
admins see the last durable tick).
"""

from __future__ import annotations

import mimetypes
import weakref
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from replay.codec import pack
from replay.engine import ReplayEngine
from replay.errors import TickOutOfRangeError
from replay.source import read_events
from replay.store.base import READ_ONLY_STATUSES
from replay.timeline import Timeline
from server import auth, http
from server.http import HttpError, Params, json_response, query, request_token, route

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from server.app import App

__all__ = ["FRAGMENT_TICKS", "MAX_EVENT_TICKS", "STATIC_DIR"]

STATIC_DIR = Path(__file__).parent / "static"
FRAGMENT_TICKS = 90
"""Seek bases are multiples of this (3 s at 30 Hz): a seek folds at most 89 ticks in
the page (~40 KiB of events at 64 players) on top of one cached server state."""
MAX_EVENT_TICKS = 900
"""Ticks per events request: 30 s at 30 Hz, ~60-600 KiB of events (10-64 players)."""
MATCH_LIST_SCOREBOARDS = 50
"""Matches of a list that get standings (each costs one cached state, ~10 KiB)."""

_CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


class _Viewer:
    """What the routes keep per server: the static files read so far. The replay engine
    and timeline are the spectating ones (one cache per server)."""

    def __init__(self, app: App) -> None:
        self.engine: ReplayEngine = app.spectating.engine
        self.timeline: Timeline = app.spectating.timeline
        self.files: dict[str, tuple[bytes, str]] = {}


_viewers: weakref.WeakKeyDictionary[Any, _Viewer] = weakref.WeakKeyDictionary()


def _viewer(app: App) -> _Viewer:
    viewer = _viewers.get(app)
    if viewer is None:
        viewer = _viewers[app] = _Viewer(app)
    return viewer


def _identity(app: App, request: Request) -> auth.Identity:
    """Who asks: anonymous without a token, else the token's identity. A token that is
    sent must be valid: a page opened with a stale or forged token says so instead of
    silently watching anonymously."""
    token = request_token(request)
    if not token:
        return auth.ANONYMOUS
    try:
        return auth.verify(app.secret, token)
    except auth.AuthError as exc:
        raise HttpError(401, "unauthorized", f"the server refused the token: {exc}") from None


def _binary(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _int(q: Params, name: str, default: int | None = None) -> int:
    raw = q.get(name)
    if raw is None:
        if default is None:
            raise HttpError(400, "invalid_field", f"{name} is required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise HttpError(400, "invalid_field", f"{name} must be an integer") from None


async def _edge(app: App, ident: auth.Identity, match_id: str) -> dict[str, Any]:
    """Status, live edge and delay of a match for ``ident``; 403 if it may not watch it."""
    engine = _viewer(app).engine
    record = await engine.match(match_id, refresh=True)  # UnknownMatchError -> 404
    if not app.spectating.visible_to(ident, match_id):
        raise HttpError(
            403,
            "forbidden",
            f"match {match_id!r} is not public: open it with a spectator token (?token=...)"
            if not ident.player
            else f"this token may not watch match {match_id!r}",
        )
    privileged = ident.role == "admin"
    live = record.status not in READ_ONLY_STATUSES
    return {
        "match_id": record.match_id,
        "game": record.game,
        "status": record.status,
        "tick_rate": record.tick_rate,
        "live": live,
        "delay_s": 0.0 if privileged else app.spectating.options_of(match_id).delay,
        "live_edge": app.spectating.edge(record, privileged),
        "players": list(record.players),
        "max_players": record.settings.get("max_players"),
    }


# -- the page ------------------------------------------------------------------------------


@route("GET", r"/")
async def index(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    return _static_file(app, "index.html")


@route("GET", r"/static/(?P<path>[A-Za-z0-9_\-./]+)")
async def static(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    return _static_file(app, p["path"])


def _static_file(app: App, rel: str) -> Response:
    files = _viewer(app).files
    cached = files.get(rel)
    if cached is None:
        path = (STATIC_DIR / rel).resolve()
        # Invariant: only files under STATIC_DIR are served ("..", symlinks out refused).
        if not path.is_relative_to(STATIC_DIR.resolve()) or not path.is_file():
            raise HttpError(404, "not_found", f"no file {rel}")
        kind = _CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        cached = files[rel] = (path.read_bytes(), kind or "application/octet-stream")
    return _binary(200, *cached)


# -- the data ------------------------------------------------------------------------------


@route("GET", r"/api/viewer/matches")
async def matches(app: App, conn: ServerConnection, request: Request, _: Params) -> Response:
    ident = _identity(app, request)
    q = query(request)
    limit = _int(q, "limit", 50)
    if not 1 <= limit <= 1000:
        raise HttpError(400, "invalid_field", "limit must be in [1, 1000]")
    engine = _viewer(app).engine
    out = []
    listed = [
        i
        for i in await app.lobby.list(q.get("status"), limit)
        if app.spectating.visible_to(ident, i["match_id"])
    ]
    for i, info in enumerate(listed):
        edge = await _edge(app, ident, info["match_id"])
        item = {
            k: info.get(k) for k in ("match_id", "game", "status", "tick", "tick_rate", "players")
        }
        # What this requester may see: the tick and standings at its live edge.
        item["tick"] = edge["live_edge"]
        item["duration_s"] = round(edge["live_edge"] / (info.get("tick_rate") or 1), 1)
        item["standings"] = None
        if i < MATCH_LIST_SCOREBOARDS:
            item["standings"] = await engine.scoreboard_at(info["match_id"], edge["live_edge"])
        out.append(item)
    # The page asks for leaderboards only where a route serves them, so a server without
    # them shows "not enabled" instead of a failed request.
    boards = any(m.match("/api/leaderboards") for _, m, _ in http.ROUTES)
    return json_response(conn, {"matches": out, "leaderboards": boards})


@route("GET", r"/api/viewer/matches/(?P<match_id>[^/]+)")
async def meta(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    edge = await _edge(app, _identity(app, request), p["match_id"])
    return json_response(conn, edge | {"fragment": FRAGMENT_TICKS})


@route("GET", r"/api/viewer/matches/(?P<match_id>[^/]+)/state")
async def state(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    edge = await _edge(app, _identity(app, request), p["match_id"])
    tick = _int(query(request), "tick")
    if not 0 <= tick <= edge["live_edge"]:
        raise TickOutOfRangeError(p["match_id"], tick, edge["live_edge"])
    base = tick - tick % FRAGMENT_TICKS
    engine = _viewer(app).engine
    record = await engine.match(p["match_id"])
    state = await engine.state_at(p["match_id"], base)
    keyframe = engine.rules(record).encode_state(state)
    return _binary(200, pack([base, keyframe]), "application/msgpack")


@route("GET", r"/api/viewer/matches/(?P<match_id>[^/]+)/events")
async def events(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    q = query(request)
    edge = await _edge(app, _identity(app, request), p["match_id"])
    first = _int(q, "from")
    last = min(_int(q, "to"), edge["live_edge"], first + MAX_EVENT_TICKS - 1)
    if first < 0:
        raise HttpError(400, "invalid_field", "from must be >= 0")
    stored = await read_events(_viewer(app).engine.source, p["match_id"], first, last)
    # The replay.codec batch layout with base tick ``from`` (docs/events.md), upcast.
    batch = msgpack.packb(
        [(t, v, tick - first, *data) for t, v, tick, data in stored], use_bin_type=True
    )
    return _binary(
        200, pack([first, last, edge["live_edge"], edge["status"], batch]), "application/msgpack"
    )


@route("GET", r"/api/viewer/matches/(?P<match_id>[^/]+)/markers")
async def markers(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    edge = await _edge(app, _identity(app, request), p["match_id"])
    found = await _viewer(app).timeline.markers(p["match_id"], 0, edge["live_edge"])
    return json_response(
        conn,
        {
            "live_edge": edge["live_edge"],
            "markers": [{"tick": m.tick, "kind": m.kind, "data": _jsonable(m.data)} for m in found],
        },
    )


@route("GET", r"/api/viewer/matches/(?P<match_id>[^/]+)/clip")
async def clip(app: App, conn: ServerConnection, request: Request, p: Params) -> Response:
    q = query(request)
    edge = await _edge(app, _identity(app, request), p["match_id"])
    tick = min(_int(q, "tick"), edge["live_edge"])  # no clip of a kill past the edge
    try:
        seconds = float(q.get("seconds", "5"))
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 60:  # NaN fails this too
        raise HttpError(400, "invalid_field", "seconds must be in (0, 60]")
    timeline = _viewer(app).timeline
    kinds = ("killed", "multi_kill")
    kills = await timeline.markers(p["match_id"], 0, tick, kinds=kinds)
    if not kills:
        raise HttpError(404, "no_kill", f"no kill at or before tick {tick}")
    c = await timeline.kill_clip(p["match_id"], kills[-1], seconds)
    return json_response(
        conn,
        {
            "from_tick": c.from_tick,
            "to_tick": c.to_tick,
            "follow": c.follow,
            "follow_player": c.follow_player,
        },
    )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in data.items()}
