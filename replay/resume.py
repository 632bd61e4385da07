"""Where a match stands in the store: what another node needs to carry it on.

A node that takes a match over (a failover, or a hand-over) rebuilds it at its last
durable tick: the state (nearest keyframe plus events: :meth:`ReplayEngine.state_at`),
each seat's acknowledged client seq and the seats whose inputs were stepping one seq
a tick (folded from the ``inputs`` events: :class:`replay.system.InputLedger`), and who
holds which seat. :meth:`replay.machine.MatchMachine.resume` takes exactly this, so an
input acknowledged before the takeover stays applied and one resent after it is
recognised as done (at most once).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from replay.engine import FOLD_WINDOW_TICKS, ReplayEngine
from replay.events import SYSTEM_FORKED, SYSTEM_INPUTS
from replay.source import read_events
from replay.store.records import MatchRecord
from replay.system import InputLedger

__all__ = ["ResumePoint", "resume_point"]


@dataclass(frozen=True, slots=True)
class ResumePoint:
    record: MatchRecord
    """The match as stored (``version`` is the last durable seq)."""
    state: Any
    """The state at the end of ``tick`` (the initial state when nothing is stored)."""
    tick: int
    """The last durable tick (-1: no event stored yet)."""
    acked: dict[int, int]
    """Seat -> every client seq up to this one is done."""
    stepping: frozenset[int]
    """Seats whose next tick, in the ``inputs`` run-length code, steps one seq on."""
    seats: dict[str, int]
    """Player -> seat, of the players seated in ``state``."""


async def resume_point(engine: ReplayEngine, match_id: str) -> ResumePoint:
    """Raises UnknownMatchError, CorruptEventError (a damaged match is not carried on)."""
    record = await engine.match(match_id, refresh=True)
    rules = engine.rules(record)
    last = record.last_tick
    if last < 0:
        state = rules.initial_state(record.settings, record.seed)
    else:
        state = await engine.state_at(match_id, last)
    seat_event = rules.seat_event
    player_at = (
        rules.stream_catalog[seat_event.code].fields.index(seat_event.player)
        if seat_event is not None
        else None
    )
    players: set[str] = set(record.players)
    ledger = InputLedger()
    start = 0
    while start <= last:
        end = min(last, start + FOLD_WINDOW_TICKS - 1)
        for code, _version, tick, data in await read_events(engine.source, match_id, start, end):
            if code == SYSTEM_INPUTS:
                deque(ledger.apply(tick, data), maxlen=0)
            elif code == SYSTEM_FORKED:  # a fork's seats are held by the parent's players
                players.update(data[4][1::2])
            elif seat_event is not None and code == seat_event.code and player_at is not None:
                players.add(data[player_at])
        start = end + 1
    deque(ledger.advance(last), maxlen=0)
    seats = {p: s for p in players if (s := rules.seat_of(state, p)) is not None}
    return ResumePoint(record, state, last, dict(ledger.acked), frozenset(ledger.stepping), seats)
