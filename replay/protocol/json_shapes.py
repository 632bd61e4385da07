"""The JSON objects that more than one module answers with: a match, and an error.

HTTP routes, MATCHES items and SDK listings all describe a match with
:func:`match_info`; each caller only adds what its audience may see beyond it
(an admin's ``last_seq``, a live match's seats, a spectator's delay).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from replay.protocol.errors import E_TOO_LARGE, ProtocolError
from replay.protocol.framing import MAX_NESTING, check_nesting
from replay.store.base import MatchRecord

__all__ = ["MAX_JSON_CHARS", "error_body", "loads_limited", "match_info"]

MAX_JSON_CHARS = 16 * 1024
"""Longest JSON text a client may send in a parameter (a match's ``settings``)."""


def loads_limited(text: str, max_chars: int = MAX_JSON_CHARS) -> Any:
    """``json.loads`` for client text: at most ``max_chars``, nested at most
    :data:`~replay.protocol.framing.MAX_NESTING` deep. :class:`ProtocolError`
    ``too_large`` beyond either, ``ValueError`` for text that is not JSON."""
    if len(text) > max_chars:
        raise ProtocolError(E_TOO_LARGE, f"JSON text is at most {max_chars} characters")
    try:
        value = json.loads(text)
    except RecursionError:  # the C decoder's own limit, reached before ours is checked
        raise ProtocolError(E_TOO_LARGE, f"JSON nests deeper than {MAX_NESTING}") from None
    check_nesting(value, MAX_NESTING)
    return value


def match_info(
    record: MatchRecord,
    *,
    status: str | None = None,
    tick: int | None = None,
    players: Iterable[str] | None = None,
) -> dict[str, Any]:
    """A match as JSON (docs/protocol.md section 8): ``match_id``, ``game``, ``status``,
    ``tick``, ``tick_rate``, ``players``, ``created_at``, ``ended_at``.

    The record's values unless the caller knows better: a live match's ``status`` and
    seated ``players``, or a ``tick`` capped at what the requester may see (a
    spectator's live edge). Default ``tick``: the last stored one (-1: none yet)."""
    return {
        "match_id": record.match_id,
        "game": record.game,
        "status": record.status if status is None else status,
        "tick": record.last_tick if tick is None else tick,
        "tick_rate": record.tick_rate,
        "players": list(record.players if players is None else players),
        "created_at": record.created_at,
        "ended_at": record.ended_at,
    }


def error_body(code: str, message: str) -> dict[str, Any]:
    """``{"error": {"code", "message"}}``: the one error shape of every JSON route,
    leaderboards included (docs/protocol.md section 8)."""
    return {"error": {"code": code, "message": message}}
