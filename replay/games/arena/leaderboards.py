"""Arena on the global leaderboards: its metrics and the boards a server keeps by default.

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
left before the end (leaving does not dodge a rating change). A fork's players are
those seated in the parent's state at the fork tick (mapped to the fork's players)
and whoever joins the fork; only what they do in the fork counts.

The match tally's data (replay/leaderboards/metrics.py) holds ``slots`` (slot ->
player id, current) and ``stats`` (player id -> [kills, deaths, score]); score
counts as the rules count it (``KILL_SCORE``, defined once in settings.py).
"""

from __future__ import annotations

from typing import Any

import replay.games.arena.events as ev
from replay.games.arena.settings import KILL_SCORE
from replay.games.arena.state import ArenaState
from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.metrics import GameMetrics, Lookup, MatchTally, Observation
from replay.leaderboards.rating import elo_update

__all__ = ["default_boards", "metrics"]


def _slots(t: MatchTally) -> dict[int, str]:
    return t.data.setdefault("slots", {})


def _stats(t: MatchTally) -> dict[str, list[int]]:
    return t.data.setdefault("stats", {})


def _fold(t: MatchTally, code: int, data: tuple[Any, ...]) -> None:
    slots, stats = _slots(t), _stats(t)
    if code == ev.KILLED:
        killer, victim = (slots.get(s) for s in data)
        if killer is not None:
            k = stats.setdefault(killer, [0, 0, 0])
            k[0] += 1
            k[2] += KILL_SCORE
        if victim is not None:
            stats.setdefault(victim, [0, 0, 0])[1] += 1
    elif code == ev.JOINED:
        slot, player = data[0], data[1]
        slots[slot] = player
        stats.setdefault(player, [0, 0, 0])
    elif code == ev.LEFT:
        slots.pop(data[0], None)


def _seed(t: MatchTally, forked: tuple[Any, ...]) -> None:
    """A fork's tally: the parent's seats at the fork tick, mapped to the fork's players,
    with nothing counted yet (the parent's totals are the parent's)."""
    _parent, _tick, _state_format, blob, pairs = forked
    mapping = dict(zip(pairs[::2], pairs[1::2], strict=True))
    state = ArenaState.decode(blob)
    slots, stats = _slots(t), _stats(t)
    for slot, player in enumerate(state.players):
        if player is not None and state.present[slot]:
            player = mapping.get(player, player)
            slots[slot] = player
            stats.setdefault(player, [0, 0, 0])


def _kills(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
    p = _slots(t).get(data[0])
    return [(p, 1, 0)] if p is not None else []


def _deaths(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
    p = _slots(t).get(data[1])
    return [(p, 1, 0)] if p is not None else []


def _match_score(t: MatchTally, _d: tuple[Any, ...], _: Lookup) -> list[Observation]:
    return [(p, s[2], -s[1]) for p, s in _stats(t).items()]


def _wins(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
    return [(data[0], 1, 0)] if data[0] else []


def _matches(t: MatchTally, _d: tuple[Any, ...], _: Lookup) -> list[Observation]:
    return [(p, 1, 0) for p in _stats(t)]


def _elo(t: MatchTally, _d: tuple[Any, ...], lookup: Lookup) -> list[Observation]:
    stats = _stats(t)
    current = {p: lookup(p) for p in stats}
    ratings = {p: e.value for p, e in current.items() if e is not None}
    new = elo_update(ratings, {p: (s[2], -s[1]) for p, s in stats.items()})
    return [
        (p, r, (current[p].subscore if current[p] is not None else 0) + 1)  # type: ignore[union-attr]
        for p, r in new.items()
    ]


_METRICS = GameMetrics(
    metrics={
        "kills": (ev.KILLED, _kills),
        "deaths": (ev.KILLED, _deaths),
        "match_score": (ev.MATCH_ENDED, _match_score),
        "wins": (ev.MATCH_ENDED, _wins),
        "matches": (ev.MATCH_ENDED, _matches),
        "elo": (ev.MATCH_ENDED, _elo),
    },
    fold=_fold,
    codes=frozenset({ev.JOINED, ev.LEFT, ev.KILLED, ev.MATCH_ENDED}),
    end_code=ev.MATCH_ENDED,
    seed=_seed,
)


def metrics() -> GameMetrics:
    return _METRICS


def default_boards() -> tuple[BoardDefinition, ...]:
    """The boards shipped for arena (metrics and tie-break subscores: docs/leaderboards.md)."""
    return (
        BoardDefinition("kills", "kills", "incr", game="arena", title="Total kills"),
        BoardDefinition(
            "best_score", "match_score", "best", game="arena", title="Best score in a match"
        ),
        BoardDefinition("wins", "wins", "incr", game="arena", title="Wins"),
        BoardDefinition("rating", "elo", "set", game="arena", title="Skill rating (Elo)"),
        BoardDefinition(
            "kills_weekly", "kills", "incr", reset="weekly", game="arena", title="Kills this week"
        ),
    )
