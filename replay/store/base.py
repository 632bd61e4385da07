"""The event store interface: the one source of truth.

The server, the replay engine and the projections see only this module.
Backends (SQLite today, PostgreSQL later) implement :class:`EventStore` and
must pass the shared test cases in ``tests/store_contract.py``.

Storage model. A match is a stream of events numbered by ``seq`` 1, 2, 3, ...
An append stores one *batch*: the events of one match written in one call
(typically one simulation tick). Every event also gets a global
``position``; positions are strictly increasing in commit order across all
matches, so a subscriber that has seen position ``p`` has seen everything
before it (no event ever appears later at a lower position).

Idempotency. Event ids are 128-bit integers allocated in consecutive blocks
(:class:`EventIds`): a batch is identified by its first id, and event ``i``
of the batch has id ``first_id + i``. Retrying an append whose ack was lost,
with the same ``first_id`` and ``expected_version``, returns the original
result and writes nothing.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from replay.events import NewEvent, RecordedEvent

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "AppendResult",
    "EventBatch",
    "EventIds",
    "EventStore",
    "Keyframe",
    "MatchRecord",
    "MatchStatus",
]

MatchStatus = Literal["created", "running", "ended", "interrupted"]
READ_ONLY_STATUSES: frozenset[str] = frozenset({"ended", "interrupted"})

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


class EventStore(abc.ABC):
    """Async, append-only storage of match events, metadata and keyframes.

    Concurrency contract: ``append`` calls may come from many tasks at once;
    implementations gather them (group commit) so that durability is paid per
    batch of appends, not per event. An awaited ``append`` returns only after
    its events are durable at the configured durability level.
    """

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    # -- lifecycle -------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending appends durably, then release resources."""

    async def __aenter__(self) -> EventStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- matches -----------------------------------------------------------------

    @abc.abstractmethod
    async def create_match(self, record: MatchRecord) -> MatchRecord:
        """Store a new match. Raises MatchExistsError."""

    @abc.abstractmethod
    async def get_match(self, match_id: str) -> MatchRecord:
        """Raises UnknownMatchError."""

    @abc.abstractmethod
    async def list_matches(
        self,
        *,
        status: str | Sequence[str] | None = None,
        game: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MatchRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def update_match(
        self,
        match_id: str,
        *,
        status: MatchStatus | None = None,
        ended_at: float | None = None,
        players: Sequence[str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> MatchRecord:
        """Change the mutable metadata. An ended or interrupted match stays read-only
        for events; its status may still move from interrupted to ended."""

    # -- events ------------------------------------------------------------------

    @abc.abstractmethod
    async def append(
        self,
        match_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        first_id: int | None = None,
    ) -> AppendResult:
        """Append ``events`` if the match is at ``expected_version``.

        Raises ConcurrencyError (version mismatch), UnknownMatchError,
        MatchEndedError, EventTooLargeError, EventEncodeError; in every case
        nothing is written. ``first_id`` names the batch for idempotent retries;
        when omitted the store allocates ids itself.
        """

    @abc.abstractmethod
    async def read_batches(
        self,
        match_id: str,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        from_tick: int | None = None,
        to_tick: int | None = None,
    ) -> list[EventBatch]:
        """Batches overlapping the seq range and the (inclusive) tick range, in seq order.

        Batches are returned whole: callers trim the edges (``read``/``read_ticks``
        do). Raises UnknownMatchError, CorruptEventError (naming match and seq).
        """

    @abc.abstractmethod
    async def read_all(self, after: int = 0, limit: int = 10_000) -> list[RecordedEvent]:
        """Events of all matches with position > ``after``, in global order."""

    async def read_all_batches(self, after: int = 0, limit: int = 1_000) -> list[EventBatch]:
        """Events of all matches with position > ``after``, in global order, as at most
        ``limit`` batches: the fast path for projections and rebuilds (no object per
        event). Backends override it; this default groups ``read_all``'s events."""
        out: list[EventBatch] = []
        for e in await self.read_all(after, limit):
            last = out[-1] if out else None
            row = (e.type, e.version, e.tick, e.data)
            if (
                last is not None
                and last.match_id == e.match_id
                and (last.last_seq, last.last_position) == (e.seq - 1, e.position - 1)
                and last.first_id + len(last.events) == e.id
            ):
                last.events.append(row)
            else:
                out.append(EventBatch(e.match_id, e.seq, e.position, e.id, [row]))
        return out

    async def scan(
        self, after: int, limit: int, types: Collection[int]
    ) -> tuple[list[EventBatch], int]:
        """The batches among the next ``limit`` after ``after`` that hold an event of
        one of ``types`` (the first trimmed to positions > ``after``), and the position
        scanned through: every event up to it was considered. In the batches returned,
        the events of other types are None: event ``i`` still has position
        ``first_position + i``, but it is not built (nor upcast).

        A projection that reads a few event types moves its checkpoint to the scanned
        position without decoding the batches it does not need, nor the events it does
        not read. This default filters ``read_all_batches``; backends that index event
        types skip the decoding.
        """
        batches = await self.read_all_batches(after, limit)
        through = batches[-1].last_position if batches else after
        wanted = frozenset(types)
        out = []
        for b in batches:
            events = [e if e[0] in wanted else None for e in b.events]
            if events.count(None) < len(events):
                out.append(b._replace(events=events))
        return out, through

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The highest committed position (0 when empty)."""

    @abc.abstractmethod
    async def wait_for_commit(self, after: int, timeout: float) -> None:
        """Return once a position > ``after`` may be committed, or after ``timeout``."""

    async def read(
        self, match_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one match with ``from_seq <= seq <= to_seq``."""
        out: list[RecordedEvent] = []
        for batch in await self.read_batches(match_id, from_seq=from_seq, to_seq=to_seq):
            out.extend(
                e
                for e in batch.recorded()
                if e.seq >= from_seq and (to_seq is None or e.seq <= to_seq)
            )
        return out

    async def read_ticks(self, match_id: str, from_tick: int, to_tick: int) -> list[RecordedEvent]:
        """Events of one match with ``from_tick <= tick <= to_tick``."""
        out: list[RecordedEvent] = []
        for batch in await self.read_batches(match_id, from_tick=from_tick, to_tick=to_tick):
            out.extend(e for e in batch.recorded() if from_tick <= e.tick <= to_tick)
        return out

    async def subscribe(
        self, after: int = 0, *, batch_size: int = 10_000, poll_interval: float = 1.0
    ) -> AsyncIterator[RecordedEvent]:
        """Every event with position > ``after`` in global order: first the stored
        ones, then new ones as they are committed, forever.

        No gap and no duplicate across the switch from catch-up to live: there is
        no switch. The same read-from-checkpoint query serves both phases and the
        checkpoint only moves to positions actually yielded. Positions are assigned
        in commit order, so nothing can later appear below the checkpoint.
        """
        position = after
        while True:
            events = await self.read_all(position, batch_size)
            if not events:
                await self.wait_for_commit(position, poll_interval)
                continue
            for event in events:
                # Invariant: strictly increasing, never skipping what was not seen.
                position = event.position
                yield event

    # -- keyframes ---------------------------------------------------------------

    @abc.abstractmethod
    async def put_keyframe(self, keyframe: Keyframe) -> None:
        """Store (or replace) the keyframe of ``(match_id, tick)``."""

    @abc.abstractmethod
    async def get_keyframe(self, match_id: str, at_or_before: int) -> Keyframe | None:
        """The keyframe with the greatest tick <= ``at_or_before``, or None."""

    @abc.abstractmethod
    async def keyframe_ticks(self, match_id: str) -> list[int]:
        """Ticks that have a keyframe, ascending."""

    @abc.abstractmethod
    async def delete_keyframes(self, match_id: str, before_tick: int | None = None) -> int:
        """Drop keyframes (all, or those before ``before_tick``); returns how many."""


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (no exception on timeout)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
