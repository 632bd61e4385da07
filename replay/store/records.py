"""The values the event store takes and returns: match records, keyframes, append
results, decoded batches and event id blocks (docs/events.md)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from replay.events import RecordedEvent

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "READ_ONLY_STATUSES",
    "AppendResult",
    "EventBatch",
    "EventIds",
    "Keyframe",
    "Lease",
    "MatchRecord",
    "MatchStatus",
    "NodeRow",
    "NodeStatus",
]

MatchStatus = Literal["created", "running", "ended", "interrupted"]
READ_ONLY_STATUSES: frozenset[str] = frozenset({"ended", "interrupted"})
LIVE_STATUSES: frozenset[str] = frozenset({"created", "running"})
"""The statuses of a match a node can own (lease) and play."""
NodeStatus = Literal["up", "draining", "stopped"]
NODE_STATUSES: frozenset[str] = frozenset({"up", "draining", "stopped"})

DEFAULT_MAX_EVENT_BYTES = 16 * 1024
"""Largest encoded event accepted. Arena events are 10-40 bytes; 16 KiB leaves room
for chat and custom games while bounding what one bad event can cost every reader."""


@dataclass(frozen=True)
class MatchRecord:
    """Match metadata. ``version`` and ``last_tick`` are derived from the stored events."""

    match_id: str
    game: str
    rules_version: str
    tick_rate: int
    players: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    status: MatchStatus = "created"
    version: int = 0
    """seq of the last stored event (0: none)."""
    last_tick: int = -1
    """tick of the last stored event (-1: none)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Server options of the match that the game rules never see (JSON object), e.g.
    ``spectator_delay`` and ``public_spectating`` (docs/protocol.md, 11.2). Kept out of
    ``settings`` so ``rules.initial_state(settings, seed)`` gets game settings only."""
    owner: str = ""
    """The node instance holding the match's lease ("": never leased; see :class:`Lease`).
    Read from the store; ``create_match`` ignores it (leases are taken with
    ``EventStore.acquire_lease``)."""
    epoch: int = 0
    """The lease's fencing token (0: never leased)."""

    def with_changes(self, **changes: Any) -> MatchRecord:
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """What a replayer needs to know about the match, as plain msgpack/JSON data
        (replay file headers, WATCHING messages)."""
        return {
            "match_id": self.match_id,
            "game": self.game,
            "rules_version": self.rules_version,
            "tick_rate": self.tick_rate,
            "players": list(self.players),
            "settings": self.settings,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Keyframe:
    """A snapshot of a match's state at the end of ``tick``. Derived data: it can
    always be rebuilt from the events, so a bad one is skipped, never trusted."""

    match_id: str
    tick: int
    format_version: int
    data: bytes
    checksum: bytes
    """blake2b-128 of ``data``; readers verify it before use."""


@dataclass(frozen=True)
class AppendResult:
    match_id: str
    first_seq: int
    last_seq: int
    first_position: int
    last_position: int
    first_id: int


class Lease(NamedTuple):
    """Who owns a match in a cluster, and until when (``EventStore.acquire_lease``).

    A match has one owner at a time. Every change of owner raises ``epoch`` by one,
    and a fenced append or update (``epoch=``) is refused unless the match's stored
    epoch is still the writer's: a paused owner that wakes after a takeover can never
    write again."""

    match_id: str
    owner: str
    """The owning node instance id ("": none, the match was never leased)."""
    epoch: int
    """The fencing token: 0 for a match never leased."""
    expires_in: float
    """Seconds until the lease lapses, by the store's clock (negative: lapsed; 0.0 for a
    match never leased)."""


class NodeRow(NamedTuple):
    """A node of a cluster as its last heartbeat left it (``EventStore.nodes``)."""

    node: str
    """Instance id, unique per process start (e.g. ``"n1/5f2a9c"``)."""
    name: str
    """The operator's ``--node`` name (e.g. ``"n1"``)."""
    url: str
    """The node's public websocket URL."""
    started_at: float
    """Unix time of its first heartbeat, by the store's clock."""
    age: float
    """Seconds since its last heartbeat, by the store's clock."""
    status: NodeStatus
    load: dict[str, Any]
    """The JSON object the node reports (seated players, matches, why it is full...)."""


class EventBatch(NamedTuple):
    """One stored batch, decoded and upcast: the fast path for replay folds.

    ``events`` are ``(type, version, tick, data)`` tuples; event ``i`` has
    seq ``first_seq + i``, position ``first_position + i`` and id ``first_id + i``.
    """

    match_id: str
    first_seq: int
    first_position: int
    first_id: int
    events: list[tuple[int, int, int, tuple[Any, ...]]]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1

    @property
    def last_position(self) -> int:
        return self.first_position + len(self.events) - 1

    def recorded(self) -> list[RecordedEvent]:
        m, s, p, i = self.match_id, self.first_seq, self.first_position, self.first_id
        return [
            RecordedEvent(m, s + k, p + k, i + k, tick, type_, data, version)
            for k, (type_, version, tick, data) in enumerate(self.events)
        ]


class EventIds:
    """Allocates event ids in consecutive blocks: 64 random bits naming this
    producer, then a 64-bit counter. Unique across processes without coordination."""

    def __init__(self, prefix: int | None = None) -> None:
        self._prefix = (prefix if prefix is not None else int.from_bytes(os.urandom(8))) << 64
        self._next = 0

    def take(self, n: int) -> int:
        """Reserve ``n`` ids; returns the first."""
        first = self._prefix | self._next
        self._next += n
        return first
