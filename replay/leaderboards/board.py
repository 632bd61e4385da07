"""The ranked structure of one board period: distinct ranks, O(log n) rank queries.

Sort keys are 24-byte big-endian strings ``value | subscore | reached`` in a
sorted numpy ``S24`` array, so rank, top-N and around-me are one
``searchsorted`` (C memcmp, ~2 us at 1M entries) and a slice. Descending boards
store the bitwise complement of value and subscore, so the array is always
ascending and "best first".

``reached`` orders equal (value, subscore) pairs by who got there first: it is
``position * REACHED_SLOTS + i``, where ``position`` is the global position of
the event that last changed the entry and ``i`` the owner's index among the
owners that event changed, sorted by owner id (so "then owner id" is folded
into it). Invariant: ``reached`` is unique within a board, so every key is
unique and every entry has a distinct rank.

Updates come in batches (:meth:`Board.apply`): the old keys of the batch are
deleted and the new ones inserted with one ``np.delete``/``np.insert`` each,
an O(n) memmove (~20 ms at 1M entries on the reference machine) shared by the
whole batch; the projection folds each owner's updates of a batch into one
before calling it. Memory: 24 bytes per key plus ~250 bytes per entry of
Python dicts (about 300 MB for 1M players).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["REACHED_SLOTS", "Board", "Entry", "RankedEntry"]

REACHED_SLOTS = 4096
"""Owners one event can change on one board (arena matches hold at most 256 players)."""

_BIAS = 1 << 63
_MASK = (1 << 64) - 1
_KEY = struct.Struct(">QQQ")
_KEY_DTYPE = np.dtype([("v", ">u8"), ("s", ">u8"), ("r", ">u8")])
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class Entry(NamedTuple):
    value: int
    subscore: int
    reached: int
    """Tie-break among equal (value, subscore): smaller reached first (see module doc)."""


class RankedEntry(NamedTuple):
    rank: int
    """1-based and distinct: no two entries of a board share a rank."""
    owner: str
    value: int
    subscore: int
    reached: int


class Board:
    """Entries of one board period, ranked best first."""

    __slots__ = ("_by_reached", "_entries", "_keys", "descending")

    def __init__(self, descending: bool = True) -> None:
        self.descending = descending
        self._keys = np.empty(0, "S24")
        self._entries: dict[str, Entry] = {}
        self._by_reached: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, owner: object) -> bool:
        return owner in self._entries

    def get(self, owner: str) -> Entry | None:
        return self._entries.get(owner)

    def items(self) -> Iterable[tuple[str, Entry]]:
        return self._entries.items()

    # -- keys ----------------------------------------------------------------------

    def key(self, value: int, subscore: int, reached: int) -> bytes:
        """The sort key of an entry (also what a cursor names)."""
        if self.descending:
            return _KEY.pack((_BIAS - 1 - value) & _MASK, (_BIAS - 1 - subscore) & _MASK, reached)
        return _KEY.pack((value + _BIAS) & _MASK, (subscore + _BIAS) & _MASK, reached)

    def _encode(self, entries: list[Entry]) -> np.ndarray:
        # Columns via zip: ~10x faster than np.array over a list of NamedTuples.
        k = len(entries)
        cols = zip(*entries, strict=True)
        values, subscores, reached = (np.fromiter(c, np.int64, k) for c in cols)
        flip = np.uint64(_BIAS)
        rec = np.empty(len(entries), _KEY_DTYPE)
        v = values.view(np.uint64) ^ flip
        s = subscores.view(np.uint64) ^ flip
        if self.descending:
            v, s = ~v, ~s
        rec["v"], rec["s"], rec["r"] = v, s, reached.view(np.uint64)
        keys = rec.view("S24")
        keys.sort()
        return keys

    # -- updates ---------------------------------------------------------------------

    def apply(self, changes: Mapping[str, Entry]) -> None:
        """Set the entries of ``changes`` (new or changed owners) in one batch.

        Values and subscores must fit in int64 (the operators saturate there).
        """
        if not changes:
            return
        old = [e for o in changes if (e := self._entries.get(o)) is not None]
        keys = self._keys
        if old:
            keys = np.delete(keys, np.searchsorted(keys, self._encode(old)))
            for e in old:
                del self._by_reached[e.reached]
        new = self._encode(list(changes.values()))
        self._keys = np.insert(keys, np.searchsorted(keys, new), new)
        self._entries.update(changes)
        for owner, e in changes.items():
            self._by_reached[e.reached] = owner

    def load(self, entries: Mapping[str, Entry]) -> None:
        """Replace everything (a fresh board loaded from storage): one sort."""
        self._entries = dict(entries)
        self._by_reached = {e.reached: o for o, e in self._entries.items()}
        self._keys = self._encode(list(self._entries.values())) if entries else np.empty(0, "S24")

    # -- queries -----------------------------------------------------------------------

    def index_of(self, owner: str) -> int | None:
        """0-based rank of ``owner``, or None. O(log n)."""
        e = self._entries.get(owner)
        if e is None:
            return None
        return int(self._keys.searchsorted(self.key(*e)))

    def rank(self, owner: str) -> RankedEntry | None:
        i = self.index_of(owner)
        if i is None:
            return None
        e = self._entries[owner]
        return RankedEntry(i + 1, owner, e.value, e.subscore, e.reached)

    def slice(self, start: int, stop: int) -> list[RankedEntry]:
        """Entries ranked ``start + 1 .. stop`` (clamped)."""
        start = max(0, start)
        rows = self._keys[start:stop].view(_KEY_DTYPE)["r"].tolist()
        out = []
        for i, reached in enumerate(rows, start + 1):
            owner = self._by_reached[reached]
            e = self._entries[owner]
            out.append(RankedEntry(i, owner, e.value, e.subscore, e.reached))
        return out

    def index_after(self, value: int, subscore: int, reached: int) -> int:
        """0-based index of the first entry ranked after the key: what a cursor resumes at.
        Stays right while entries move, because it compares keys, not indexes."""
        return int(self._keys.searchsorted(self.key(value, subscore, reached), side="right"))

    def around(self, owner: str, limit: int) -> list[RankedEntry] | None:
        """``limit`` entries with ``owner`` in the middle, clamped at both ends so the
        page is full when the board has enough entries and always includes ``owner``."""
        i = self.index_of(owner)
        if i is None:
            return None
        start = max(0, min(i - (limit - 1) // 2, len(self._keys) - limit))
        return self.slice(start, start + limit)
