"""HTTP routes of the spectator replay viewer: the page itself and its match list.

The page (``server/static/``, docs/viewer.md) is served from the installed package
at ``/`` and ``/static/...``: no build step, no separate web server. The home view
reads one route here:

    GET /api/viewer/matches                 the matches the requester may watch, with standings
    GET /api/viewer/matches/{id}/lineage    the match a fork comes from, and its forks

The match view reads only its lineage over HTTP, once; the rest is a websocket spectator session
(docs/protocol.md section 11, ``server/spectator_session.py``), so seeking, playback and
the live feed follow the protocol's one access rule (``Spectators.visible_to``) and one
delay rule (``Spectators.edge``). The list goes through the same two calls: token-less requests see
only ``public_spectating`` matches, and every tick and standing is the one at the
requester's live edge (admins: the last durable tick).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from replay.engine import ReplayEngine
from replay.errors import ReplayError
from replay.events import SYSTEM_FORKED
from replay.rules import GameRegistry
from replay.store.base import EventStore, MatchRecord
from server.http import (
    SPECTATOR_LIST_SCAN,
    Authenticator,
    HttpError,
    Params,
    RouteTable,
    SpectatorAccess,
    json_response,
    query,
    spectator_info,
)
from server.lobby import Lobby

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

__all__ = ["STATIC_DIR", "ViewerApi", "viewer_routes"]

STATIC_DIR = Path(__file__).parent / "static"
MATCH_LIST_SCOREBOARDS = 50
"""Matches of a list that get standings and a result (each costs one cached state,
~10 KiB)."""

_CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


@dataclass(frozen=True, eq=False)
class ViewerApi:
    """What the viewer's routes use."""

    store: EventStore
    lobby: Lobby
    access: SpectatorAccess
    engine: ReplayEngine
    """A match's state at a tick: the list's standings and results."""
    auth: Authenticator
    games: GameRegistry
    leaderboards: bool
    """Whether this server serves the leaderboard routes."""
    origins: dict[str, tuple[str, int] | None] = field(default_factory=dict)
    """Per match read so far: ``(parent id, fork tick)`` of a fork, None for any other
    match. A match's first event never changes, so an entry is never stale (~100 bytes)."""
    files: dict[Path, tuple[bytes, str]] = field(default_factory=dict)
    """The static files read so far, keyed by their resolved path: one entry per file
    that exists, whatever spelling of its path was asked for (a few hundred KiB in all)."""


_viewer: RouteTable[ViewerApi] = RouteTable()
viewer_routes = _viewer.bind


def _binary(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


# -- the page ------------------------------------------------------------------------------


@_viewer.route("GET", r"/")
async def index(v: ViewerApi, conn: ServerConnection, request: Request, _: Params) -> Response:
    return _static_file(v, STATIC_DIR, "index.html")


@_viewer.route("GET", r"/static/games/(?P<game>[a-z0-9_]{1,32})/(?P<path>[A-Za-z0-9_\-./]+)")
async def game_static(
    v: ViewerApi, conn: ServerConnection, request: Request, p: Params
) -> Response:
    """A game's viewer module (``Rules.viewer_dir``): how the viewer draws its matches."""
    rules = v.games.get(p["game"])
    if rules is None or rules.viewer_dir is None:
        raise HttpError(404, "not_found", f"no viewer for game {p['game']!r}")
    return _static_file(v, Path(rules.viewer_dir), p["path"])


@_viewer.route("GET", r"/static/(?P<path>[A-Za-z0-9_\-./]+)")
async def static(v: ViewerApi, conn: ServerConnection, request: Request, p: Params) -> Response:
    return _static_file(v, STATIC_DIR, p["path"])


def _static_file(v: ViewerApi, root: Path, rel: str) -> Response:
    path = (root / rel).resolve()
    # Invariant: only files under root are served ("..", symlinks out refused).
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise HttpError(404, "not_found", f"no file {rel}")
    cached = v.files.get(path)
    if cached is None:
        kind = _CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        cached = v.files[path] = (path.read_bytes(), kind or "application/octet-stream")
    return _binary(200, *cached)


# -- the match list ------------------------------------------------------------------------


@_viewer.route("GET", r"/api/viewer/matches")
async def matches(v: ViewerApi, conn: ServerConnection, request: Request, _: Params) -> Response:
    """``{"matches": [...], "leaderboards": bool}``: the matches the requester may watch,
    newest first, each as the HTTP match JSON gives it (``tick`` at the requester's live
    edge) plus what a person reads in the list:

    * ``standings``: the game's scoreboard at that tick (None past the first
      MATCH_LIST_SCOREBOARDS matches);
    * ``names``: display name by player id (the game's scoreboard ``name``; the id for
      a player not in the standings);
    * ``result``: ``{"winner", "winner_name", "reason"}`` once the match is over at that
      tick (``rules.result``), else None;
    * ``duration_s``: that tick in seconds.
    """
    ident = v.auth.requester(request)
    q = query(request)
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise HttpError(400, "invalid_field", "limit must be an integer in [1, 1000]")
    privileged = ident.role == "admin"
    records = await v.store.list_matches(
        status=q.get("status"), limit=limit if privileged else SPECTATOR_LIST_SCAN
    )
    visible = [r for r in records if v.access.visible_to(ident, r)][:limit]
    out = []
    for i, record in enumerate(visible):
        # What this requester may see: the tick and standings at its live edge.
        item = spectator_info(v.lobby, v.access, record, privileged)
        item["duration_s"] = round(item["tick"] / (record.tick_rate or 1), 1)
        item["standings"] = item["result"] = None
        names = {player: player for player in item["players"]}
        if i < MATCH_LIST_SCOREBOARDS:
            rules = v.engine.rules(record)
            state = await v.engine.state_at(record.match_id, item["tick"])
            item["standings"] = rules.scoreboard(state)
            names |= {row["player"]: row.get("name") or row["player"] for row in item["standings"]}
            outcome = rules.result(state)
            if outcome is not None:
                item["result"] = {
                    "winner": outcome.winner,
                    "winner_name": names.get(outcome.winner, outcome.winner),
                    "reason": outcome.reason,
                }
        item["names"] = names
        out.append(item)
    # The page asks for leaderboards only where a route serves them, so a server without
    # them shows "not enabled" instead of a failed request.
    return json_response(conn, {"matches": out, "leaderboards": v.leaderboards})


# -- forks: where a match comes from and what was forked from it ----------------------------


async def _origin(v: ViewerApi, record: MatchRecord) -> tuple[str, int] | None:
    """``(parent, tick)`` when the match is a fork: its first event is ``forked``."""
    if record.match_id in v.origins:
        return v.origins[record.match_id]
    if record.version == 0:  # nothing stored yet (a fork stores its origin first)
        return None
    first = (await v.store.read(record.match_id, 1, 1))[0]
    origin = (first.data[0], first.data[1]) if first.type == SYSTEM_FORKED else None
    v.origins[record.match_id] = origin
    return origin


@_viewer.route("GET", r"/api/viewer/matches/(?P<match_id>[^/]+)/lineage")
async def lineage(v: ViewerApi, conn: ServerConnection, request: Request, p: Params) -> Response:
    """``{"match_id", "parent": {"match_id", "tick"} | None, "forks": [{"match_id", "tick",
    "status"}, ...]}``: the match it was forked from (``match_id`` null when the requester
    may not watch that one) and, newest first, the forks of it the requester may watch
    among the newest SPECTATOR_LIST_SCAN matches. ``tick``: the fork point, a tick of the
    parent (and the fork's first)."""
    ident = v.auth.requester(request)
    record = await v.store.get_match(p["match_id"])  # UnknownMatchError -> 404
    if not v.access.visible_to(ident, record):
        raise HttpError(403, "forbidden", f"not allowed to watch {record.match_id!r}")
    parent = None
    origin = await _origin(v, record)
    if origin is not None:
        parent_id, tick = origin
        try:
            visible = v.access.visible_to(ident, await v.store.get_match(parent_id))
        except ReplayError:  # not in this store (an imported fork): not linked
            visible = False
        parent = {"match_id": parent_id if visible else None, "tick": tick}
    forks = []
    for other in await v.store.list_matches(limit=SPECTATOR_LIST_SCAN):
        found = await _origin(v, other) if other.match_id != record.match_id else None
        if found is not None and found[0] == record.match_id and v.access.visible_to(ident, other):
            forks.append({"match_id": other.match_id, "tick": found[1], "status": other.status})
    return json_response(conn, {"match_id": record.match_id, "parent": parent, "forks": forks})
