"""Copying a whole store between backends (SQLite to PostgreSQL and back), resumable
and verified: ``matchreplay store copy SRC DST``.

Events are copied as stored (the source is opened without catalogs: nothing is
upcast, stored versions stay), batch by batch in global position order, with their
first ids, so the destination gets the same seqs, positions and ids. Each page of
batches goes in one group commit (``EventStore.append_many``).

Resuming. The destination's highest position says how far a previous run got: its
last batch must be the source's batch at that position (same match and first id),
or the destination is not a partial copy of the source and is refused. An append
cut off mid-group is retried idempotently (same first id, same expected version).
Matches are created as ``running`` and get their source status (ended,
interrupted, ...) and ``ended_at`` only once all events are copied.

Verifying. At the end, the event counts must match and every match's stream hash
(blake2b of its events' seq, tick, type, version and data, in seq order) must be
the same in both stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from replay.codec import pack
from replay.errors import CorruptMatchError, MatchExistsError, ReplayError
from replay.events import NewEvent
from replay.store.base import EventStore, MatchRecord

__all__ = ["CopyError", "CopyReport", "copy_store", "stream_hash"]

PAGE_BATCHES = 500
"""Batches read and appended per step: one group commit each."""


class CopyError(ReplayError):
    """The destination is not empty nor a partial copy of the source, or the copy does
    not verify."""

    code = "copy_failed"


@dataclass(frozen=True)
class CopyReport:
    matches: int
    events: int
    copied_events: int
    """Events written by this run (fewer than ``events`` when it resumed)."""
    keyframes: int


async def stream_hash(store: EventStore, match_id: str) -> str:
    """blake2b-128 of one match's events (seq, tick, type, version, data) in seq order."""
    h = hashlib.blake2b(digest_size=16)
    for batch in await store.read_batches(match_id):
        for i, (type_, version, tick, data) in enumerate(batch.events):
            h.update(pack((batch.first_seq + i, tick, type_, version, list(data))))
    return h.hexdigest()


async def _all_matches(store: EventStore) -> list[MatchRecord]:
    out: list[MatchRecord] = []
    offset, page_size = 0, 1000
    while page := await store.list_matches(limit=page_size, offset=offset):
        out.extend(page)
        offset += page_size
    if store.damaged:
        # A copy that silently leaves matches behind is not a copy.
        raise CorruptMatchError(*next(iter(store.damaged.items())))
    return out


async def copy_store(
    src: EventStore, dst: EventStore, progress: Callable[[int, int], None] | None = None
) -> CopyReport:
    """Copy ``src`` into ``dst`` (both open; ``src`` best opened without catalogs).
    ``progress(done, total)`` is called with source positions as the copy advances."""
    total = await src.last_position()
    after = await dst.last_position()
    if after:
        await _check_resumable(src, dst, after)
    matches = await _all_matches(src)
    for m in matches:
        try:
            await dst.create_match(m.with_changes(status="running", ended_at=None))
        except MatchExistsError:
            theirs = await dst.get_match(m.match_id)
            if (theirs.game, theirs.seed, theirs.created_at) != (m.game, m.seed, m.created_at):
                raise CopyError(
                    f"match {m.match_id!r} exists in the destination and differs from the source's"
                ) from None
    copied = 0
    if progress:
        progress(after, total)
    while batches := await src.read_all_batches(after, PAGE_BATCHES):
        await dst.append_many(
            [
                (
                    b.match_id,
                    [NewEvent(t, tick, data, version) for t, version, tick, data in b.events],
                    b.first_seq - 1,
                    b.first_id,
                )
                for b in batches
            ]
        )
        after = batches[-1].last_position
        copied += sum(len(b.events) for b in batches)
        if progress:
            progress(after, total)
    keyframes = 0
    for m in matches:
        for tick in await src.keyframe_ticks(m.match_id):
            frame = await src.get_keyframe(m.match_id, tick)
            if frame is not None and frame.tick == tick:
                await dst.put_keyframe(frame)
                keyframes += 1
        if m.status != "running" or m.ended_at is not None:
            await dst.update_match(m.match_id, status=m.status, ended_at=m.ended_at)
    await verify_copy(src, dst, matches)
    return CopyReport(len(matches), total, copied, keyframes)


async def _check_resumable(src: EventStore, dst: EventStore, head: int) -> None:
    (last,) = await dst.read_all_batches(head - 1, 1)
    found = await src.read_all_batches(head - 1, 1)
    same = (
        found
        and found[0].match_id == last.match_id
        and found[0].first_id == last.first_id
        and found[0].last_position == head
    )
    if not same:
        raise CopyError(
            f"the destination holds events up to position {head} that are not the source's:"
            " copy into an empty store (or resume a copy of the same source)"
        )


async def verify_copy(src: EventStore, dst: EventStore, matches: list[MatchRecord]) -> None:
    if (a := await src.last_position()) != (b := await dst.last_position()):
        raise CopyError(f"the source has {a} events, the destination {b}")
    for m in matches:
        if await stream_hash(src, m.match_id) != await stream_hash(dst, m.match_id):
            raise CopyError(f"match {m.match_id!r} differs between source and destination")
