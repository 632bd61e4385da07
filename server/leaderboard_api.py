"""The leaderboards HTTP JSON API as a pure handler: (method, path, query) -> (status, body).

It plugs into any route table (server/http.py, or :func:`process_request` for a
bare ``websockets`` server, used by the tests and the benchmark). Routes, all
``GET`` under ``/api/leaderboards`` (docs/leaderboards.md)::

    /api/leaderboards                                   boards and their current periods
    /api/leaderboards/{board}                           top N: ?limit&cursor&period
    /api/leaderboards/{board}/count                     total entries: ?period
    /api/leaderboards/{board}/periods                   the queryable periods
    /api/leaderboards/{board}/players/{player}          rank and entry: ?period
    /api/leaderboards/{board}/players/{player}/around   entries around: ?limit&period

Every route takes ``wait`` (a global position) and ``timeout`` (seconds, default
5, max 30) for read-your-writes; the answer then has ``"reached": bool``. Errors
are ``{"error": {"code", "message"}}`` with a 4xx status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from replay.leaderboards.errors import BadParameterError, LeaderboardError
from replay.leaderboards.service import DEFAULT_AROUND, DEFAULT_LIMIT, Leaderboards

__all__ = ["PREFIX", "handle", "process_request"]

PREFIX = "/api/leaderboards"
DEFAULT_WAIT_TIMEOUT_S = 5.0
_PARAMS = {"limit", "cursor", "period", "wait", "timeout"}
log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message}}


def _int(params: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadParameterError(f"{name} must be an integer, got {raw[:32]!r}") from None


def _float(params: Mapping[str, str], name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadParameterError(f"{name} must be a number, got {raw[:32]!r}") from None
    if value != value:
        raise BadParameterError(f"{name} must be a number, got {raw[:32]!r}")
    return value


async def handle(
    service: Leaderboards, method: str, path: str, params: Mapping[str, str]
) -> tuple[int, dict[str, Any]]:
    """Answer one request. ``path`` is without the query string; ``params`` its
    decoded query parameters (last value wins)."""
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return _error(404, "not_found", f"no route {path[:200]!r}")
    # Split before unquoting, so a player id may contain an escaped "/" (%2F).
    parts = [unquote(p) for p in path[len(PREFIX) :].split("/") if p]
    if method not in ("GET", "HEAD"):
        return _error(405, "method_not_allowed", f"{method} is not allowed; use GET")
    try:
        unknown = sorted(set(params) - _PARAMS - {"token"})
        if unknown:
            raise BadParameterError(f"unknown parameters {unknown}; known: {sorted(_PARAMS)}")
        reached = None
        wait = _int(params, "wait", None)
        if wait is not None:
            reached = await service.wait(wait, _float(params, "timeout", DEFAULT_WAIT_TIMEOUT_S))
        period = params.get("period")
        match parts:
            case []:
                body = service.boards()
            case [board]:
                limit = _int(params, "limit", DEFAULT_LIMIT)
                body = service.top(board, period=period, limit=limit, cursor=params.get("cursor"))
            case [board, "count"]:
                body = service.count(board, period=period)
            case [board, "periods"]:
                body = service.periods(board)
            case [board, "players", player]:
                body = service.entry(board, player, period=period)
            case [board, "players", player, "around"]:
                limit = _int(params, "limit", DEFAULT_AROUND)
                body = service.around(board, player, period=period, limit=limit)
            case _:
                return _error(404, "not_found", f"no route {path[:200]!r}")
    except LeaderboardError as exc:
        return _error(exc.status, exc.code, str(exc))
    if reached is not None:
        body["reached"] = reached
    return 200, body


def process_request(service: Leaderboards):
    """A ``process_request`` hook serving the API from a ``websockets`` server
    (every other path falls through to the websocket handshake)."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    async def hook(connection: Any, request: Any) -> Any:
        url = urlsplit(request.path)
        if not url.path.startswith(PREFIX):
            return None
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            status, body = await handle(service, "GET", url.path, params)
        except Exception:  # a bug, not bad input: logged, answered as JSON all the same
            log.exception("leaderboard query failed: %s", request.path)
            status, body = _error(500, "internal", "internal error")
        data = json.dumps(body).encode() + b"\n"
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return Response(status, HTTPStatus(status).phrase, headers, data)

    return hook
