"""matchreplay's own events: what the match machine and the server record beside a game's.

Their type codes are ``0xFF00`` and up (``replay.events.SYSTEM_*``); no game catalog
uses them and a game's fold skips them. Their payloads (docs/events.md, "System
events") are defined here once, with the fold of the input audit trail.

``inputs``: which client seq each seat's input came from, the audit trail that
also keeps "each seq applied at most once" true when another process carries a
match on. It is written for every match, so it is run-length encoded over
ticks: a seat is *stepping* while, tick after tick, its acknowledged seq moves up
by exactly one and its input of that seq is the one the tick applies (a player
sending one input a tick). An ``inputs`` event is stored only at a tick where that
changes for some seat::

    (start, stop, jumps, unapplied)

* ``start``: seats that step at this tick and did not at the previous one;
* ``stop``: seats that stepped at the previous tick and do not at this one (idle:
  no input; or one of ``jumps``);
* ``jumps``: flat ``[seat, seq, ...]``: this tick acknowledges up to ``seq`` for a
  seat that does not step (its first input, several inputs in one tick, a gap);
* ``unapplied``: flat ``[seat, seq, ...]`` for the seats of ``jumps`` whose applied
  input is not the acknowledged one: ``seq`` is the one applied, or 0 when none was
  (every input received since the previous tick was refused).

``rewound`` (a live match rewound, at tick B, to tick T; written by the machine,
replay/machine.py): ``from_tick`` (B - 1, the last tick played before), ``to_tick`` (T),
``actor`` (the admin id from the token), ``reason``, ``at_ms`` (wall clock, ms since the
epoch), ``state_format`` and ``state``: ``rules.encode_state`` of the state of T exactly
as ``state_at(T)`` gave it, not re-clocked. The state of tick B is that state re-clocked
to B (replay/fold.py); nothing else happens at B but the input audit.

``admin`` (an admin acted on the match; written by the server, server/match.py, first in
the tick that carries the action out): ``actor`` (the admin id from the token),
``action`` (``create``, ``start``, ``end``, ``fork``, ``kick``), ``reason`` (as given,
at most MAX_REASON_CHARS), ``at_ms`` (wall clock) and ``detail`` (None; a fork: its
origin ``{"match_id", "tick", "players"}``; a kick: the kicked player's id). A rewind is
its own ``rewound`` event. One event of five short fields per action: a match has a
handful, so they cost the store nothing measurable.

``session`` (a player's connection changed; written by the server): ``player``,
``what`` (SESSION_CHANGES: ``join``, the first connection to a seat held for the player,
a fork's; ``reconnect``, a new connection to its seat after a ``disconnect``;
``disconnect``, the connection went away and the seat is held for the grace period;
``leave``, it gave the seat up; ``timeout``, the grace period ran out; ``kicked``, an
admin removed it) and ``at_ms``. A first join is the game's seat event instead.

A reader meets codes from 0xFF00 up that this build does not define (a newer server's)
and skips them: a fold never changes the state for a system event it does not know.

``forked`` (the first event of a fork, at the parent's tick T): ``parent`` (match id),
``parent_tick`` (T), ``state_format``, ``state`` (the parent's state of T), ``players``
(flat ``[parent player, fork player, ...]``: the documented seat mapping).

Every tick between two ``inputs`` events steps exactly the seats stepping after the
first one. The acknowledged seq is cumulative (every input up to it was applied,
superseded by a newer one before the tick, or refused): that is what makes a resent
input apply at most once. :class:`InputLedger` folds these events back into each
seat's acknowledged seq at any tick and the list of applied inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from replay.events import (
    SYSTEM_ADMIN,
    SYSTEM_FORKED,
    SYSTEM_INPUTS,
    SYSTEM_REWOUND,
    SYSTEM_SESSION,
    SYSTEM_TAKEOVER,
    EventCatalog,
    EventType,
    NewEvent,
)

__all__ = [
    "CATALOG",
    "MAX_REASON_CHARS",
    "SESSION_CHANGES",
    "AppliedInput",
    "InputLedger",
    "InputRecorder",
]

MAX_REASON_CHARS = 200
"""An admin's reason (``admin``, ``rewound``) is cut to this many characters."""
SESSION_CHANGES = ("join", "reconnect", "disconnect", "leave", "timeout", "kicked")
"""What a ``session`` event's ``what`` says (module docstring)."""

CATALOG = EventCatalog(
    [
        EventType(SYSTEM_INPUTS, "inputs", ("start", "stop", "jumps", "unapplied")),
        EventType(
            SYSTEM_ADMIN, "admin", ("actor", "action", "reason", "at_ms", "detail"), notable=True
        ),
        EventType(SYSTEM_SESSION, "session", ("player", "what", "at_ms")),
        EventType(
            SYSTEM_REWOUND,
            "rewound",
            ("from_tick", "to_tick", "actor", "reason", "at_ms", "state_format", "state"),
            notable=True,
        ),
        EventType(
            SYSTEM_TAKEOVER,
            "takeover",
            ("from_node", "to_node", "epoch", "ticks_skipped", "at_ms"),
            notable=True,
        ),
        EventType(
            SYSTEM_FORKED,
            "forked",
            ("parent", "parent_tick", "state_format", "state", "players"),
            notable=True,
        ),
    ]
)


class AppliedInput(NamedTuple):
    """One seat's input at one tick, as the audit trail records it."""

    tick: int
    seat: int
    acked: int
    """Every client seq up to this one is done (applied, superseded or refused)."""
    applied: int
    """The seq whose input the tick used; 0: none (all refused)."""


class InputRecorder:
    """The machine's side: turns each tick's acknowledgements into ``inputs`` events."""

    def __init__(self, acked: dict[int, int] | None = None) -> None:
        self.acked: dict[int, int] = dict(acked or {})
        """seat -> acknowledged seq so far."""
        self.stepping: set[int] = set()

    def forget(self, seat: int) -> None:
        """Another player holds ``seat`` now: its seqs are not a continuation."""
        self.acked.pop(seat, None)

    def record(self, tick: int, acks: dict[int, tuple[int, int]]) -> NewEvent | None:
        """``acks``: seat -> (acknowledged seq, applied seq) of this tick. The event to
        store, when this tick changes the pattern."""
        acked, stepping = self.acked, self.stepping
        start: list[int] = []
        stop: list[int] = []
        jumps: list[int] = []
        unapplied: list[int] = []
        for seat, (seq, applied) in acks.items():
            if seq == acked.get(seat, -1) + 1 and applied == seq:
                if seat not in stepping:
                    stepping.add(seat)
                    start.append(seat)
            else:
                if seat in stepping:
                    stepping.discard(seat)
                    stop.append(seat)
                jumps += (seat, seq)
                if applied != seq:
                    unapplied += (seat, applied)
            acked[seat] = seq
        if len(stepping) > len(acks) - len(jumps) // 2:
            idle = [s for s in stepping if s not in acks]
            stepping.difference_update(idle)
            stop += idle
        if not (start or stop or jumps):
            return None
        return NewEvent(SYSTEM_INPUTS, tick, (start, stop, jumps, unapplied))


class InputLedger:
    """The reader's side: each seat's acknowledged seq, folded from ``inputs`` events."""

    def __init__(self) -> None:
        self.acked: dict[int, int] = {}
        self.stepping: set[int] = set()
        self.tick = -1
        """The tick the ledger reflects (the ticks after the last event step on)."""

    def advance(self, to_tick: int) -> Iterator[AppliedInput]:
        """The steps of the ticks after :attr:`tick` up to ``to_tick`` (no event between)."""
        acked = self.acked
        for tick in range(self.tick + 1, to_tick + 1):
            for seat in sorted(self.stepping):
                seq = acked[seat] = acked.get(seat, -1) + 1
                yield AppliedInput(tick, seat, seq, seq)
        self.tick = max(self.tick, to_tick)

    def apply(self, tick: int, data: tuple[Any, ...]) -> Iterator[AppliedInput]:
        """Fold the ``inputs`` event of ``tick`` (the ticks before it step first)."""
        yield from self.advance(tick - 1)
        start, stop, jumps, unapplied = data
        self.stepping.difference_update(stop)
        self.stepping.update(start)
        other = dict(zip(unapplied[::2], unapplied[1::2], strict=True))
        acked = self.acked
        for seat in sorted(start):
            seq = acked[seat] = acked.get(seat, -1) + 1
            yield AppliedInput(tick, seat, seq, seq)
        for seat, seq in zip(jumps[::2], jumps[1::2], strict=True):
            acked[seat] = seq
            yield AppliedInput(tick, seat, seq, other.get(seat, seq))
        for seat in sorted(self.stepping.difference(start)):
            seq = acked[seat] = acked.get(seat, -1) + 1
            yield AppliedInput(tick, seat, seq, seq)
        self.tick = tick
