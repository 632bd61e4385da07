"""Reading the global stream a chunk at a time for the projection: read-ahead, and
passing over a damaged batch instead of stopping at it.

A chunk is ``store.scan(after, limit, codes)``: the batches among the next ``limit``
stored batches that hold an event some board reads. When the store cannot decode
one of them (``CorruptEventError``), the chunk is narrowed by bisection to the
longest readable prefix, and the damaged batch is passed over: its position is
learnt from a scan for no event type, which computes how far the next batch
reaches without decoding it. The caller gets the prefix, a ``through`` just past
the damaged batch, and a :class:`~replay.leaderboards.state.DamagedBatch` to report.
Finding it costs about ``log2(limit)`` extra scans, once per damaged batch.

A damaged page of the file (SQLite's ``database disk image is malformed``, which a
server meets only when it reads that page: ``serve`` starts on a store whose old
batches are damaged) is found the same way; as not even the batch's end can be read
there, the first position after which the store reads again is searched for
(``log2`` of the damaged range more scans), and the whole unreadable range is passed
over as one damaged batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import NamedTuple

from replay.errors import CorruptEventError
from replay.leaderboards.state import DamagedBatch
from replay.store.base import EventBatch, EventStore

__all__ = ["Chunk", "ChunkReader", "damage", "last_position", "rewinds_until", "until"]


def damage(exc: BaseException) -> bool:
    """Whether ``exc`` says stored data is damaged (a batch that does not decode, a
    page SQLite cannot read), not that the store is busy or away for a while."""
    return isinstance(exc, CorruptEventError) or (
        isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
    )


class Chunk(NamedTuple):
    batches: list[EventBatch]
    through: int
    """Every event up to here was scanned (``after`` when there was nothing new)."""
    damaged: list[DamagedBatch]


class ChunkReader:
    """Chunk after chunk; with ``read_ahead`` the next chunk is read from the store
    (in its thread) while the caller folds this one."""

    def __init__(
        self, store: EventStore, limit: int, codes: frozenset[int], read_ahead: bool = True
    ) -> None:
        self.store = store
        self.limit = limit
        self.codes = codes
        self.read_ahead = read_ahead
        self._next: tuple[int, asyncio.Task[Chunk]] | None = None

    async def read(self, after: int, ahead: int | None = None) -> Chunk:
        """The chunk after ``after``; reads the following one unless the chunk reaches
        ``ahead`` (a position not worth reading past) or the end."""
        if self._next is not None and self._next[0] == after:
            task = self._next[1]
        else:
            await self._drop()
            task = asyncio.ensure_future(self._chunk(after))
        self._next = None
        chunk = await task
        through = chunk.through
        if self.read_ahead and through != after and (ahead is None or through < ahead):
            self._next = (through, asyncio.ensure_future(self._chunk(through)))
        return chunk

    async def _chunk(self, after: int) -> Chunk:
        try:
            batches, through = await self.store.scan(after, self.limit, self.codes)
        except Exception as exc:
            if not damage(exc):
                raise
            return await self._around_damage(after)
        return Chunk(batches, through, [])

    async def _readable(self, after: int, limit: int, codes: frozenset[int]) -> bool:
        try:
            await self.store.scan(after, limit, codes)
        except Exception as exc:
            if not damage(exc):
                raise
            return False
        return True

    async def _around_damage(self, after: int) -> Chunk:
        # The longest readable prefix: scan(after, good) works, scan(after, good + 1) not.
        good, bad = 0, self.limit
        while bad - good > 1:
            mid = (good + bad) // 2
            if await self._readable(after, mid, self.codes):
                good = mid
            else:
                bad = mid
        batches, start = await self.store.scan(after, good, self.codes) if good else ([], after)
        try:
            await self.store.scan(start, 1, self.codes)
            error = "unreadable batch"  # not reproducible (a transient read error)
        except Exception as exc:
            if not damage(exc):
                raise
            error = str(exc)
        try:
            # No event type asked for: the store computes the batch's end without decoding it.
            _, end = await self.store.scan(start, 1, frozenset())
        except Exception as exc:
            if not damage(exc):
                raise
            end = await self._past_damaged_page(start)
            error = f"positions {start + 1}..{end} unreadable (a damaged page of the store): {exc}"
        if end == start:
            raise CorruptEventError(f"cannot pass over a damaged batch after {start}: {error}")
        return Chunk(batches, end, [DamagedBatch(end, error)])

    async def _past_damaged_page(self, start: int) -> int:
        """The first position after ``start`` past which the store reads again (its last
        position when it never does): the positions up to it lie in damaged pages."""
        head = await self.store.last_position()
        none: frozenset[int] = frozenset()
        bad, step = start, 1
        while True:  # grow the step until a read works, then bisect the last step
            probe = min(start + step, head)
            if probe >= head or await self._readable(probe, 1, none):
                break
            bad, step = probe, step * 2
        good = probe
        while good - bad > 1:
            mid = (good + bad) // 2
            if await self._readable(mid, 1, none):
                good = mid
            else:
                bad = mid
        return good

    async def _drop(self) -> None:
        if self._next is not None:
            task = self._next[1]
            self._next = None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> ChunkReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._drop()


def until(batches: list[EventBatch], target: int) -> list[EventBatch]:
    """The events of ``batches`` with position <= ``target``."""
    out = [b for b in batches if b.first_position <= target]
    if out and out[-1].last_position > target:
        b = out[-1]
        out[-1] = EventBatch(
            b.match_id,
            b.first_seq,
            b.first_position,
            b.first_id,
            b.events[: target - b.first_position + 1],
        )
    return out


async def last_position(store: EventStore, match_id: str, version: int) -> int:
    """The global position of the match's last event (0: it has none)."""
    if version <= 0:
        return 0
    batches = await store.read_batches(match_id, from_seq=version, to_seq=version)
    b = batches[-1]
    return b.first_position + version - b.first_seq


async def rewinds_until(reader: ChunkReader, target: int) -> dict[str, list[tuple[int, int]]]:
    """Per match, ``(B, T)`` of each ``rewound`` event up to position ``target``, in order
    (``reader`` scans for that event type only)."""
    out: dict[str, list[tuple[int, int]]] = {}
    after = 0
    async with reader:
        while after < target:
            chunk = await reader.read(after, ahead=target)
            if chunk.through == after:
                break
            for b in until(chunk.batches, target):
                for e in filter(None, b.events):
                    out.setdefault(b.match_id, []).append((e[2], e[3][1]))
            after = chunk.through
    return out
