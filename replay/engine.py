"""The replay engine: the state of any match at any tick, exactly and fast.

A seek to tick T (see docs/replay.md):

1. validate ``0 <= T <= last durable tick`` (typed error otherwise);
2. start from the best base at or before T: a cached state, else the nearest
   keyframe (a corrupt or incompatible one is skipped with a logged warning
   and the next earlier one is tried), else the initial state at tick 0;
3. read the events after the base up to T and fold them (replay/fold.py: ``rules.evolve``,
   and a ``rewound``/``forked`` event restores the state it carries).

Exactness does not depend on keyframes: ``evolve`` is the only thing that ever
changes a live state, so folding stored events from any exact base yields the
live state bit for bit. Keyframes and the cache only shorten the fold.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from replay.errors import TickOutOfRangeError
from replay.fold import fold_events
from replay.keyframes import load_keyframe
from replay.rules import GameRegistry, Rules
from replay.source import ReplaySource, read_events
from replay.state_cache import DEFAULT_CACHE_BYTES, StateCache
from replay.store.base import READ_ONLY_STATUSES, MatchRecord

__all__ = ["FOLD_WINDOW_TICKS", "ReplayEngine", "SeekStats"]

FOLD_WINDOW_TICKS = 3000
"""Ticks read per window when folding from tick 0 or rebuilding: bounds the
decoded events held at once (about 100 s of a 64-player match, a few MB)."""


@dataclass
class SeekStats:
    """What seeks did, for tests, benchmarks and metrics."""

    seeks: int = 0
    cache_hits: int = 0
    from_cache: int = 0
    from_keyframe: int = 0
    from_start: int = 0
    keyframes_skipped: int = 0
    ticks_folded: int = 0
    last_base_tick: int = -1


class ReplayEngine:
    """``state_at`` and ``scoreboard_at`` over any :class:`ReplaySource`.

    Safe to share between tasks of one event loop: cached states are never
    mutated (every fold starts from a copy) and every answer is a fresh copy
    the caller may change.
    """

    def __init__(
        self,
        source: ReplaySource,
        games: GameRegistry,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.source = source
        self.games = games
        self.cache = StateCache(cache_bytes)
        self.stats = SeekStats()
        self._records: dict[str, MatchRecord] = {}
        self._keyframe_ticks: dict[str, list[int]] = {}
        self._state_bytes: dict[str, int] = {}
        # Checksums of keyframes found bad: skipped without re-reading or re-warning.
        self._bad_keyframes: set[bytes] = set()

    # -- match metadata ----------------------------------------------------------

    async def match(self, match_id: str, *, refresh: bool = False) -> MatchRecord:
        """The match record; a finished match's record is read once, a live one on demand."""
        record = self._records.get(match_id)
        if record is None or (refresh and record.status not in READ_ONLY_STATUSES):
            record = await self.source.get_match(match_id)
            self._records[match_id] = record
        return record

    def cached_match(self, match_id: str) -> MatchRecord | None:
        """The record if :meth:`match` read it already (no I/O)."""
        return self._records.get(match_id)

    def rules(self, record: MatchRecord) -> Rules[Any]:
        return self.games[record.game]

    async def last_tick(self, match_id: str) -> int:
        """The last durable tick: a finished match's last tick, or a live match's latest."""
        return max(0, (await self.match(match_id, refresh=True)).last_tick)

    def initial_state(self, record: MatchRecord) -> Any:
        return self.rules(record).initial_state(record.settings, record.seed)

    # -- seeks ---------------------------------------------------------------------

    async def state_at(self, match_id: str, tick: int) -> Any:
        """The state at the end of ``tick``, exactly as it was live. Raises
        UnknownMatchError, TickOutOfRangeError."""
        record = await self._check_tick(match_id, tick)
        rules = self.rules(record)
        self.stats.seeks += 1
        hit = self.cache.get(match_id, tick)
        if hit is not None:
            self.stats.cache_hits += 1
            return rules.copy_state(hit)
        base_tick, base = await self._base(record, rules, tick)
        self.stats.last_base_tick = base_tick
        self.stats.ticks_folded += tick - base_tick
        events = await read_events(self.source, match_id, base_tick + 1, tick)
        state = fold_events(rules, rules.copy_state(base), events, tick)
        self.cache.put(match_id, tick, state, self._size_of(match_id, rules, state))
        return rules.copy_state(state)

    async def keyframe_at_or_before(self, match_id: str, tick: int) -> tuple[int, Any] | None:
        """The newest valid keyframe at or before ``tick``: (its tick, a copy of its state),
        or None when there is none (a viewer reset by the server then gets ``state_at``).

        The base a seek folds from, for a client that folds the rest itself (the
        spectator protocol's STATE + FRAMEs). Raises UnknownMatchError, TickOutOfRangeError."""
        record = await self._check_tick(match_id, tick)
        rules = self.rules(record)
        found = await self._keyframe(record, rules, tick)
        return None if found is None else (found[0], rules.copy_state(found[1]))

    async def scoreboard_at(self, match_id: str, tick: int) -> list[dict[str, Any]]:
        """Per-player standings (kills, deaths, score, ...) at the end of ``tick``."""
        record = await self._check_tick(match_id, tick)
        return self.rules(record).scoreboard(await self.state_at(match_id, tick))

    async def fold_from_start(self, match_id: str, tick: int) -> Any:
        """The state at ``tick`` folded from tick 0, ignoring keyframes and cache:
        the naive baseline the benchmark compares seeks with."""
        record = await self._check_tick(match_id, tick)
        rules = self.rules(record)
        state = self.initial_state(record)
        start = 0
        while True:
            end = min(tick, start + FOLD_WINDOW_TICKS - 1)
            events = await read_events(self.source, match_id, start, end)
            state = fold_events(rules, state, events, end)
            if end == tick:
                return state
            start = end + 1

    def forget(self, match_id: str) -> None:
        """Drop what is cached about ``match_id`` (after a keyframe rebuild or re-import)."""
        self.cache.drop(match_id)
        self._records.pop(match_id, None)
        self._keyframe_ticks.pop(match_id, None)

    # -- internals -------------------------------------------------------------------

    async def _check_tick(self, match_id: str, tick: int) -> MatchRecord:
        record = await self.match(match_id)
        if tick > record.last_tick:
            record = await self.match(match_id, refresh=True)
        last = max(0, record.last_tick)
        if not 0 <= tick <= last:
            raise TickOutOfRangeError(match_id, tick, last)
        return record

    async def _base(self, record: MatchRecord, rules: Rules[Any], tick: int) -> tuple[int, Any]:
        """The best exact state to fold from: (its tick, the state, not to be mutated)."""
        match_id = record.match_id
        cached = self.cache.nearest(match_id, tick)
        cached_tick = cached[0] if cached else -1
        found = await self._keyframe(record, rules, tick, newer_than=cached_tick)
        if found is not None:
            self.stats.from_keyframe += 1
            return found
        if cached is not None:
            self.stats.from_cache += 1
            return cached
        self.stats.from_start += 1
        # The initial state is the state at the end of tick -1: events of tick 0 still apply.
        return -1, self.initial_state(record)

    async def _keyframe(
        self, record: MatchRecord, rules: Rules[Any], tick: int, *, newer_than: int = -1
    ) -> tuple[int, Any] | None:
        """THE keyframe-base selection: the newest valid keyframe at or before ``tick``
        and after ``newer_than`` (its tick, its state, not to be mutated), or None.

        A keyframe already in the cache is not read again; a bad one (checksum, format,
        undecodable) is remembered by checksum and skipped for the next earlier one."""
        match_id = record.match_id
        for kf_tick in reversed(await self._keyframes_up_to(record, tick)):
            if kf_tick <= newer_than:
                break
            cached = self.cache.get(match_id, kf_tick)
            if cached is not None:  # decoded before (or folded to): exact either way
                return kf_tick, cached
            keyframe = await self.source.get_keyframe(match_id, kf_tick)
            if keyframe is None or keyframe.tick <= newer_than:
                break
            if keyframe.checksum in self._bad_keyframes:
                continue
            state = load_keyframe(rules, keyframe)  # logs why when it returns None
            if state is None:
                self._bad_keyframes.add(keyframe.checksum)
                self.stats.keyframes_skipped += 1
                continue
            self._state_bytes[match_id] = len(keyframe.data)
            self.cache.put(match_id, keyframe.tick, state, len(keyframe.data))
            return keyframe.tick, state
        return None

    async def _keyframes_up_to(self, record: MatchRecord, tick: int) -> list[int]:
        """Keyframe ticks <= ``tick``; a live match's list is re-read when it may have grown."""
        ticks = self._keyframe_ticks.get(record.match_id)
        live = record.status not in READ_ONLY_STATUSES
        if ticks is None or (live and (not ticks or ticks[-1] < tick)):
            ticks = await self.source.keyframe_ticks(record.match_id)
            self._keyframe_ticks[record.match_id] = ticks
        return ticks[: bisect.bisect_right(ticks, tick)]

    def _size_of(self, match_id: str, rules: Rules[Any], state: Any) -> int:
        # States of one match have the same encoded size for fixed-capacity games, so
        # it is measured once (or taken from a loaded keyframe) instead of per put.
        size = self._state_bytes.get(match_id)
        if size is None:
            size = self._state_bytes[match_id] = len(rules.encode_state(state))
        return size
