"""The leaderboards HTTP JSON API as a pure handler: (method, path, query) -> (status, body).

It plugs into any route table (server/http.py, or :func:`process_request` for a
bare ``websockets`` server, used by the tests and the benchmark). Routes: all
``GET`` under ``/api/leaderboards``, one per query, as ``replay.protocol.LEADERBOARD_ROUTES``
declares them (docs/leaderboards.md lists them).

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
from urllib.parse import parse_qs, urlsplit

from replay.leaderboards.errors import BadParameterError, LeaderboardError
from replay.leaderboards.service import DEFAULT_AROUND, DEFAULT_LIMIT, Leaderboards
from replay.protocol import (
    LEADERBOARD_PREFIX,
    LEADERBOARD_QUERIES,
    error_body,
    parse_leaderboard_path,
)

__all__ = ["ARGS", "handle", "handle_now", "process_request", "query"]

DEFAULT_WAIT_TIMEOUT_S = 5.0
_PARAMS = frozenset({"limit", "cursor", "period", "wait", "timeout"})
ARGS = _PARAMS | {"board", "player"}
"""Arguments of :func:`query`: the query-string parameters plus the path's parts."""
_HTTP_PARAMS = _PARAMS | {"token"}
"""What a request's query string may hold (the token is the server's business)."""
log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, error_body(code, message)


def _int(args: Mapping[str, Any], name: str, default: int | None) -> int | None:
    # HTTP gives strings, the websocket protocol typed values: both pass through here.
    raw = args.get(name)
    if raw is None:
        return default
    if type(raw) is int:
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    raise BadParameterError(f"{name} must be an integer, got {str(raw)[:32]!r}")


def _float(args: Mapping[str, Any], name: str, default: float) -> float:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError
        value = float(raw)
    except ValueError:
        raise BadParameterError(f"{name} must be a number, got {str(raw)[:32]!r}") from None
    if value != value:
        raise BadParameterError(f"{name} must be a number, got {str(raw)[:32]!r}")
    return value


def _str(args: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    raw = args.get(name)
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or (required and not raw):
        raise BadParameterError(f"{name} must be a non-empty string, got {str(raw)[:32]!r}")
    return raw


async def query(
    service: Leaderboards, name: str, args: Mapping[str, Any], anonymous: bool = False
) -> dict[str, Any]:
    """Answer one query: THE parameter rules, shared by HTTP and the websocket protocol.

    ``name`` is one of ``LEADERBOARD_QUERIES``; ``args`` maps the names of :data:`ARGS` to
    strings (HTTP) or typed values (websocket). ``anonymous``: the caller has no token,
    and sees entries a private match fed without their owners (docs/leaderboards.md).
    Raises :class:`LeaderboardError`."""
    _known(args)
    reached = None
    wait = _int(args, "wait", None)
    if wait is not None:
        reached = await service.wait(wait, _float(args, "timeout", DEFAULT_WAIT_TIMEOUT_S))
    body = _answer(service, name, args, anonymous)
    if reached is not None:
        body["reached"] = reached
    return body


def _known(args: Mapping[str, Any]) -> None:
    if not ARGS.issuperset(args):
        unknown = sorted(set(args) - ARGS)
        raise BadParameterError(f"unknown parameters {unknown}; known: {sorted(ARGS)}")


def _answer(
    service: Leaderboards, name: str, args: Mapping[str, Any], anonymous: bool
) -> dict[str, Any]:
    if name == "boards":
        return service.boards()
    board = _str(args, "board", required=True)
    assert board is not None
    period = _str(args, "period")
    if name == "top":
        limit = _int(args, "limit", DEFAULT_LIMIT)
        return service.top(
            board, period=period, limit=limit, cursor=_str(args, "cursor"), anonymous=anonymous
        )
    if name == "count":
        return service.count(board, period=period)
    if name == "periods":
        return service.periods(board)
    if name == "entry":
        player = _str(args, "player", required=True)
        return service.entry(board, player, period=period, anonymous=anonymous)  # type: ignore[arg-type]
    if name == "around":
        player = _str(args, "player", required=True)
        limit = _int(args, "limit", DEFAULT_AROUND)
        return service.around(board, player, period=period, limit=limit, anonymous=anonymous)  # type: ignore[arg-type]
    known = list(LEADERBOARD_QUERIES)
    raise BadParameterError(f"unknown query {str(name)[:32]!r}; known: {known}")


async def handle(
    service: Leaderboards,
    method: str,
    path: str,
    params: Mapping[str, str],
    anonymous: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Answer one request. ``path`` is without the query string; ``params`` its
    decoded query parameters (last value wins); ``anonymous`` as for :func:`query` (who
    the caller is, the server decides from the token)."""
    try:
        name, args = _route(method, path, params)
        return 200, await query(service, name, args, anonymous)
    except LeaderboardError as exc:
        return _error(exc.status, exc.code, str(exc))


def handle_now(
    service: Leaderboards,
    method: str,
    path: str,
    params: Mapping[str, str],
    anonymous: bool = False,
) -> tuple[int, dict[str, Any]] | None:
    """:func:`handle` without awaiting (the server answers at once, no task): the answer,
    or None when the request waits for a position (``wait``), which :func:`handle` does."""
    if params.get("wait") is not None:
        return None
    try:
        name, args = _route(method, path, params)  # args are known ones: _route checks
        return 200, _answer(service, name, args, anonymous)
    except LeaderboardError as exc:
        return _error(exc.status, exc.code, str(exc))


class _NoRoute(LeaderboardError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _route(method: str, path: str, params: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The query a request asks and its arguments."""
    route = parse_leaderboard_path(path)
    if route is None:
        raise _NoRoute(404, "not_found", f"no route {path[:200]!r}")
    if method not in ("GET", "HEAD"):
        raise _NoRoute(405, "method_not_allowed", f"{method} is not allowed; use GET")
    name, where = route
    # board and player come from the path only.
    if not _HTTP_PARAMS.issuperset(params):
        unknown = sorted(set(params) - _HTTP_PARAMS)
        raise BadParameterError(f"unknown parameters {unknown}; known: {sorted(_PARAMS)}")
    return name, {k: v for k, v in params.items() if k in _PARAMS} | where


def process_request(service: Leaderboards):
    """A ``process_request`` hook serving the API from a ``websockets`` server
    (every other path falls through to the websocket handshake)."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    async def hook(connection: Any, request: Any) -> Any:
        url = urlsplit(request.path)
        if not url.path.startswith(LEADERBOARD_PREFIX):
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
