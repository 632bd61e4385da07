"""``matchreplay store verify``: read a whole store and report every damage found.

What is checked, match by match: the match row decodes (players, settings, options);
every stored batch's checksum, decoding and event count; seq continuity from 1 to
the match's version; every keyframe (by the caller's ``check_keyframe``, which knows
the games' rules); and, first, the backend's own check of its files
(:meth:`Recorder.integrity_check`: SQLite's ``PRAGMA integrity_check``). Nothing is
written: verify runs beside a live server on a read-only store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from replay.errors import CorruptEventError, CorruptMatchError
from replay.store.base import EventStore, Keyframe, _record

__all__ = ["VerifyReport", "verify_store"]

_PAGE = 1000
_SEQS_PER_READ = 50_000

KeyframeCheck = Callable[[str, Keyframe], str | None]
"""The reason a keyframe of a match of game ``game`` cannot be used, or None when it can."""


@dataclass
class VerifyReport:
    matches: int = 0
    events: int = 0
    keyframes: int = 0
    damage: list[str] = field(default_factory=list)
    """One line per damage found: where and what."""


async def verify_store(
    store: EventStore,
    check_keyframe: KeyframeCheck | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check everything in ``store`` (open); ``progress(events_done, events_total)``."""
    report = VerifyReport()
    recorder = store.recorder
    report.damage.extend(f"file: {line}" for line in await _guarded(recorder.integrity_check()))
    rows = []
    offset = 0
    while page := await recorder.matches(None, None, _PAGE, offset):
        rows.extend(page)
        offset += len(page)
    total = sum(row.version or 0 for row in rows)
    done = 0
    for row in rows:
        report.matches += 1
        try:
            _record(row)
        except CorruptMatchError as exc:
            report.damage.append(str(exc))
        version = row.version or 0
        try:
            seq = 1
            while seq <= version:
                batches = await store.read_batches(
                    row.match_id, from_seq=seq, to_seq=seq + _SEQS_PER_READ - 1
                )
                after = batches[-1].first_seq + len(batches[-1].events) if batches else seq
                if after <= seq or batches[0].first_seq > seq:
                    raise CorruptEventError(f"match {row.match_id!r} seq {seq}: missing")
                report.events += after - seq
                seq = after
                if progress is not None:
                    progress(done + min(seq - 1, version), total)
        except (CorruptEventError, sqlite3.DatabaseError) as exc:
            report.damage.append(str(exc))
        done += version
        if progress is not None:
            progress(done, total)
        try:
            ticks = await store.keyframe_ticks(row.match_id)
            for tick in ticks:
                keyframe = await store.get_keyframe(row.match_id, tick)
                report.keyframes += 1
                if keyframe is None or keyframe.tick != tick:
                    report.damage.append(f"match {row.match_id!r} keyframe {tick}: unreadable")
                elif (
                    check_keyframe is not None
                    and (why := check_keyframe(row.game, keyframe)) is not None
                ):
                    report.damage.append(f"match {row.match_id!r} keyframe {tick}: {why}")
        except sqlite3.DatabaseError as exc:
            report.damage.append(f"match {row.match_id!r} keyframes: {exc}")
    return report


async def _guarded(check: Awaitable[list[str]]) -> list[str]:
    try:
        return await check
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
