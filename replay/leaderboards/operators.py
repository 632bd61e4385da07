"""How a board combines a new observation with an owner's current entry.

* ``incr``: value += observed value, subscore += observed subscore;
* ``decr``: value -= observed value, subscore -= observed subscore;
* ``best``: keep the better (value, subscore) pair in the board's order; an
  equal pair keeps the old entry, so whoever reached it first stays ahead;
* ``set``: replace.

An observation that leaves (value, subscore) unchanged changes nothing, not
even ``reached``. Observations beyond the int64 range count as its nearest end,
and results saturate at that range. Applying observations
one by one is the definition; the projection folds a batch's observations per
owner with this same function, so batching never changes a board.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["INT64_MAX", "INT64_MIN", "OPERATORS", "Entry", "Operator", "combine"]

Operator = Literal["best", "set", "incr", "decr"]
OPERATORS: tuple[str, ...] = ("best", "set", "incr", "decr")
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
"""Values and subscores are int64 (a board's sort key holds 8 bytes of each)."""


class Entry(NamedTuple):
    """An owner's entry on one board period."""

    value: int
    subscore: int
    reached: int
    """Tie-break among equal (value, subscore): smaller reached first (board.py)."""


def _clamp(x: int) -> int:
    return INT64_MIN if x < INT64_MIN else INT64_MAX if x > INT64_MAX else x


def combine(
    op: str, descending: bool, old: Entry | None, value: int, subscore: int, reached: int
) -> Entry | None:
    """The owner's new entry, or None when the observation changes nothing."""
    value, subscore = _clamp(value), _clamp(subscore)
    if old is None:
        if op == "decr":
            value, subscore = -value, -subscore
        return Entry(_clamp(value), _clamp(subscore), reached)
    if op == "incr":
        value, subscore = old.value + value, old.subscore + subscore
    elif op == "decr":
        value, subscore = old.value - value, old.subscore - subscore
    elif op == "best":
        new, cur = (value, subscore), (old.value, old.subscore)
        if not (new > cur if descending else new < cur):
            return None
    value, subscore = _clamp(value), _clamp(subscore)
    if value == old.value and subscore == old.subscore:
        return None
    return Entry(value, subscore, reached)
