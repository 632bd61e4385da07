"""The audit trail of a match: who caused what, when, read back from its stream.

Nothing extra is stored for it: the ``inputs`` events (replay/system.py, folded by
:class:`~replay.system.InputLedger`) say which client seq of which seat each tick
applied; the game's seat event (``Rules.seat_event``) says which player held the
seat; ``admin``, ``session``, ``rewound`` and ``forked`` events say who did what to
the match, when (wall clock) and why. :func:`audit` turns them into one list of JSON
entries in stream order, paged by tick (docs/replay.md "Audit").

Entry shapes (``kind`` first):

* ``input``: ``tick``, ``player``, ``seat``, ``seq`` (the client seq whose input the
  tick applied; null: every input received since the previous tick was refused or
  dropped by a rewind) and ``acked`` (every seq up to it is done);
* ``joined``: ``tick``, ``player``, ``seat`` (the game's seat event);
* ``session``: ``tick``, ``player``, ``what``, ``at_ms``;
* ``admin``: ``tick``, ``actor``, ``action``, ``reason``, ``at_ms`` and ``detail``
  (a rewind: ``action`` ``rewind``, ``detail`` ``{"from_tick", "to_tick"}``);
* ``forked``: ``tick``, ``parent``, ``parent_tick``.
"""

from __future__ import annotations

from typing import Any

from replay.engine import FOLD_WINDOW_TICKS, ReplayEngine
from replay.events import (
    SYSTEM_ADMIN,
    SYSTEM_FORKED,
    SYSTEM_INPUTS,
    SYSTEM_REWOUND,
    SYSTEM_SESSION,
)
from replay.fold import restored_state
from replay.source import read_events
from replay.system import InputLedger

__all__ = ["MAX_AUDIT_PAGE", "audit"]

MAX_AUDIT_PAGE = 10_000
"""Entries per page at most (a page ends on a tick boundary, so it may hold a few more)."""


async def audit(
    engine: ReplayEngine,
    match_id: str,
    *,
    player: str | None = None,
    from_tick: int = 0,
    to_tick: int | None = None,
    limit: int = 1000,
) -> dict[str, Any]:
    """``{"match_id", "entries": [...], "next_from": tick | None}``: the entries with
    ``from_tick <= tick <= to_tick`` (of ``player`` only, when given: its inputs, joins
    and sessions, no admin actions), at most ``limit`` plus the rest of the last tick;
    ``next_from`` is where the next page starts (None: no more). Raises UnknownMatchError.

    The input ledger is run-length encoded, so the stream is read from tick 0 each time
    (about 1 ms per 3,000 ticks of a 64-player match beside the read)."""
    record = await engine.match(match_id, refresh=True)
    rules = engine.rules(record)
    catalog = rules.stream_catalog
    last = record.last_tick if to_tick is None else min(to_tick, record.last_tick)
    seat_event = rules.seat_event
    seat = (
        (
            seat_event.code,
            catalog[seat_event.code].fields.index(seat_event.seat),
            catalog[seat_event.code].fields.index(seat_event.player),
        )
        if seat_event is not None
        else None
    )
    holder: dict[int, str] = {}
    ledger = InputLedger()
    entries: list[dict[str, Any]] = []
    limit = max(1, min(limit, MAX_AUDIT_PAGE))

    def inputs(applied: Any) -> None:
        for a in applied:
            who = holder.get(a.seat)
            if a.tick < from_tick or (player is not None and who != player):
                continue
            entries.append(
                {
                    "kind": "input",
                    "tick": a.tick,
                    "player": who,
                    "seat": a.seat,
                    "seq": a.applied or None,
                    "acked": a.acked,
                }
            )

    start = 0
    while start <= last:
        end = min(last, start + FOLD_WINDOW_TICKS - 1)
        for code, _version, tick, data in await read_events(engine.source, match_id, start, end):
            if entries and len(entries) >= limit and tick > entries[-1]["tick"]:
                return {"match_id": match_id, "entries": entries, "next_from": tick}
            if code == SYSTEM_INPUTS:
                inputs(ledger.apply(tick, data))
                continue
            inputs(ledger.advance(tick - 1))
            if code == SYSTEM_FORKED:  # a fork's seats are held by the parent's players
                state = restored_state(rules, code, tick, data)
                for who in data[4][1::2]:
                    slot = rules.seat_of(state, who)
                    if slot is not None:
                        holder[slot] = who
            entry = _entry(code, tick, data, seat, holder)
            if entry is None or tick < from_tick:
                continue
            if player is None or entry.get("player") == player:
                entries.append(entry)
        inputs(ledger.advance(end))
        if entries and len(entries) >= limit and end < last:
            return {"match_id": match_id, "entries": entries, "next_from": end + 1}
        start = end + 1
    return {"match_id": match_id, "entries": entries, "next_from": None}


def _entry(
    code: int,
    tick: int,
    data: tuple[Any, ...],
    seat: tuple[int, int, int] | None,
    holder: dict[int, str],
) -> dict[str, Any] | None:
    """The audit entry of one non-``inputs`` event, or None for a game event that is not
    a seat change. Keeps ``holder`` (seat -> player) current."""
    if code == SYSTEM_ADMIN:
        actor, action, reason, at_ms, detail = data
        return {
            "kind": "admin",
            "tick": tick,
            "actor": actor,
            "action": action,
            "reason": reason,
            "at_ms": at_ms,
            "detail": detail,
        }
    if code == SYSTEM_REWOUND:
        from_tick, to_tick, actor, reason, at_ms = data[:5]
        return {
            "kind": "admin",
            "tick": tick,
            "actor": actor,
            "action": "rewind",
            "reason": reason,
            "at_ms": at_ms,
            "detail": {"from_tick": from_tick, "to_tick": to_tick},
        }
    if code == SYSTEM_SESSION:
        who, what, at_ms = data
        return {"kind": "session", "tick": tick, "player": who, "what": what, "at_ms": at_ms}
    if code == SYSTEM_FORKED:
        return {"kind": "forked", "tick": tick, "parent": data[0], "parent_tick": data[1]}
    if seat is not None and code == seat[0]:
        slot, who = data[seat[1]], data[seat[2]]
        holder[slot] = who
        return {"kind": "joined", "tick": tick, "player": who, "seat": slot}
    return None
