"""HTTP routes of the spectator replay viewer: the page itself and its match list.

The page (``server/static/``, docs/viewer.md) is served from the installed package
at ``/`` and ``/static/...``: no build step, no separate web server. The home view
reads one route here:

    GET /api/viewer/matches     the matches the requester may watch, with standings

The match view reads nothing over HTTP: it is a websocket spectator session
(docs/protocol.md section 11, ``server/watcher.py``), so seeking, playback and the live
feed follow the protocol's one access rule (``Spectating.visible_to``) and one delay rule
(``Spectating.edge``). The list goes through the same two calls: token-less requests see
only ``public_spectating`` matches, and every tick and standing is the one at the
requester's live edge (admins: the last durable tick).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from replay.engine import ReplayEngine
from replay.rules import GameRegistry
from replay.store.base import EventStore, MatchRecord
from server import auth, http
from server.http import (
    SPECTATOR_LIST_SCAN,
    HttpError,
    Params,
    json_response,
    query,
    requester,
    route,
    spectator_info,
)

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

__all__ = ["STATIC_DIR", "StaticFiles", "match_list"]

STATIC_DIR = Path(__file__).parent / "static"
MATCH_LIST_SCOREBOARDS = 50
"""Matches of a list that get standings and a result (each costs one cached state,
~10 KiB)."""

_CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


class Visibility(Protocol):
    """What the list needs of spectating (server/watcher.py ``Spectating``): the one
    access rule and its engine."""

    engine: ReplayEngine

    def visible_to(self, ident: auth.Identity, record: MatchRecord) -> bool: ...


class _Server(Protocol):
    """The parts of the server the route adapters below hand on (nothing else is read)."""

    secret: str  # requester(): who asks
    store: EventStore
    spectating: Visibility
    games: GameRegistry


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


class StaticFiles:
    """The files under one directory, read once each and kept, keyed by their resolved
    path: one entry per file that exists, whatever spelling of its path was asked for
    (a few hundred KiB in all)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._files: dict[Path, tuple[bytes, str]] = {}

    def get(self, rel: str) -> Response:
        path = (self.root / rel).resolve()
        # Invariant: only files under root are served ("..", symlinks out refused).
        if not path.is_relative_to(self.root) or not path.is_file():
            raise HttpError(404, "not_found", f"no file {rel}")
        cached = self._files.get(path)
        if cached is None:
            kind = _CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
            cached = self._files[path] = (path.read_bytes(), kind or "application/octet-stream")
        return _binary(200, *cached)


_page = StaticFiles(STATIC_DIR)
_game_files: dict[Path, StaticFiles] = {}


@route("GET", r"/")
async def index(app: _Server, conn: ServerConnection, request: Request, _: Params) -> Response:
    return _page.get("index.html")


@route("GET", r"/static/games/(?P<game>[a-z0-9_]{1,32})/(?P<path>[A-Za-z0-9_\-./]+)")
async def game_static(
    app: _Server, conn: ServerConnection, request: Request, p: Params
) -> Response:
    """A game's viewer module (``Rules.viewer_dir``): how the viewer draws its matches."""
    return game_file(app.games, p["game"], p["path"])


@route("GET", r"/static/(?P<path>[A-Za-z0-9_\-./]+)")
async def static(app: _Server, conn: ServerConnection, request: Request, p: Params) -> Response:
    return _page.get(p["path"])


def game_file(games: GameRegistry, game: str, rel: str) -> Response:
    rules = games.get(game)
    if rules is None or rules.viewer_dir is None:
        raise HttpError(404, "not_found", f"no viewer for game {game!r}")
    root = Path(rules.viewer_dir)
    files = _game_files.get(root)
    if files is None:
        files = _game_files[root] = StaticFiles(root)
    return files.get(rel)


# -- the match list ------------------------------------------------------------------------


@route("GET", r"/api/viewer/matches")
async def matches(app: _Server, conn: ServerConnection, request: Request, _: Params) -> Response:
    ident = requester(app, request)
    body = await match_list(
        app.store,
        app.spectating,
        lambda record, privileged: spectator_info(app, record, privileged),
        ident,
        query(request),
    )
    # The page asks for leaderboards only where a route serves them, so a server without
    # them shows "not enabled" instead of a failed request.
    body["leaderboards"] = any(m.match("/api/leaderboards") for _, m, _ in http.ROUTES)
    return json_response(conn, body)


async def match_list(
    store: EventStore,
    spectating: Visibility,
    describe: Callable[[MatchRecord, bool], dict[str, Any]],
    ident: auth.Identity,
    q: Mapping[str, str],
) -> dict[str, Any]:
    """``{"matches": [...]}``: the matches ``ident`` may watch, newest first, each as
    ``describe`` gives it (the HTTP match JSON: ``tick`` at the requester's live edge)
    plus what a person reads in the list:

    * ``standings``: the game's scoreboard at that tick (None past the first
      MATCH_LIST_SCOREBOARDS matches);
    * ``names``: display name by player id (the game's scoreboard ``name``; the id for
      a player not in the standings);
    * ``result``: ``{"winner", "winner_name", "reason"}`` once the match is over at that
      tick (``rules.result``), else None;
    * ``duration_s``: that tick in seconds.
    """
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise HttpError(400, "invalid_field", "limit must be an integer in [1, 1000]")
    privileged = ident.role == "admin"
    records = await store.list_matches(
        status=q.get("status"), limit=limit if privileged else SPECTATOR_LIST_SCAN
    )
    visible = [r for r in records if spectating.visible_to(ident, r)][:limit]
    engine = spectating.engine
    out = []
    for i, record in enumerate(visible):
        # What this requester may see: the tick and standings at its live edge.
        item = describe(record, privileged)
        item["duration_s"] = round(item["tick"] / (record.tick_rate or 1), 1)
        item["standings"] = item["result"] = None
        names = {player: player for player in item["players"]}
        if i < MATCH_LIST_SCOREBOARDS:
            rules = engine.rules(record)
            state = await engine.state_at(record.match_id, item["tick"])
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
    return {"matches": out}
