"""The ranked structure of one board period: distinct ranks, O(log n) rank queries.

Owners are interned to dense ids ``0..n-1``; each entry lives in three int64
columns indexed by id (value, subscore, reached). The ranking is a sorted numpy
``S28`` array of big-endian keys ``value | subscore | reached | id``, so rank,
top-N and around-me are one ``searchsorted`` (C memcmp, ~2 us at 1M entries)
and a slice whose ids name the owners. Descending boards store the bitwise
complement of value and subscore, so the array is always ascending and "best
first".

``reached`` orders equal (value, subscore) pairs by who got there first: it is
``position * REACHED_SLOTS + i``, where ``position`` is the global position of
the event that last changed the entry and ``i`` the owner's index among the
owners that event changed, sorted by owner id (so "then owner id" is folded
into it). Invariant: ``reached`` is unique within a board, so the id part of a
key never decides an order and every entry has a distinct rank.

Updates come in batches of observations (:meth:`Board.fold`), folded per owner
with the board's operator by vectorised numpy (the same result as
:func:`~replay.leaderboards.operators.combine` one observation at a time, which
stays the definition and the fallback near the int64 limits). The columns change
at once, the ranking at :meth:`Board.commit`, for the whole batch: many changes
cost one O(n) pass (drop the changed ids' old keys, ``np.insert`` the new ones:
~15 ms at 1M entries on the reference machine); a few changes move each key
inside the array (a memmove over the distance it travels) and put newcomers in
spare room at the end of the array, so a live step with a handful of updates
costs well under a millisecond even at 1M entries.

Memory per entry, measured at 1M: ~131 bytes besides the owner string itself
(shared with the caller): 28 bytes of key and 25 of columns (value, subscore,
reached, a dirty flag), both with an eighth spare for newcomers, plus ~75 bytes
of Python (the owner -> id dict slot, the id's int, the id -> owner list slot).
About 130 MB for 1M players (the previous design, a NamedTuple and two dict
slots per entry, took ~300), and the entries are not objects the garbage
collector walks: a full collection does not grow with the board.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from replay.leaderboards.operators import INT64_MAX, INT64_MIN, Entry, combine

__all__ = ["MAX_OWNERS", "REACHED_SLOTS", "Board", "RankedEntry"]

REACHED_SLOTS = 4096
"""Owners one event can change on one board (more than any match has players)."""

_BIAS = 1 << 63
_MASK = (1 << 64) - 1
_KEY = struct.Struct(">QQQ")
_ID = struct.Struct("=I")
_KEY_DTYPE = np.dtype([("v", ">u8"), ("s", ">u8"), ("r", ">u8"), ("i", "=u4")])
"""The id is in native byte order (cheap to read back): it never decides an order."""
_KEY_S = "S28"
_FLIP = np.uint64(_BIAS)
MAX_OWNERS = 1 << 32
"""Entries per board period (the id is 4 bytes of the key)."""
_SAFE, _SAFE_OLD, _SAFE_COUNT = 1 << 40, 1 << 62, 1 << 21
"""Fewer than _SAFE_COUNT observations below _SAFE in magnitude, added to an entry below
_SAFE_OLD, cannot reach the int64 limits: summed without clamping. Other owners are folded
one observation at a time (saturation is not associative)."""
_MOVE_COST = 1000
"""Moving one key inside the array (two searches and a short memmove, ~10 us) costs
about as much as 1,000 keys of a whole-array pass (~10 ns each): below that ratio,
:meth:`Board.commit` moves keys one by one."""


class RankedEntry(NamedTuple):
    rank: int
    """1-based and distinct: no two entries of a board share a rank."""
    owner: str
    value: int
    subscore: int
    reached: int


def _int64(xs: Sequence[int] | np.ndarray) -> np.ndarray:
    try:
        return np.asarray(xs, np.int64)
    except OverflowError:  # an observation beyond int64: saturate it, as combine would
        return np.array([min(max(x, INT64_MIN), INT64_MAX) for x in xs], np.int64)


def _move(keys: np.ndarray, old: bytes, new: bytes) -> None:
    """Replace ``old`` (present) by ``new`` in the sorted ``keys``, shifting the keys
    in between by one."""
    p = int(keys.searchsorted(old))
    q = int(keys.searchsorted(new))
    if q > p:
        keys[p : q - 1] = keys[p + 1 : q]
        keys[q - 1] = new
    else:
        keys[q + 1 : p + 1] = keys[q:p]
        keys[q] = new


def _beyond(x: np.ndarray, limit: int) -> np.ndarray:
    # Not np.abs: abs(INT64_MIN) wraps to INT64_MIN.
    return (x >= limit) | (x <= -limit)


class Board:
    """Entries of one board period, ranked best first."""

    __slots__ = (
        "_dirty",
        "_ids",
        "_keys",
        "_moved",
        "_n_dirty",
        "_owners",
        "_reached",
        "_spare",
        "_subscore",
        "_value",
        "descending",
    )

    def __init__(self, descending: bool = True) -> None:
        self.descending = descending
        self._ids: dict[str, int] = {}
        self._owners: list[str] = []
        self._value = np.empty(0, np.int64)
        self._subscore = np.empty(0, np.int64)
        self._reached = np.empty(0, np.int64)
        """-1: an id interned in the current batch that has no entry yet."""
        self._dirty = np.empty(0, bool)
        """Ids whose column values are ahead of their key in ``_keys`` (until commit)."""
        self._moved: list[np.ndarray] = []
        """The keys in ``_keys`` of dirty entries (their old keys), unsorted; kept only
        while few enough entries are dirty for commit to move keys one by one."""
        self._n_dirty = 0
        self._keys = self._spare = np.empty(0, _KEY_S)
        """``_keys`` is a view of the start of ``_spare``: room to insert in place."""

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, owner: object) -> bool:
        i = self._ids.get(owner)  # type: ignore[call-overload]
        return i is not None and self._reached[i] >= 0

    def get(self, owner: str) -> Entry | None:
        """The owner's entry, including what folded but not yet committed."""
        i = self._ids.get(owner)
        if i is None or self._reached[i] < 0:
            return None
        return Entry(int(self._value[i]), int(self._subscore[i]), int(self._reached[i]))

    def items(self) -> Iterable[tuple[str, Entry]]:
        return ((o, Entry(*row)) for o, *row in self.rows())

    def rows(self, ids: np.ndarray | None = None, prefix: tuple[str, ...] = ()) -> list[tuple]:
        """``(*prefix, owner, value, subscore, reached)`` of the committed entries ``ids``
        (default: every entry)."""
        if ids is None:
            n = len(self._owners)
            owners: Iterable[str] = self._owners
            cols = (self._value[:n], self._subscore[:n], self._reached[:n])
        else:
            owners = map(self._owners.__getitem__, ids.tolist())
            cols = (self._value[ids], self._subscore[ids], self._reached[ids])
        v, s, r = (c.tolist() for c in cols)
        return list(zip(*map(itertools.repeat, prefix), owners, v, s, r, strict=False))

    # -- keys ----------------------------------------------------------------------

    def key(self, value: int, subscore: int, reached: int, owner_id: int = 0) -> bytes:
        """The sort key of an entry (a cursor names one with ``owner_id`` 0)."""
        if self.descending:
            v, s = (_BIAS - 1 - value) & _MASK, (_BIAS - 1 - subscore) & _MASK
        else:
            v, s = (value + _BIAS) & _MASK, (subscore + _BIAS) & _MASK
        return _KEY.pack(v, s, reached) + _ID.pack(owner_id)

    def _keys_of(self, ids: np.ndarray, sort: bool = True) -> np.ndarray:
        """The keys of the entries ``ids`` (as the columns hold them now), sorted."""
        rec = np.empty(len(ids), _KEY_DTYPE)
        v = self._value[ids].view(np.uint64) ^ _FLIP
        s = self._subscore[ids].view(np.uint64) ^ _FLIP
        if self.descending:
            v, s = ~v, ~s
        rec["v"], rec["s"], rec["r"], rec["i"] = v, s, self._reached[ids], ids
        keys = rec.view(_KEY_S)
        if sort:
            keys.sort()
        return keys

    # -- updates ---------------------------------------------------------------------

    def _intern(self, owners: Sequence[str]) -> np.ndarray:
        get = self._ids.get
        ids = list(map(get, owners))
        if None in ids:
            for k, o in enumerate(owners):
                if ids[k] is None:
                    i = get(o)
                    if i is None:  # not seen earlier in this batch either
                        i = self._ids[o] = len(self._owners)
                        self._owners.append(o)
                    ids[k] = i
            self._grow(len(self._owners))
        return np.array(ids, np.int64)

    def _grow(self, n: int) -> None:
        cap = len(self._value)
        if n <= cap:
            return
        if n > MAX_OWNERS:
            raise OverflowError(f"a board period holds at most {MAX_OWNERS} entries")
        new = max(n + n // 8, 1024)  # grown by an eighth: each growth is an O(n) pause
        for name, fill in (("_value", 0), ("_subscore", 0), ("_reached", -1), ("_dirty", False)):
            old = getattr(self, name)
            col = np.full(new, fill, old.dtype)
            col[:cap] = old
            setattr(self, name, col)

    def _set(self, ids: np.ndarray, v: np.ndarray, s: np.ndarray, r: np.ndarray) -> None:
        """Write entries (distinct ids) to the columns; the ranking follows at commit."""
        fresh = ids[~self._dirty[ids]]
        self._n_dirty += len(fresh)
        if self._n_dirty * _MOVE_COST < len(self._keys):  # commit will move keys one by one
            ranked = fresh[self._reached[fresh] >= 0]
            self._moved.append(self._keys_of(ranked, sort=False))  # before the columns change
        self._dirty[fresh] = True
        self._value[ids], self._subscore[ids], self._reached[ids] = v, s, r

    def fold(
        self,
        op: str,
        owners: Sequence[str],
        values: Sequence[int] | np.ndarray,
        subscores: Sequence[int] | np.ndarray,
        reached: Sequence[int] | np.ndarray,
    ) -> None:
        """Apply observations in order with operator ``op`` (operators.py): observation
        ``k`` is ``(owners[k], values[k], subscores[k])`` with its unique ``reached[k]``.

        Each owner's observations are reduced at once, in numpy: the owner's
        observations are one group of a stable sort by id, so their order is kept.
        Queries see the result after :meth:`commit`; :meth:`get` at once."""
        if op not in ("best", "set", "incr", "decr"):
            raise ValueError(f"unknown operator {op!r}")
        n = len(owners)
        if n == 0:
            return
        ids = self._intern(owners)
        v, s, r = _int64(values), _int64(subscores), np.asarray(reached, np.int64)
        order = np.argsort(ids, kind="stable")
        ids, v, s, r = ids[order], v[order], s[order], r[order]
        first = np.empty(n, bool)
        first[0] = True
        np.not_equal(ids[1:], ids[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        gid = ids[starts]
        old_v, old_s = self._value[gid], self._subscore[gid]
        new_owner = self._reached[gid] < 0
        grp = np.cumsum(first) - 1
        idx = np.arange(n)
        # An observation is "effective" when, applied alone after the ones before it,
        # it changes the entry: the entry's reached is that of the last effective one.
        creates = first & new_owner[grp]
        if op == "best":
            kv = v.view(np.uint64) ^ _FLIP
            ks = s.view(np.uint64) ^ _FLIP
            ko_v = old_v.view(np.uint64) ^ _FLIP
            ko_s = old_s.view(np.uint64) ^ _FLIP
            if self.descending:
                kv, ks, ko_v, ko_s = ~kv, ~ks, ~ko_v, ~ko_s
            # Best pair first within each group, the earliest of equals first: only a
            # strictly better pair replaces, so the first to reach the best one holds it.
            best = np.lexsort((idx, ks, kv, grp))[starts]
            bv, bs = kv[best], ks[best]
            changed = new_owner | (bv < ko_v) | ((bv == ko_v) & (bs < ko_s))
            nv, ns, nr = v[best], s[best], r[best]
        else:
            if op == "set":
                prev_v = np.empty_like(v)
                prev_s = np.empty_like(s)
                prev_v[1:], prev_s[1:] = v[:-1], s[:-1]
                prev_v[starts], prev_s[starts] = old_v, old_s
                effective = (v != prev_v) | (s != prev_s) | creates
                last = np.r_[starts[1:], n] - 1
                nv, ns = v[last], s[last]
            else:  # incr, decr
                if op == "decr":
                    v, s = -v, -s  # INT64_MIN stays itself: caught as risky below
                effective = (v != 0) | (s != 0) | creates
                base_v = np.where(new_owner, 0, old_v)
                base_s = np.where(new_owner, 0, old_s)
                nv = base_v + np.add.reduceat(v, starts)
                ns = base_s + np.add.reduceat(s, starts)
            at = np.maximum.reduceat(np.where(effective, idx, -1), starts)
            changed = at >= 0
            nr = r[at]
        if op in ("incr", "decr"):
            big = _beyond(v, _SAFE) | _beyond(s, _SAFE)
            risky = np.logical_or.reduceat(big, starts)
            risky |= _beyond(old_v, _SAFE_OLD) | _beyond(old_s, _SAFE_OLD)
            risky |= np.diff(np.r_[starts, n]) >= _SAFE_COUNT
            if risky.any():
                bounds = np.r_[starts, n].tolist()
                for g in np.flatnonzero(risky).tolist():
                    k = slice(bounds[g], bounds[g + 1])
                    src, rs = order[k].tolist(), r[k].tolist()
                    obs = [(values[j], subscores[j], x) for j, x in zip(src, rs, strict=True)]
                    self._fold_exactly(op, int(gid[g]), obs)
                changed &= ~risky
        self._set(gid[changed], nv[changed], ns[changed], nr[changed])

    def _fold_exactly(self, op: str, i: int, obs: list[tuple[int, int, int]]) -> None:
        """The definition, one observation at a time, for an owner whose sums may reach
        the int64 limits (saturation is not associative)."""
        was = e = self.get(self._owners[i])
        for value, subscore, reached in obs:
            e = combine(op, self.descending, e, int(value), int(subscore), reached) or e
        if e is not None and e != was:
            one = np.array([i], np.int64)
            self._set(one, np.array([e.value]), np.array([e.subscore]), np.array([e.reached]))

    def commit(self) -> np.ndarray:
        """Move every entry changed since the last commit to its rank. Many changes: one
        pass drops the keys whose id is dirty (their old keys: one key per id) and one
        insert adds the new ones. Few (fewer than one per ``_MOVE_COST`` entries): each
        key moves in place. Returns the changed ids (for :meth:`rows`)."""
        dirty = self._dirty[: len(self._owners)]
        ids = np.flatnonzero(dirty)
        if not len(ids):
            return ids
        keys = self._keys
        moved_keys, self._moved, self._n_dirty = self._moved, [], 0
        if len(ids) * _MOVE_COST < len(keys):
            # A few changes in a big board: each key travels inside the array (a memmove
            # over the distance it moves); newcomers go in place, into spare room.
            old = np.concatenate(moved_keys) if moved_keys else np.empty(0, _KEY_S)
            moved = old.view(_KEY_DTYPE)["i"]
            for a, b in zip(old.tolist(), self._keys_of(moved, sort=False).tolist(), strict=True):
                _move(keys, a, b)
            added = np.setdiff1d(ids, moved, assume_unique=True)
            if len(added):
                self._insert_in_place(self._keys_of(added))
        else:
            keys = keys[~dirty[keys.view(_KEY_DTYPE)["i"]]]
            new = self._keys_of(ids)
            self._keys = self._spare = np.insert(keys, np.searchsorted(keys, new), new)
        dirty[ids] = False
        return ids

    def _insert_in_place(self, new: np.ndarray) -> None:
        """Insert a few sorted keys, shifting the blocks between them from the end (one
        memmove per block, no new array unless the spare room is used up)."""
        size, m = len(self._keys), len(new)
        if size + m > len(self._spare):
            spare = np.empty(size + m + (size + m) // 8, _KEY_S)
            spare[:size] = self._keys
            self._spare = spare
        buf = self._spare
        at = np.searchsorted(buf[:size], new).tolist()
        end = size
        for j in range(m - 1, -1, -1):
            q = at[j]
            buf[q + j + 1 : end + j + 1] = buf[q:end]
            buf[q + j] = new[j]
            end = q
        self._keys = buf[: size + m]

    def apply(self, changes: Mapping[str, Entry]) -> None:
        """Set the entries of ``changes`` as given (no operator) and commit."""
        if not changes:
            return
        ids = self._intern(list(changes))
        cols = zip(*changes.values(), strict=True)
        v, s, r = (np.fromiter(c, np.int64, len(changes)) for c in cols)
        self._set(ids, v, s, r)
        self.commit()

    def load(
        self,
        owners: list[str],
        values: Sequence[int] | np.ndarray,
        subscores: Sequence[int] | np.ndarray,
        reached: Sequence[int] | np.ndarray,
    ) -> None:
        """Replace everything (a fresh board loaded from storage, distinct owners): one sort."""
        n = len(owners)
        self._owners = list(owners)
        self._ids = dict(zip(self._owners, range(n), strict=True))
        self._value = np.empty(0, np.int64)
        self._subscore = np.empty(0, np.int64)
        self._reached = np.empty(0, np.int64)
        self._dirty = np.empty(0, bool)
        self._grow(n + n // 8)  # room for newcomers before the first growth
        self._value[:n], self._subscore[:n], self._reached[:n] = (
            _int64(values),
            _int64(subscores),
            np.asarray(reached, np.int64),
        )
        self._moved, self._n_dirty = [], 0
        self._keys = self._spare = self._keys_of(np.arange(n))

    # -- queries -----------------------------------------------------------------------

    def index_of(self, owner: str) -> int | None:
        """0-based rank of ``owner``, or None. O(log n)."""
        i = self._ids.get(owner)
        if i is None or self._reached[i] < 0:
            return None
        key = self.key(int(self._value[i]), int(self._subscore[i]), int(self._reached[i]), i)
        return int(self._keys.searchsorted(key))

    def rank(self, owner: str) -> RankedEntry | None:
        """``owner``'s entry and rank, or None (:meth:`index_of` and :meth:`get` in one
        pass over the columns)."""
        i = self._ids.get(owner)
        if i is None:
            return None
        reached = self._reached.item(i)
        if reached < 0:
            return None
        value, subscore = self._value.item(i), self._subscore.item(i)
        index = int(self._keys.searchsorted(self.key(value, subscore, reached, i)))
        return RankedEntry(index + 1, owner, value, subscore, reached)

    def slice(self, start: int, stop: int) -> list[RankedEntry]:
        """Entries ranked ``start + 1 .. stop`` (clamped)."""
        first, owners, *cols = self.columns(start, stop)
        return list(map(RankedEntry, itertools.count(first), owners, *cols))

    def columns(
        self, start: int, stop: int
    ) -> tuple[int, list[str], list[int], list[int], list[int]]:
        """What :meth:`slice` holds, a list per field: the first rank, then the owners,
        values, subscores and reached of entries ranked ``start + 1 .. stop`` (clamped).
        A page built from them skips one tuple per entry."""
        start = max(0, start)
        ids = self._keys[start:stop].view(_KEY_DTYPE)["i"].astype(np.int64)
        owners = self._owners
        v, s, r = (c[ids].tolist() for c in (self._value, self._subscore, self._reached))
        return start + 1, list(map(owners.__getitem__, ids.tolist())), v, s, r

    def index_after(self, value: int, subscore: int, reached: int) -> int:
        """0-based index of the first entry ranked after the key: what a cursor resumes at.
        Stays right while entries move, because it compares keys, not indexes (and
        ``reached`` is unique, so the largest id stands for "whoever holds it")."""
        key = self.key(value, subscore, reached, MAX_OWNERS - 1)
        return int(self._keys.searchsorted(key, side="right"))

    def around(self, owner: str, limit: int) -> list[RankedEntry] | None:
        """``limit`` entries with ``owner`` in the middle, clamped at both ends so the
        page is full when the board has enough entries and always includes ``owner``."""
        start = self.around_start(owner, limit)
        return None if start is None else self.slice(start, start + limit)

    def around_start(self, owner: str, limit: int) -> int | None:
        """0-based index of the first entry of :meth:`around`'s page, or None."""
        i = self.index_of(owner)
        if i is None:
            return None
        return max(0, min(i - (limit - 1) // 2, len(self._keys) - limit))
