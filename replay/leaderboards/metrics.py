"""Metrics: from a game's events to observations ``(owner, value, subscore)``.

A metric is read from the events alone. What it needs beyond one event (which
player holds which slot, the kills so far in the match) is kept in a
:class:`MatchTally`, itself a fold of the match's events, which the projection
persists with its checkpoint while the match runs.

A game declares its metrics with ``Rules.leaderboard_metrics()`` (arena:
``replay/games/arena/leaderboards.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from replay.leaderboards.operators import Entry

__all__ = ["GameMetrics", "Lookup", "MatchTally", "MetricFn", "Observation"]

Observation = tuple[str, int, int]
"""``(owner, value, subscore)``."""
Lookup = Callable[[str], Entry | None]
"""The owner's current entry on the board (period) the observation is for."""


@dataclass
class MatchTally:
    """What the metrics need to know about one match, folded from its events."""

    game: str
    created_at: float
    tick_rate: int
    slots: dict[int, str] = field(default_factory=dict)
    """Current player id per slot."""
    stats: dict[str, list[int]] = field(default_factory=dict)
    """Every player who joined: [kills, deaths, score]."""

    def encode(self) -> bytes:
        return msgpack.packb(
            [self.game, self.created_at, self.tick_rate, list(self.slots.items()), self.stats]
        )

    @classmethod
    def decode(cls, blob: bytes) -> MatchTally:
        game, created_at, tick_rate, slots, stats = msgpack.unpackb(blob, strict_map_key=False)
        return cls(game, created_at, tick_rate, dict(map(tuple, slots)), stats)


MetricFn = Callable[[MatchTally, tuple[Any, ...], Lookup], list[Observation]]


@dataclass(frozen=True)
class GameMetrics:
    """A game's metrics by name and the event codes that trigger them."""

    metrics: dict[str, tuple[int, MetricFn]]
    """metric name -> (event code, function)."""
    fold: Callable[[MatchTally, int, tuple[Any, ...]], None]
    """Updates the tally with one event (called after the metrics saw it)."""
    codes: frozenset[int]
    """Event codes the tally or a metric reads; every other event is skipped unread."""
    end_code: int
    """The match-ended event: after it the tally is dropped."""
