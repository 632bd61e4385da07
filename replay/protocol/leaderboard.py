"""Leaderboard queries (docs/protocol.md section 12, docs/leaderboards.md): the
LEADERBOARD message and the HTTP route of each query, for the server and clients alike.

Type codes 48..63. Any connection may query (players, spectators, anonymous), before
or after JOIN/WATCH. The query and its args are those of the HTTP API: the server runs
the same function for both, so the answer's body is exactly the JSON object the HTTP
route returns, and an error is an ERROR with the leaderboard error code
(``unknown_board``, ``limit_too_large``, ...) and the ref.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from replay.codec import pack
from replay.protocol.errors import E_INVALID_FIELD, ProtocolError
from replay.protocol.framing import MAX_ID_CHARS, MAX_SEQ, check_arity, int_field

__all__ = [
    "LEADERBOARD",
    "LEADERBOARD_PREFIX",
    "LEADERBOARD_QUERIES",
    "LEADERBOARD_REPLY",
    "LEADERBOARD_ROUTES",
    "MAX_PENDING_QUERIES",
    "LeaderboardQuery",
    "LeaderboardReply",
    "encode_leaderboard",
    "leaderboard_path",
    "leaderboard_reply",
    "parse_leaderboard_path",
]

# client -> server
LEADERBOARD = 48
# server -> client
LEADERBOARD_REPLY = 49

MAX_PENDING_QUERIES = 8
"""Waiting queries (``wait`` given) in flight per connection; each is one suspended
task (~2 KiB). Queries without ``wait`` are answered at once and do not count."""

# -- the HTTP routes ------------------------------------------------------------------------

LEADERBOARD_PREFIX = "/api/leaderboards"
LEADERBOARD_ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("boards", ()),
    ("top", ("{board}",)),
    ("count", ("{board}", "count")),
    ("periods", ("{board}", "periods")),
    ("entry", ("{board}", "players", "{player}")),
    ("around", ("{board}", "players", "{player}", "around")),
)
"""Each query and the path segments of its HTTP route under :data:`LEADERBOARD_PREFIX`:
literal ones, and ``{arg}`` ones that carry an argument (percent-escaped, so a player
id may hold a ``/``). Every other argument goes in the query string."""
LEADERBOARD_QUERIES = tuple(name for name, _ in LEADERBOARD_ROUTES)
_SEGMENTS = dict(LEADERBOARD_ROUTES)


def leaderboard_path(query: str, args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The HTTP path of ``(query, args)`` and the args left for the query string.
    KeyError for an unknown query."""
    rest = dict(args)
    parts = [
        _segment(rest.pop(seg[1:-1], "")) if seg[0] == "{" else seg for seg in _SEGMENTS[query]
    ]
    return "/".join([LEADERBOARD_PREFIX, *parts]), rest


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _segment(value: Any) -> str:
    """``value`` as one path segment, percent-escaped (a board or player id is usually
    plain: it is then taken as it is, without ``quote``'s encoding round)."""
    text = str(value)
    return text if _UNRESERVED.fullmatch(text) else quote(text, safe="")


def parse_leaderboard_path(path: str) -> tuple[str, dict[str, str]] | None:
    """The inverse of :func:`leaderboard_path`: ``(query, path args)``, or None when
    ``path`` (without its query string) is no leaderboard route."""
    if path != LEADERBOARD_PREFIX and not path.startswith(LEADERBOARD_PREFIX + "/"):
        return None
    # Split before unquoting, so a player id may contain an escaped "/" (%2F).
    parts = [p for p in path[len(LEADERBOARD_PREFIX) :].split("/") if p]
    if "%" in path:  # a plain path (the usual one) has nothing to unquote
        parts = [unquote(p) for p in parts]
    for name, segments in _BY_LENGTH.get(len(parts), ()):
        args: dict[str, str] = {}
        for seg, part in zip(segments, parts, strict=True):
            if seg[0] == "{":
                args[seg[1:-1]] = part
            elif seg != part:
                break
        else:
            return name, args
    return None


_BY_LENGTH: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
"""The routes by their number of segments, in order (a rank query is looked up on
every request: it is tried against one or two routes, not all of them)."""
for _route in LEADERBOARD_ROUTES:
    _BY_LENGTH.setdefault(len(_route[1]), []).append(_route)


# -- messages ---------------------------------------------------------------------------------


class LeaderboardQuery(NamedTuple):
    """``[48, ref, query, args]``: query one of :data:`LEADERBOARD_QUERIES`; args a map
    with ``board``, ``player``, ``period``, ``limit``, ``cursor``, ``wait``, ``timeout``
    as in the HTTP API."""

    ref: int
    query: str
    args: dict[str, Any]


class LeaderboardReply(NamedTuple):
    """``[49, ref, body]``: body is the HTTP route's JSON object (with ``position``)."""

    ref: int
    body: dict[str, Any]


def _decode_query(msg: list[Any]) -> LeaderboardQuery:
    check_arity(msg, 4, "LEADERBOARD is [48, ref, query, args]")
    ref = int_field(msg[1], 0, MAX_SEQ, "ref")
    if type(msg[2]) is not str or not 1 <= len(msg[2]) <= MAX_ID_CHARS:
        raise ProtocolError(E_INVALID_FIELD, "query must be a string", ref)
    if not isinstance(msg[3], dict):
        raise ProtocolError(E_INVALID_FIELD, "LEADERBOARD args must be a map", ref)
    return LeaderboardQuery(ref, msg[2], msg[3])


def leaderboard_reply(ref: int, body: dict[str, Any]) -> bytes:
    """``[49, ref, body]``."""
    return pack([LEADERBOARD_REPLY, ref, body])


def encode_leaderboard(ref: int, query: str, args: dict[str, Any] | None = None) -> bytes:
    return pack([LEADERBOARD, ref, query, args or {}])


CLIENT_MESSAGES: dict[int, tuple[str, Callable[[list[Any]], Any]]] = {
    LEADERBOARD: ("LEADERBOARD", _decode_query),
}
"""Type code -> (name, decoder of the unpacked frame)."""
SERVER_MESSAGES: dict[int, tuple[str, type]] = {
    LEADERBOARD_REPLY: ("LEADERBOARD", LeaderboardReply),
}
"""Type code -> (name, the message's fields after the code)."""
