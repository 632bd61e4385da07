"""A least-recently-used cache of match states, bounded by a memory budget in bytes.

Scrubbing back and forth near one point of a match asks for nearby ticks over
and over; keeping the states just built (and the keyframes just decoded) makes
those seeks a copy plus a short fold. Entries are keyed by ``(match_id, tick)``
and the cache can also answer "the cached state of this match nearest at or
before tick T", which is what a seek starts from.

Invariant: a cached state is never mutated. Callers copy before folding.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import Any

__all__ = ["DEFAULT_CACHE_BYTES", "StateCache"]

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""64 MiB. An arena state of 64 players encodes to a few KiB, so this holds
thousands of states: every keyframe of several long matches plus the states a
viewer scrubbed through. The budget counts the encoded size of each state (the
in-memory numpy arrays are about the same size) plus nothing else; Python
object overhead per entry (~200 bytes) is not counted."""


class StateCache:
    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("cache budget must be >= 0 bytes")
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, int], tuple[Any, int]] = OrderedDict()
        # Invariant: _ticks[m] is the sorted list of ticks of m present in _entries.
        self._ticks: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, match_id: str, tick: int) -> Any | None:
        entry = self._entries.get((match_id, tick))
        if entry is None:
            return None
        self._entries.move_to_end((match_id, tick))
        return entry[0]

    def nearest(self, match_id: str, tick: int) -> tuple[int, Any] | None:
        """The cached state of ``match_id`` with the greatest tick <= ``tick``."""
        ticks = self._ticks.get(match_id)
        if not ticks:
            return None
        i = bisect.bisect_right(ticks, tick)
        if i == 0:
            return None
        found = ticks[i - 1]
        return found, self.get(match_id, found)

    def put(self, match_id: str, tick: int, state: Any, nbytes: int) -> None:
        """Keep ``state`` (which the caller must not mutate afterwards)."""
        if nbytes > self.max_bytes:
            return
        key = (match_id, tick)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        else:
            bisect.insort(self._ticks.setdefault(match_id, []), tick)
        self._entries[key] = (state, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            self._evict_oldest()

    def drop(self, match_id: str) -> None:
        """Forget every state of ``match_id`` (e.g. after its keyframes were rebuilt)."""
        for tick in self._ticks.pop(match_id, []):
            _, nbytes = self._entries.pop((match_id, tick))
            self.bytes -= nbytes

    def _evict_oldest(self) -> None:
        (match_id, tick), (_, nbytes) = self._entries.popitem(last=False)
        self.bytes -= nbytes
        ticks = self._ticks[match_id]
        del ticks[bisect.bisect_left(ticks, tick)]
        if not ticks:
            del self._ticks[match_id]
