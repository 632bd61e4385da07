"""Forks: a new live match that starts from the exact state of any tick of another.

:func:`prepare_fork` reads the parent's state of tick T (the replay engine: a running,
ended or imported match) and returns a :class:`ForkStart`, which ``Lobby.create`` uses:
the fork's stream opens with a ``forked`` event at tick T carrying that state (plus a
keyframe there), its machine starts from it at tick T + 1, and its seats are held for
the parent's players (docs/replay.md "Rewinds and forks": the seat mapping).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from replay.engine import ReplayEngine
from replay.errors import TickOutOfRangeError
from replay.events import SYSTEM_FORKED, NewEvent
from replay.keyframes import make_keyframe
from replay.rules import GameRegistry, Rules
from replay.store.base import EventStore, MatchRecord
from server.match import Match, Seat

__all__ = ["ForkError", "ForkStart", "prepare_fork"]


class ForkError(ValueError):
    """A fork refused: ``code`` ``fork_at_end`` or ``tick_out_of_range``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ForkStart:
    parent: MatchRecord
    tick: int
    rules: Rules[Any]
    state: Any
    """The parent's state of ``tick``, exactly (the fork's clock stays the parent's)."""
    players: list[str]
    """The parent's players seated at ``tick``: each keeps its seat in the fork."""

    def event(self) -> NewEvent:
        pairs = [p for player in self.players for p in (player, player)]
        return NewEvent(
            SYSTEM_FORKED,
            self.tick,
            (
                self.parent.match_id,
                self.tick,
                self.rules.state_format,
                self.rules.encode_state(self.state),
                pairs,
            ),
        )

    async def record_origin(self, store: EventStore, record: MatchRecord) -> MatchRecord:
        """Store the fork's first event and a keyframe of its first state; the record after."""
        await store.append(record.match_id, [self.event()], 0)
        await store.put_keyframe(make_keyframe(self.rules, record.match_id, self.state))
        update: dict[str, Any] = {"players": list(self.players)}
        if self.rules.started(self.state):
            update["status"] = "running"
        await store.update_match(record.match_id, **update)
        return await store.get_match(record.match_id)

    def hold_seats(self, match: Match) -> None:
        """Each parent player's seat waits for it (a JOIN resumes it) for the grace period;
        unclaimed, it is given up like a disconnected player's."""
        deadline = time.monotonic() + match.grace_period
        for player in self.players:
            slot = self.rules.seat_of(self.state, player)
            match.seats[player] = Seat(player, slot=slot, held_until=deadline)
        if self.rules.started(self.state):
            match.status = "running"


async def prepare_fork(
    store: EventStore, games: GameRegistry, parent_id: str, at_tick: int
) -> ForkStart:
    """The parent's state of ``at_tick``. Raises UnknownMatchError, ForkError."""
    engine = ReplayEngine(store, games)
    parent = await engine.match(parent_id, refresh=True)
    rules = games[parent.game]
    try:
        state = await engine.state_at(parent_id, at_tick)
    except TickOutOfRangeError as exc:
        raise ForkError("tick_out_of_range", str(exc)) from None
    if rules.is_over(state):
        raise ForkError("fork_at_end", f"match {parent_id} is over at tick {at_tick}")
    players = [p for p in parent.players if rules.seat_of(state, p) is not None]
    return ForkStart(parent, at_tick, rules, state, players)
