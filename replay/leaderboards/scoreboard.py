"""The per-match scoreboard push: when a tick changed the standings, what to send.

The server calls :meth:`ScoreboardFeed.update` once per tick after evolving the
match state with the tick's events; it returns the new scoreboard
(``rules.scoreboard(state)``) when it should be pushed to the match's players
and spectators, else None. Computing the scoreboard costs a sort over the
players, so it is skipped unless the tick has a *notable* event (for arena:
joined, left, killed, match_started, match_ended: exactly the events that move
kills, deaths, score or the player list), and nothing is pushed when the result
equals the last one pushed (a chat, or a kill that left the order and numbers
as they were, is not news).

``alive`` changes with every death and respawn; it is part of the scoreboard
the rules return and so is part of "changed": for arena the triggers therefore also include
``spawned`` and ``respawned`` (:data:`SCOREBOARD_EVENTS`). A game not listed
there uses its catalog's notable events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from replay.rules import Rules, StoredEvent

__all__ = ["SCOREBOARD_EVENTS", "ScoreboardFeed"]

SCOREBOARD_EVENTS: dict[str, tuple[str, ...]] = {
    "arena": ("joined", "left", "killed", "spawned", "respawned", "match_started", "match_ended"),
}
"""Per game: the event types that can change ``rules.scoreboard(state)``."""


class ScoreboardFeed:
    """Per match: decides from a tick's events whether the scoreboard changed."""

    def __init__(self, rules: Rules[Any], trigger_types: Iterable[int] | None = None) -> None:
        self.rules = rules
        if trigger_types is None:
            names = SCOREBOARD_EVENTS.get(rules.name)
            trigger_types = (
                (rules.catalog.by_name(n).code for n in names)
                if names
                else (t.code for t in rules.catalog if t.notable)
            )
        self.triggers = frozenset(trigger_types)
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
