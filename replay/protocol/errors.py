"""Errors of the protocol: the ERROR codes (the connection goes on), the close codes
(it cannot), and which closes a client should not retry (docs/protocol.md sections 5, 6).
"""

from __future__ import annotations

__all__ = [
    "CLOSE_CODES",
    "CLOSE_FORBIDDEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_JOIN_TIMEOUT",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_MOVED",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_RATE_LIMITED",
    "CLOSE_REPLACED",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOO_MANY_CONNECTIONS",
    "CLOSE_TRY_AGAIN",
    "CLOSE_UNAUTHORIZED",
    "CLOSE_WS_PROTOCOL_ERROR",
    "ERROR_CODES",
    "E_ALREADY_JOINED",
    "E_FORBIDDEN",
    "E_INVALID_FIELD",
    "E_MALFORMED",
    "E_MATCH_FULL",
    "E_MATCH_MOVING",
    "E_MATCH_OVER",
    "E_MOVED",
    "E_NOT_JOINED",
    "E_NOT_WATCHING",
    "E_RATE_LIMITED",
    "E_REJECTED",
    "E_SERVER_FULL",
    "E_TEXT_FRAME",
    "E_TOO_LARGE",
    "E_TOO_MANY_QUERIES",
    "E_UNKNOWN_MATCH",
    "E_UNKNOWN_TYPE",
    "NO_RETRY",
    "PLAYER_NO_RETRY",
    "ProtocolError",
]

# -- error codes (ERROR messages: the connection goes on) ------------------------------------

E_MALFORMED = "malformed"  # not msgpack, or not an array starting with an int type code
E_TEXT_FRAME = "text_frame"  # text frames are not part of the protocol
E_UNKNOWN_TYPE = "unknown_type"
E_INVALID_FIELD = "invalid_field"  # wrong field count, type or range
E_NOT_JOINED = "not_joined"  # INPUT/COMMAND/LEAVE before a successful JOIN
E_ALREADY_JOINED = "already_joined"  # a second JOIN on the same connection
E_UNKNOWN_MATCH = "unknown_match"
E_MATCH_OVER = "match_over"  # the match is ended or interrupted: read-only
E_MATCH_FULL = "match_full"
E_SERVER_FULL = "server_full"  # the server is at its limit: no new match or player (try later)
E_FORBIDDEN = "forbidden"  # the token's role or match does not allow this
E_RATE_LIMITED = "rate_limited"  # a message over its per-connection budget was dropped
E_REJECTED = "rejected"  # the game rules refused an input or command (reason in message)
E_NOT_WATCHING = "not_watching"  # SEEK/PLAY/... before a successful WATCH
E_TOO_MANY_QUERIES = "too_many_queries"  # over MAX_PENDING_QUERIES waiting queries
E_TOO_LARGE = "too_large"  # nested deeper than MAX_NESTING, or over a size limit
E_MOVED = "moved"  # the match runs on another node: message = its websocket URL (cluster)
E_MATCH_MOVING = "match_moving"  # its node is gone and no node has taken it over yet: retry

# -- close codes (the connection cannot go on) -----------------------------------------------

CLOSE_NORMAL = 1000  # after LEAVE, the client closed, or the match ended as planned (after ENDED)
CLOSE_GOING_AWAY = 1001  # server shutting down (reconnect later)
CLOSE_WS_PROTOCOL_ERROR = 1002  # broken WebSocket framing (websockets' own check)
CLOSE_INVALID_DATA = 1007  # a text frame that is not UTF-8 (websockets' own check)
CLOSE_MESSAGE_TOO_BIG = 1009  # a frame over MAX_FRAME_BYTES
CLOSE_UNAUTHORIZED = 4001  # token missing, malformed, wrongly signed or expired
CLOSE_PROTOCOL_ERROR = 4002  # too many protocol errors in a row
CLOSE_FORBIDDEN = 4003  # reserved: v1 answers role/match problems with ERROR forbidden
CLOSE_JOIN_TIMEOUT = 4004  # no JOIN within the join timeout
CLOSE_REPLACED = 4005  # the same player connected again and took the seat
CLOSE_RATE_LIMITED = 4008  # flooding far beyond a message budget (inputs, queries, ...)
CLOSE_TOO_MANY_CONNECTIONS = 4009
CLOSE_SLOW_CONSUMER = 4010  # the client did not read its updates fast enough
CLOSE_MOVED = 4011  # the match runs on another node: reason = its websocket URL; JOIN there
CLOSE_TRY_AGAIN = 4012  # the match is between nodes (failover): JOIN again, through any node

ERROR_CODES = frozenset(
    {
        E_MALFORMED,
        E_TEXT_FRAME,
        E_UNKNOWN_TYPE,
        E_INVALID_FIELD,
        E_NOT_JOINED,
        E_ALREADY_JOINED,
        E_UNKNOWN_MATCH,
        E_MATCH_OVER,
        E_MATCH_FULL,
        E_SERVER_FULL,
        E_FORBIDDEN,
        E_RATE_LIMITED,
        E_REJECTED,
        E_NOT_WATCHING,
        E_TOO_MANY_QUERIES,
        E_TOO_LARGE,
        E_MOVED,
        E_MATCH_MOVING,
    }
)
"""The protocol's own ERROR codes (docs/protocol.md section 5). An ERROR may also carry a
code of the replay core (``tick_out_of_range``, ...) or of the leaderboards
(``unknown_board``, ...): those are listed in docs/protocol.md and docs/leaderboards.md."""

CLOSE_CODES = frozenset(
    {
        CLOSE_NORMAL,
        CLOSE_GOING_AWAY,
        CLOSE_WS_PROTOCOL_ERROR,
        CLOSE_INVALID_DATA,
        CLOSE_MESSAGE_TOO_BIG,
        CLOSE_UNAUTHORIZED,
        CLOSE_PROTOCOL_ERROR,
        CLOSE_FORBIDDEN,
        CLOSE_JOIN_TIMEOUT,
        CLOSE_REPLACED,
        CLOSE_RATE_LIMITED,
        CLOSE_TOO_MANY_CONNECTIONS,
        CLOSE_SLOW_CONSUMER,
        CLOSE_MOVED,
        CLOSE_TRY_AGAIN,
    }
)
"""Every close code the server sends (docs/protocol.md section 6)."""

NO_RETRY = frozenset(
    {
        CLOSE_NORMAL,
        CLOSE_WS_PROTOCOL_ERROR,
        CLOSE_INVALID_DATA,
        CLOSE_MESSAGE_TOO_BIG,
        CLOSE_UNAUTHORIZED,
        CLOSE_PROTOCOL_ERROR,
        CLOSE_FORBIDDEN,
        CLOSE_REPLACED,
        CLOSE_RATE_LIMITED,
    }
)
"""Close codes after which reconnecting cannot help: the same client would be closed
the same way, or its session is over (docs/protocol.md section 6, "reconnect?")."""
PLAYER_NO_RETRY = NO_RETRY | {CLOSE_GOING_AWAY}
"""A player's too: its match does not outlive a server shutdown (it is marked
interrupted), while a spectator reconnects and watches it from the store."""


class ProtocolError(ValueError):
    """A frame that breaks the protocol: ``code`` is one of the ``E_*`` constants."""

    def __init__(self, code: str, message: str, ref: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
