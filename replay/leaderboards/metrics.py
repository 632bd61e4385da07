"""Metrics: from a game's events to observations ``(owner, value, subscore)``.

A metric is read from the events alone. What it needs beyond one event (which
player holds which seat, the running totals of the match: whatever the game
says) is kept in the ``data`` of a :class:`MatchTally`, itself a fold of the
match's events by the game's ``GameMetrics.fold``, which the projection persists
with its checkpoint while the match runs. The generic code never reads ``data``.

A game declares its metrics with ``Rules.leaderboard_metrics()`` (docs/games.md).
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
    data: dict[Any, Any] = field(default_factory=dict)
    """The game's running totals of the match, kept by its ``GameMetrics.fold``. Plain
    msgpack data (dicts, lists, ints, strings; no tuples): it is persisted and read
    back, and a metric must see the same values either way."""
    rewinds: list[tuple[int, int]] = field(default_factory=list)
    """``(B, T)`` of every ``rewound`` event of the match seen so far (folded or held
    back), in stream order: which of its ticks are abandoned (state.py)."""
    last_tick: int = -1
    """The tick of the match's last event folded into ``data`` or a board: whether a
    rewind abandons something already counted."""
    private: bool = False
    """The match is not ``public_spectating``: the entries it feeds are marked, and
    their owners hidden from anonymous callers (docs/leaderboards.md)."""

    def encode(self) -> bytes:
        return msgpack.packb(
            [
                self.game,
                self.created_at,
                self.tick_rate,
                self.data,
                self.rewinds,
                self.last_tick,
                self.private,
            ]
        )

    @classmethod
    def decode(cls, blob: bytes) -> MatchTally:
        game, created_at, tick_rate, data, rewinds, last_tick, private = msgpack.unpackb(
            blob, strict_map_key=False
        )
        return cls(
            game, created_at, tick_rate, data, [(b, t) for b, t in rewinds], last_tick, private
        )


MetricFn = Callable[[MatchTally, tuple[Any, ...], Lookup], list[Observation]]


@dataclass(frozen=True)
class GameMetrics:
    """A game's metrics by name and the event codes that trigger them."""

    metrics: dict[str, tuple[int, MetricFn]]
    """metric name -> (event code, function)."""
    fold: Callable[[MatchTally, int, tuple[Any, ...]], None]
    """Updates the tally's ``data`` with one event (called after the metrics saw it)."""
    codes: frozenset[int]
    """Event codes the tally or a metric reads; every other event is skipped unread."""
    end_code: int
    """The match-ended event: after it the tally is dropped."""
    seed: Callable[[MatchTally, tuple[Any, ...]], None] | None = None
    """Sets a fork's tally from its ``forked`` event's data (replay/system.py): who holds
    which seat in the parent's state, with nothing of the parent's totals, so a fork
    counts only what happens in it. None: a fork's tally starts empty."""
