"""The event model: what happened in a match, as immutable, versioned records.

Commands (what a player wants) never reach this module: the rules turn them
into events, which record outcomes. An event is positional: its ``data`` is a
tuple whose layout is fixed by ``(type, version)`` and described by an
:class:`EventType` in the game's :class:`EventCatalog`. Positional payloads keep
the encoded form small (no repeated string keys) and decoding cheap.

Two shapes exist:

* :class:`NewEvent` is what the rules emit and the store appends. It has no
  identity yet.
* :class:`RecordedEvent` is what the store hands back: the same event plus the
  envelope the store assigned (match, per-match ``seq``, global ``position``)
  and the event ``id`` used for idempotent retries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "SYSTEM_ADMIN",
    "SYSTEM_FIRST",
    "SYSTEM_FORKED",
    "SYSTEM_INPUTS",
    "SYSTEM_REWOUND",
    "SYSTEM_SESSION",
    "SYSTEM_TAKEOVER",
    "EventCatalog",
    "EventType",
    "NewEvent",
    "RecordedEvent",
    "UnknownEventType",
    "Upcaster",
]


SYSTEM_FIRST = 0xFF00
"""Event type codes ``0xFF00..0xFFFF`` are matchreplay's own (docs/events.md, "System
events": inputs applied, admin actions, rewinds, takeovers, forks). A game's catalog
uses codes below it; a game's fold skips these."""
SYSTEM_INPUTS = SYSTEM_FIRST
"""Per tick: which players' inputs (client seqs) the tick applied (the audit trail)."""
SYSTEM_ADMIN = SYSTEM_FIRST + 1
"""An admin's action on the match: who, what, when (wall clock) and why."""
SYSTEM_SESSION = SYSTEM_FIRST + 2
"""A player connected, reconnected or went away."""
SYSTEM_REWOUND = SYSTEM_FIRST + 3
"""The match continues from the state of an earlier tick, re-clocked to the event's own tick
(stored ticks never go back: replay/fold.py, docs/replay.md "Rewinds and forks")."""
SYSTEM_TAKEOVER = SYSTEM_FIRST + 4
"""Another node took the match over (failover or hand-over)."""
SYSTEM_FORKED = SYSTEM_FIRST + 5
"""The first event of a fork: the parent point and the exact state the fork starts from."""


class NewEvent(NamedTuple):
    """An event the rules emitted, not yet stored."""

    type: int
    """Event type code, unique within the game's catalog (0-127 encode in one byte)."""
    tick: int
    """Simulation tick the event happened at."""
    data: tuple[Any, ...] = ()
    """Positional payload; its layout is ``catalog[type].fields`` at ``version``."""
    version: int = 1
    """Schema version of ``data``."""


class RecordedEvent(NamedTuple):
    """An event as stored: the envelope plus the event itself."""

    match_id: str
    """The stream the event belongs to."""
    seq: int
    """Per-match version: 1, 2, 3, ... with no gaps."""
    position: int
    """Global position across all matches, assigned by the store, strictly increasing."""
    id: int
    """128-bit event id; a retried append is recognised by its ids."""
    tick: int
    type: int
    data: tuple[Any, ...]
    version: int

    def new_event(self) -> NewEvent:
        return NewEvent(self.type, self.tick, self.data, self.version)


Upcaster = Callable[[tuple[Any, ...]], tuple[Any, ...]]
"""Turns the payload of version ``v`` into the payload of version ``v + 1``."""


class UnknownEventType(LookupError):
    """An event type code or name that the catalog does not define."""


@dataclass(frozen=True)
class EventType:
    """The schema of one event type at its current version.

    ``fields`` names the positions of ``data``. ``upcasters[v]`` turns a
    version-``v`` payload into version ``v + 1``; the chain must reach
    ``version``. Old events replay forever because the chain is never cut:
    an upcaster, once released, is kept.
    """

    code: int
    name: str
    fields: tuple[str, ...]
    version: int = 1
    upcasters: dict[int, Upcaster] = field(default_factory=dict)
    notable: bool = False
    """Whether the event belongs on the timeline (kills, match start and end, ...)."""

    def __post_init__(self) -> None:
        missing = [v for v in range(1, self.version) if v not in self.upcasters]
        if missing:
            raise ValueError(f"event type {self.name!r} lacks upcasters from versions {missing}")


class EventCatalog:
    """Every event type of one game, looked up by code or name."""

    def __init__(self, types: Iterable[EventType]) -> None:
        self._by_code: dict[int, EventType] = {}
        self._by_name: dict[str, EventType] = {}
        for t in types:
            if t.code in self._by_code or t.name in self._by_name:
                raise ValueError(f"duplicate event type {t.code} / {t.name!r}")
            if not 0 <= t.code <= 0xFFFF:
                raise ValueError(f"event type code {t.code} out of range 0..65535")
            self._by_code[t.code] = t
            self._by_name[t.name] = t
        # (code, version) pairs that need no upcasting: the hot read path checks only this.
        self.current: frozenset[tuple[int, int]] = frozenset(
            (t.code, t.version) for t in self._by_code.values()
        )

    def __iter__(self):
        return iter(self._by_code.values())

    def joined(self, other: EventCatalog) -> EventCatalog:
        """One catalog of both (a game's events and the system's share a stream)."""
        return EventCatalog([*self, *other])

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __getitem__(self, code: int) -> EventType:
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownEventType(f"unknown event type code {code}") from None

    def by_name(self, name: str) -> EventType:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventType(f"unknown event type {name!r}") from None

    def upcast(self, code: int, version: int, data: tuple[Any, ...]) -> tuple[tuple[Any, ...], int]:
        """Bring ``data`` of ``version`` up to the current version of ``code``."""
        if (code, version) in self.current:
            return data, version
        t = self[code]
        if version > t.version or version < 1:
            raise ValueError(
                f"event {t.name!r} has version {version}; this build knows 1..{t.version}"
            )
        while version < t.version:
            data = tuple(t.upcasters[version](data))
            version += 1
        return data, version

    def as_dict(self, event: NewEvent | RecordedEvent) -> dict[str, Any]:
        """A self-describing form of an event, for JSON exports and debugging."""
        t = self[event.type]
        out: dict[str, Any] = {"type": t.name, "tick": event.tick, "version": event.version}
        if isinstance(event, RecordedEvent):
            out = {"match_id": event.match_id, "seq": event.seq, "position": event.position} | out
        out["data"] = dict(zip(t.fields, event.data, strict=False))
        return out
