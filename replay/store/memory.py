"""The memory recorder: the whole store in one process's lists and dicts.

For fast tests of everything above the store (engine, playback, timeline,
projections): nothing is durable and nothing is shared with another process.
It keeps the recorder contract otherwise, so it is also the reference the other
recorders are compared with.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from replay.errors import MatchExistsError
from replay.store.recorder import (
    UNFENCED,
    BatchRow,
    Conflict,
    MatchRow,
    NewBatch,
    Recorder,
)
from replay.store.records import LIVE_STATUSES, Lease, NodeRow

__all__ = ["MemoryRecorder"]

_READ_ONLY = frozenset({"ended", "interrupted"})


class MemoryRecorder(Recorder):
    def __init__(self) -> None:
        self.url = "memory:"
        self._matches: list[MatchRow] = []  # index = mkey - 1
        self._by_id: dict[str, int] = {}
        # Per match: its batches in seq order, and their first seqs (for bisect).
        self._streams: dict[int, list[tuple[BatchRow, int, int]]] = {}
        self._log: list[tuple[BatchRow, int]] = []  # (row, type mask) in position order
        self._positions: list[int] = []
        self._keyframes: dict[int, dict[int, tuple[int, int, bytes, bytes]]] = {}
        self._lease_until: dict[int, float] = {}  # mkey -> end (absent: never leased)
        # node -> [name, url, started_at, seen_at, status, load]
        self._nodes: dict[str, list[Any]] = {}
        self._committed = asyncio.Event()

    def clone(self) -> MemoryRecorder:
        """An independent recorder holding the same rows: tests record a match once and
        give each test its own copy. Rows are immutable tuples, so only the containers
        are copied; the clone's commit event is new, bound to no event loop yet."""
        other = MemoryRecorder()
        other._matches = list(self._matches)
        other._by_id = dict(self._by_id)
        other._streams = {mkey: list(stream) for mkey, stream in self._streams.items()}
        other._log = list(self._log)
        other._positions = list(self._positions)
        other._keyframes = {mkey: dict(frames) for mkey, frames in self._keyframes.items()}
        other._lease_until = dict(self._lease_until)
        other._nodes = {node: list(row) for node, row in self._nodes.items()}
        return other

    async def open(self) -> None:
        # A fresh commit event: close() left the last one set (it wakes the waiters of
        # then), and a reopened recorder's waits must wait again, not return at once.
        self._committed = asyncio.Event()

    async def close(self) -> None:
        self._committed.set()

    # -- matches ---------------------------------------------------------------

    async def insert_match(self, row: MatchRow) -> int:
        if row.match_id in self._by_id:
            raise MatchExistsError(row.match_id)
        mkey = len(self._matches) + 1
        self._matches.append(row._replace(mkey=mkey, version=0, last_tick=-1))
        self._by_id[row.match_id] = mkey
        self._streams[mkey] = []
        return mkey

    async def match(self, match_id: str | None = None, mkey: int | None = None) -> MatchRow | None:
        if match_id is not None:
            mkey = self._by_id.get(match_id)
        if mkey is None or not 0 < mkey <= len(self._matches):
            return None
        return self._with_head(self._matches[mkey - 1])

    async def matches(
        self,
        statuses: Sequence[str] | None,
        game: str | None,
        limit: int,
        offset: int,
        match_ids: Sequence[str] | None = None,
    ) -> list[MatchRow]:
        ids = None if match_ids is None else set(match_ids)
        rows = [
            r
            for r in self._matches
            if (statuses is None or r.status in statuses)
            and (game is None or r.game == game)
            and (ids is None or r.match_id in ids)
        ]
        rows.sort(key=lambda r: (r.created_at, r.mkey), reverse=True)
        return [self._with_head(r) for r in rows[offset : offset + limit]]

    async def update_match(
        self, match_id: str, changes: dict[str, Any], allowed: Any
    ) -> MatchRow | None:
        mkey = self._by_id.get(match_id)
        if mkey is None:
            return None
        allowed(self._matches[mkey - 1].status, self._matches[mkey - 1].epoch)
        self._matches[mkey - 1] = self._matches[mkey - 1]._replace(**changes)
        return self._with_head(self._matches[mkey - 1])

    def _with_head(self, row: MatchRow) -> MatchRow:
        version, last_tick = self._stream_head(row.mkey)
        return row._replace(version=version, last_tick=last_tick)

    def _stream_head(self, mkey: int) -> tuple[int, int]:
        stream = self._streams[mkey]
        if not stream:
            return 0, -1
        last, _, last_tick = stream[-1]
        return last.first_seq + last.count - 1, last_tick

    # -- batches ---------------------------------------------------------------

    async def insert_group(self, rows: Sequence[NewBatch]) -> list[int | Conflict]:
        out: list[int | Conflict] = []
        position = self._positions[-1] if self._positions else 0
        for r in rows:
            if not 0 < r.mkey <= len(self._matches):
                out.append(Conflict("unknown"))
                continue
            status, epoch = self._matches[r.mkey - 1].status, self._matches[r.mkey - 1].epoch
            version, last_tick = self._stream_head(r.mkey)
            if r.epoch != UNFENCED and r.epoch != epoch:
                out.append(Conflict("epoch", epoch))
            elif status in _READ_ONLY:
                out.append(Conflict("ended", status=status))
            elif r.first_seq - 1 != version:
                out.append(Conflict("version", version))
            elif r.base_tick < last_tick:
                out.append(Conflict("tick", last_tick))
            else:
                position += r.count
                row = BatchRow(
                    position,
                    r.mkey,
                    r.first_seq,
                    r.count,
                    r.base_tick,
                    r.last_tick,
                    r.first_id,
                    r.blob,
                    r.checksum,
                )
                self._streams[r.mkey].append((row, r.first_seq, r.last_tick))
                self._log.append((row, r.types))
                self._positions.append(position)
                out.append(position)
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()
        return out

    async def find_batch(self, mkey: int, first_seq: int) -> BatchRow | None:
        stream = self._streams.get(mkey, [])
        i = bisect.bisect_left(stream, first_seq, key=lambda b: b[1])
        return stream[i][0] if i < len(stream) and stream[i][1] == first_seq else None

    async def batches_by_seq(self, mkey: int, from_seq: int, to_seq: int) -> list[BatchRow]:
        stream = self._streams.get(mkey, [])
        # The batch holding from_seq starts at the greatest first_seq <= from_seq.
        i = max(bisect.bisect_right(stream, from_seq, key=lambda b: b[1]) - 1, 0)
        return [b[0] for b in stream[i:] if b[1] <= to_seq]

    async def batches_by_tick(self, mkey: int, from_tick: int, to_tick: int) -> list[BatchRow]:
        return [
            b[0]
            for b in self._streams.get(mkey, [])
            if b[0].base_tick <= to_tick and b[2] >= from_tick
        ]

    async def scan(self, after: int, limit: int, mask: int | None) -> tuple[int, list[BatchRow]]:
        i = bisect.bisect_right(self._positions, after)
        window = self._log[i : i + limit]
        if not window:
            return after, []
        rows = [row for row, types in window if mask is None or types & mask]
        return window[-1][0].position, rows

    async def head(self) -> int:
        return self._positions[-1] if self._positions else 0

    async def wait_for_commit(self, after: int, timeout: float) -> None:
        if await self.head() > after:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._committed.wait(), timeout)

    # -- leases ------------------------------------------------------------------

    def _lease(self, mkey: int, now: float) -> Lease:
        row = self._matches[mkey - 1]
        until = self._lease_until.get(mkey)
        return Lease(row.match_id, row.owner, row.epoch, 0.0 if until is None else until - now)

    def _set_owner(self, mkey: int, owner: str, epoch: int, until: float, now: float) -> Lease:
        self._matches[mkey - 1] = self._matches[mkey - 1]._replace(owner=owner, epoch=epoch)
        self._lease_until[mkey] = until
        return self._lease(mkey, now)

    async def acquire_lease(
        self, match_id: str, owner: str, ttl: float, epoch: int | None
    ) -> Lease | None:
        now = time.time()
        mkey = self._by_id.get(match_id)
        if mkey is None:
            return None
        row = self._matches[mkey - 1]
        if row.status not in LIVE_STATUSES:
            return None
        if epoch is None:
            if row.owner and self._lease_until.get(mkey, now) > now:
                return None
        elif row.epoch != epoch:
            return None
        return self._set_owner(mkey, owner, row.epoch + 1, now + ttl, now)

    async def renew_leases(self, owner: str, ttl: float) -> dict[str, int]:
        now = time.time()
        held: dict[str, int] = {}
        for row in self._matches:
            if row.owner == owner and row.status in LIVE_STATUSES:
                self._lease_until[row.mkey] = now + ttl
                held[row.match_id] = row.epoch
        return held

    async def release_lease(
        self, match_id: str, owner: str, epoch: int, to: str | None, ttl: float
    ) -> Lease | None:
        now = time.time()
        mkey = self._by_id.get(match_id)
        if mkey is None:
            return None
        row = self._matches[mkey - 1]
        if (row.owner, row.epoch) != (owner, epoch):
            return None
        if to is None:
            return self._set_owner(mkey, owner, epoch, now, now)
        return self._set_owner(mkey, to, epoch + 1, now + ttl, now)

    async def lease(self, match_id: str) -> Lease | None:
        mkey = self._by_id.get(match_id)
        return None if mkey is None else self._lease(mkey, time.time())

    async def lapsed_leases(self, limit: int) -> list[Lease]:
        now = time.time()
        lapsed = [
            (self._lease_until[r.mkey], r.mkey)
            for r in self._matches
            if r.owner and r.status in LIVE_STATUSES and self._lease_until.get(r.mkey, now) <= now
        ]
        return [self._lease(mkey, now) for _, mkey in sorted(lapsed)[:limit]]

    async def leases_of(self, owner: str) -> list[Lease]:
        now = time.time()
        return sorted(
            self._lease(r.mkey, now)
            for r in self._matches
            if r.owner == owner and r.status in LIVE_STATUSES
        )

    # -- nodes -------------------------------------------------------------------

    async def heartbeat(self, node: str, name: str, url: str, status: str, load: str) -> None:
        now = time.time()
        started = self._nodes[node][2] if node in self._nodes else now
        self._nodes[node] = [name, url, started, now, status, load]

    async def nodes(self, max_age: float | None) -> list[NodeRow]:
        now = time.time()
        rows = [
            NodeRow(node, name, url, started, now - seen, status, load)
            for node, (name, url, started, seen, status, load) in self._nodes.items()
            if max_age is None or now - seen <= max_age
        ]
        return sorted(rows, key=lambda r: (r.name, r.node))

    async def forget_nodes(self, older_than: float) -> int:
        now = time.time()
        doomed = [n for n, row in self._nodes.items() if now - row[3] > older_than]
        for n in doomed:
            del self._nodes[n]
        return len(doomed)

    # -- keyframes ---------------------------------------------------------------

    async def put_keyframe(
        self, mkey: int, tick: int, format_version: int, data: bytes, checksum: bytes
    ) -> None:
        self._keyframes.setdefault(mkey, {})[tick] = (tick, format_version, data, checksum)

    async def keyframe(self, mkey: int, at_or_before: int) -> tuple[int, int, bytes, bytes] | None:
        ticks = [t for t in self._keyframes.get(mkey, {}) if t <= at_or_before]
        return self._keyframes[mkey][max(ticks)] if ticks else None

    async def keyframe_ticks(self, mkey: int) -> list[int]:
        return sorted(self._keyframes.get(mkey, {}))

    async def delete_keyframes(self, mkey: int, before_tick: int) -> int:
        frames = self._keyframes.get(mkey, {})
        doomed = [t for t in frames if t < before_tick]
        for t in doomed:
            del frames[t]
        return len(doomed)
