"""Metrics: from a game's events to observations ``(owner, value, subscore)``.

A metric is read from the events alone. What it needs beyond one event (which
player holds which slot, the kills so far in the match) is kept in a
:class:`MatchTally`, itself a fold of the match's events, which the projection
persists with its checkpoint while the match runs.

Arena metrics (event types are looked up by name in the arena catalog):

========== =========== ==================================== ======================
metric     on event    observation per player               subscore
========== =========== ==================================== ======================
kills      killed      killer: 1                            0
deaths     killed      victim: 1                            0
match_score match_ended every player of the match: score    -deaths in the match
wins       match_ended winner (if any): 1                   0
matches    match_ended every player of the match: 1         0
elo        match_ended every player: new rating (rating.py) rated matches so far
========== =========== ==================================== ======================

"Every player of the match" is everyone who joined it, including players who
left before the end (leaving does not dodge a rating change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from replay.leaderboards.board import Entry
from replay.leaderboards.rating import elo_update
from replay.rules import rules_for

__all__ = ["GameMetrics", "MatchTally", "Observation", "game_metrics", "metrics_for"]

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


def _arena() -> GameMetrics:
    catalog = rules_for("arena").catalog
    joined = catalog.by_name("joined").code
    left = catalog.by_name("left").code
    killed = catalog.by_name("killed").code
    ended = catalog.by_name("match_ended").code

    def fold(t: MatchTally, code: int, data: tuple[Any, ...]) -> None:
        if code == killed:
            killer, victim = (t.slots.get(s) for s in data)
            if killer is not None:
                k = t.stats.setdefault(killer, [0, 0, 0])
                k[0] += 1
                k[2] += 1  # a kill is a point of score in arena
            if victim is not None:
                t.stats.setdefault(victim, [0, 0, 0])[1] += 1
        elif code == joined:
            slot, player = data[0], data[1]
            t.slots[slot] = player
            t.stats.setdefault(player, [0, 0, 0])
        elif code == left:
            t.slots.pop(data[0], None)

    def kills(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
        p = t.slots.get(data[0])
        return [(p, 1, 0)] if p is not None else []

    def deaths(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
        p = t.slots.get(data[1])
        return [(p, 1, 0)] if p is not None else []

    def match_score(t: MatchTally, _d: tuple[Any, ...], _: Lookup) -> list[Observation]:
        return [(p, s[2], -s[1]) for p, s in t.stats.items()]

    def wins(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
        return [(data[0], 1, 0)] if data[0] else []

    def matches(t: MatchTally, _d: tuple[Any, ...], _: Lookup) -> list[Observation]:
        return [(p, 1, 0) for p in t.stats]

    def elo(t: MatchTally, _d: tuple[Any, ...], lookup: Lookup) -> list[Observation]:
        current = {p: lookup(p) for p in t.stats}
        ratings = {p: e.value for p, e in current.items() if e is not None}
        new = elo_update(ratings, {p: (s[2], -s[1]) for p, s in t.stats.items()})
        return [
            (p, r, (current[p].subscore if current[p] is not None else 0) + 1)  # type: ignore[union-attr]
            for p, r in new.items()
        ]

    return GameMetrics(
        metrics={
            "kills": (killed, kills),
            "deaths": (killed, deaths),
            "match_score": (ended, match_score),
            "wins": (ended, wins),
            "matches": (ended, matches),
            "elo": (ended, elo),
        },
        fold=fold,
        codes=frozenset({joined, left, killed, ended}),
        end_code=ended,
    )


_GAMES: dict[str, Callable[[], GameMetrics]] = {"arena": _arena}
_cache: dict[str, GameMetrics] = {}


def game_metrics(game: str) -> GameMetrics:
    """The metrics of ``game``; LookupError for a game without leaderboard metrics."""
    if game not in _cache:
        if game not in _GAMES:
            raise LookupError(f"game {game!r} has no leaderboard metrics; known: {sorted(_GAMES)}")
        _cache[game] = _GAMES[game]()
    return _cache[game]


def metrics_for(game: str) -> dict[str, tuple[int, MetricFn]]:
    return game_metrics(game).metrics
