"""Leaderboard queries: validated arguments in, JSON-ready answers out.

Shared by the HTTP handler (server/leaderboard_api.py) and the websocket
protocol. Every answer carries ``board``, ``period`` and ``position`` (the
global event position the board reflects). Bad arguments raise a
:class:`~replay.leaderboards.errors.LeaderboardError` (code + message + 4xx
status). Queries are in-memory reads: no disk, no await, except :meth:`wait`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import time
from collections.abc import Callable, Collection
from typing import Any

from replay.leaderboards.board import REACHED_SLOTS, Board
from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.errors import (
    BadCursorError,
    BadParameterError,
    LimitTooLargeError,
    UnknownBoardError,
    UnknownPeriodError,
    UnknownPlayerError,
)
from replay.leaderboards.operators import INT64_MAX, INT64_MIN
from replay.leaderboards.periods import parse_period, period_key, previous_period
from replay.leaderboards.projection import LeaderboardProjection

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_WAIT_S", "Leaderboards"]

MAX_LIMIT = 1000
"""Most entries one answer holds (~100 bytes of JSON each: ~100 KB per answer)."""
DEFAULT_LIMIT = 100
DEFAULT_AROUND = 21
MAX_WAIT_S = 30.0
"""Longest a query may wait for a position; one waiting query costs one suspended task."""
_EMPTY = Board()
_json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
"""A string as json.dumps writes it (ensure_ascii)."""
_UINT64_MAX = (1 << 64) - 1


def entries_json(
    columns: tuple[int, list[str], list[int], list[int], list[int]],
    hidden: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Entries as the API answers them (the one place their JSON shape is written), from
    ``columns`` (what ``Board.columns`` gives): no entry tuple, no call per entry. An
    owner of ``hidden`` comes without its name, nor when it last changed (which would
    point at the private match's event)."""
    first, owners, values, subscores, reached = columns
    out = [
        {"rank": rank, "owner": o, "value": v, "subscore": s, "reached_at": r // REACHED_SLOTS}
        for rank, o, v, s, r in zip(
            itertools.count(first), owners, values, subscores, reached, strict=False
        )
    ]
    if hidden:
        for e in out:
            if e["owner"] in hidden:
                e["owner"] = e["reached_at"] = None
    return out


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise BadParameterError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    if limit > MAX_LIMIT:
        raise LimitTooLargeError(f"limit {limit} is above the cap of {MAX_LIMIT}")
    return limit


class Leaderboards:
    """Queries over a projection's boards. ``clock`` gives the UTC time deciding the
    current period of boards with resets."""

    def __init__(
        self, projection: LeaderboardProjection, clock: Callable[[], float] = time.time
    ) -> None:
        self.projection = projection
        self.clock = clock

    # -- helpers -------------------------------------------------------------------

    def definition(self, board_id: str) -> BoardDefinition:
        defs = self.projection.state.definitions
        if board_id not in defs:
            raise UnknownBoardError(board_id, sorted(defs))
        return defs[board_id]

    def _resolve(self, board_id: str, period: str | None) -> tuple[BoardDefinition, str, Board]:
        d = self.definition(board_id)
        current = period_key(d.reset, self.clock())
        boards = self.projection.state.boards[board_id]
        if period in (None, "", "current"):
            key = current
        elif period == "previous":
            try:
                key = previous_period(d.reset, current)
            except ValueError as exc:
                raise UnknownPeriodError(f"board {board_id!r}: {exc}") from None
        else:
            try:
                key = parse_period(d.reset, period)
            except ValueError as exc:
                raise UnknownPeriodError(f"board {board_id!r}: {exc}") from None
        board = boards.get(key)
        if board is None:
            if key != current:
                raise UnknownPeriodError(
                    f"board {board_id!r} has no period {key!r}; periods: {self._periods(d)}"
                )
            board = _EMPTY
        return d, key, board

    def _hidden(self, board_id: str, period: str, anonymous: bool) -> Collection[str]:
        return self.projection.state.hidden(board_id, period) if anonymous else ()

    def _periods(self, d: BoardDefinition) -> list[str]:
        keys = set(self.projection.state.boards[d.id]) | {period_key(d.reset, self.clock())}
        return sorted(keys, reverse=True)

    def stamp(self) -> tuple[int, int, int]:
        """What every answer depends on besides its arguments: two answers to the same
        query under the same stamp are the same (the boards and marks unchanged, the
        same position, the same second of the clock, which decides current periods)."""
        state = self.projection.state
        return state.changes, state.position, int(self.clock())

    def _answer(self, board_id: str, period: str, board: Board) -> dict[str, Any]:
        return {
            "board": board_id,
            "period": period,
            "position": self.projection.position,
            "count": len(board),
        }

    # -- queries -------------------------------------------------------------------

    async def wait(self, position: int, timeout: float) -> bool:
        """Wait until the boards reflect ``position``; False when ``timeout`` passed first."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise BadParameterError(f"wait must be a position >= 0, got {position!r}")
        if not 0 <= timeout <= MAX_WAIT_S:
            raise BadParameterError(f"timeout must be 0..{MAX_WAIT_S} seconds, got {timeout!r}")
        return await self.projection.wait_for(position, timeout)

    def boards(self) -> dict[str, Any]:
        return {
            "position": self.projection.position,
            "boards": [
                d.as_dict() | {"current_period": period_key(d.reset, self.clock())}
                for d in self.projection.state.definitions.values()
            ],
        }

    def periods(self, board_id: str) -> dict[str, Any]:
        d = self.definition(board_id)
        return {
            "board": board_id,
            "position": self.projection.position,
            "current": period_key(d.reset, self.clock()),
            "periods": self._periods(d),
        }

    def top(
        self,
        board_id: str,
        *,
        period: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """The best ``limit`` entries, or those after ``cursor`` (from an earlier page).
        ``anonymous``: a caller without a token, who sees the entries a private match fed
        without their owners' names (docs/leaderboards.md)."""
        check_limit(limit)
        _, key, board = self._resolve(board_id, period)
        start = 0
        if cursor:
            start = board.index_after(*decode_cursor(cursor, board_id, key))
        page = board.columns(start, start + limit)
        out = self._answer(board_id, key, board)
        out["entries"] = entries_json(page, self._hidden(board_id, key, anonymous))
        _, owners, values, subscores, reached = page
        more = owners and start + len(owners) < len(board)
        last = (values[-1], subscores[-1], reached[-1]) if more else None
        out["next_cursor"] = encode_cursor(board_id, key, *last) if last else None
        return out

    def entry(
        self, board_id: str, player: str, *, period: str | None = None, anonymous: bool = False
    ) -> dict[str, Any]:
        """``player``'s rank and entry (to an anonymous caller, a hidden owner has none:
        the answer does not tell a hidden owner from one without an entry)."""
        _, key, board = self._resolve(board_id, period)
        e = board.rank(player)
        if e is None or player in self._hidden(board_id, key, anonymous):
            raise UnknownPlayerError(board_id, key, player)
        (entry,) = entries_json((e.rank, [e.owner], [e.value], [e.subscore], [e.reached]))
        return self._answer(board_id, key, board) | {"entry": entry}

    def around(
        self,
        board_id: str,
        player: str,
        *,
        period: str | None = None,
        limit: int = DEFAULT_AROUND,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """``limit`` entries around ``player``, always including ``player`` (hidden
        owners as :meth:`entry` and :meth:`top` treat them)."""
        check_limit(limit)
        _, key, board = self._resolve(board_id, period)
        hidden = self._hidden(board_id, key, anonymous)
        start = board.around_start(player, limit) if player not in hidden else None
        if start is None:
            raise UnknownPlayerError(board_id, key, player)
        entries = entries_json(board.columns(start, start + limit), hidden)
        return self._answer(board_id, key, board) | {"entries": entries}

    def count(self, board_id: str, *, period: str | None = None) -> dict[str, Any]:
        _, key, board = self._resolve(board_id, period)
        return self._answer(board_id, key, board)


def encode_cursor(board_id: str, period: str, value: int, subscore: int, reached: int) -> str:
    """Opaque to clients: the key of the last entry returned, so the next page starts
    right after it even if entries moved meanwhile."""
    # json.dumps of the list, written out: the cursor's bytes stay the same.
    raw = f"[{_json_str(board_id)}, {_json_str(period)}, {value}, {subscore}, {reached}]"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


MAX_CURSOR_CHARS = 512
"""Cursors this module writes are ~100-250 characters; longer ones are refused unread."""


def decode_cursor(cursor: str, board_id: str, period: str) -> tuple[int, int, int]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadCursorError(f"malformed cursor: longer than {MAX_CURSOR_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        b, p, v, s, r = json.loads(raw)
        # The fields of a sort key: value and subscore int64, reached uint64.
        if not all(type(x) is int for x in (v, s, r)) or not 0 <= r <= _UINT64_MAX:
            raise ValueError("not a cursor")
        if not (INT64_MIN <= v <= INT64_MAX and INT64_MIN <= s <= INT64_MAX):
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise BadCursorError(f"malformed cursor {cursor[:64]!r}") from None
    if (b, p) != (board_id, period):
        raise BadCursorError(f"the cursor belongs to board {b!r}, period {p!r}")
    return v, s, r
