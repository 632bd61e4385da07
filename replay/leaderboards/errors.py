"""Typed errors of leaderboard queries and configuration, each with a stable ``code``.

``status`` is the HTTP status the query layer answers with; every error a
caller can provoke is a 4xx, never a 500.
"""

from __future__ import annotations

from replay.errors import ReplayError

__all__ = [
    "BadCursorError",
    "BadParameterError",
    "BoardConfigError",
    "LeaderboardError",
    "LimitTooLargeError",
    "ReadModelBusyError",
    "UnknownBoardError",
    "UnknownPeriodError",
    "UnknownPlayerError",
]


class LeaderboardError(ReplayError):
    code = "leaderboard_error"
    status = 400


class UnknownBoardError(LeaderboardError, LookupError):
    code = "unknown_board"
    status = 404

    def __init__(self, board: str, known: list[str]) -> None:
        super().__init__(f"unknown board {board!r}; known boards: {known}")


class UnknownPlayerError(LeaderboardError, LookupError):
    code = "unknown_player"
    status = 404

    def __init__(self, board: str, period: str, player: str) -> None:
        super().__init__(f"player {player!r} has no entry on board {board!r}, period {period!r}")


class UnknownPeriodError(LeaderboardError, LookupError):
    code = "unknown_period"
    status = 404


class LimitTooLargeError(LeaderboardError, ValueError):
    code = "limit_too_large"
    status = 400


class BadCursorError(LeaderboardError, ValueError):
    code = "bad_cursor"
    status = 400


class BadParameterError(LeaderboardError, ValueError):
    code = "bad_parameter"
    status = 400


class BoardConfigError(LeaderboardError, ValueError):
    """A board definition (or config file) is invalid; raised at startup, not by queries."""

    code = "board_config"


class ReadModelBusyError(LeaderboardError):
    """The read model file is open in another process (one writer per read model)."""

    code = "read_model_busy"
    status = 409
