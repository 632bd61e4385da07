"""The per-match scoreboard push: when a tick changed the standings, what to send.

The server calls :meth:`ScoreboardFeed.update` once per tick after evolving the
match state with the tick's events; it returns the new scoreboard
(``rules.scoreboard(state)``) when it should be pushed to the match's players
and spectators, else None. Computing the scoreboard costs a sort over the
players, so it is skipped unless the tick has one of the events the game says
may change it (``Rules.scoreboard_triggers()``: its ``scoreboard_events``, or
its catalog's notable events), and nothing is pushed when the result equals the
last one pushed (a chat, or a kill that left the order and numbers as they
were, is not news).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from replay.rules import Rules, StoredEvent

__all__ = ["ScoreboardFeed"]


class ScoreboardFeed:
    """Per match: decides from a tick's events whether the scoreboard changed."""

    def __init__(self, rules: Rules[Any], trigger_types: Iterable[int] | None = None) -> None:
        self.rules = rules
        self.triggers = frozenset(
            rules.scoreboard_triggers() if trigger_types is None else trigger_types
        )
        """Event codes that may change the scoreboard."""
        self.last: list[dict[str, Any]] | None = None

    def update(
        self, state: Any, events: Sequence[StoredEvent | Any]
    ) -> list[dict[str, Any]] | None:
        """The scoreboard to push after this tick, or None when nothing changed.

        ``events`` are the tick's events (NewEvent, RecordedEvent or stored tuples)."""
        if not any(_type(e) in self.triggers for e in events):
            return None
        board = self.rules.scoreboard(state)
        if board == self.last:
            return None
        self.last = board
        return board


def _type(event: Any) -> int:
    # NewEvent / RecordedEvent have .type; stored tuples are (type, version, tick, data).
    return event.type if hasattr(event, "type") else event[0]
