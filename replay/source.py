"""What the replay engine reads: a :class:`ReplaySource`.

The engine, playback and timeline need only these calls, so the same code
replays a match from the event store (:class:`~replay.store.base.EventStore`
satisfies the protocol as is) or straight from an exported replay file
(:class:`~replay.replay_file.ReplayFileReader`), without importing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from replay.rules import StoredEvent
from replay.store.base import EventBatch, Keyframe, MatchRecord

__all__ = ["ReplaySource", "StoredEvent", "events_in", "read_events"]


@runtime_checkable
class ReplaySource(Protocol):
    async def get_match(self, match_id: str) -> MatchRecord:
        """Raises UnknownMatchError."""
        ...

    async def read_batches(
        self,
        match_id: str,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        from_tick: int | None = None,
        to_tick: int | None = None,
    ) -> list[EventBatch]:
        """Whole batches overlapping the ranges, in seq order, decoded and upcast."""
        ...

    async def get_keyframe(self, match_id: str, at_or_before: int) -> Keyframe | None: ...

    async def keyframe_ticks(self, match_id: str) -> list[int]: ...

    async def last_position(self) -> int:
        """Highest committed global position: the live-follow wait starts after it."""
        ...

    async def wait_for_commit(self, after: int, timeout: float) -> None:
        """Return once a position > ``after`` may be committed, or after ``timeout``."""
        ...


def events_in(batches: Iterable[EventBatch], from_tick: int, to_tick: int) -> Iterator[StoredEvent]:
    """The events of ``batches`` with ``from_tick <= tick <= to_tick``, in order.

    Sources return whole batches, and a batch may span ticks on both sides of
    the range (or sit in a neighbouring read window), so every read is trimmed
    by tick: that is what keeps a windowed read free of gaps and duplicates.
    """
    for batch in batches:
        events = batch.events
        # Ticks are non-decreasing within a match, so the common case (batch
        # wholly inside the range) is decided by its first and last event.
        if events and events[0][2] >= from_tick and events[-1][2] <= to_tick:
            yield from events
        else:
            yield from (e for e in events if from_tick <= e[2] <= to_tick)


async def read_events(
    source: ReplaySource, match_id: str, from_tick: int, to_tick: int
) -> list[StoredEvent]:
    """The events of one match with ``from_tick <= tick <= to_tick``."""
    if to_tick < from_tick:
        return []
    batches = await source.read_batches(match_id, from_tick=from_tick, to_tick=to_tick)
    return list(events_in(batches, from_tick, to_tick))
