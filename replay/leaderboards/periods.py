"""Reset schedules: which period (in UTC) an event counts towards.

Events carry ticks, not wall-clock time. The time of an event is therefore
defined as ``match.created_at + tick / match.tick_rate`` (seconds since the
epoch, UTC): deterministic, so a rebuild puts every event in the same period
as the live projection did.

Period keys (strings, also used in queries):

* ``none``: one period, ``all``;
* ``daily``: ``YYYY-MM-DD``, from 00:00:00 UTC;
* ``weekly``: ISO week ``YYYY-Www`` (Monday 00:00 UTC to the next Monday);
* ``monthly``: ``YYYY-MM``, from the 1st, 00:00 UTC.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta
from typing import Literal

__all__ = ["ALL", "RESETS", "Reset", "event_time", "parse_period", "period_key", "previous_period"]

Reset = Literal["none", "daily", "weekly", "monthly"]
RESETS: tuple[str, ...] = ("none", "daily", "weekly", "monthly")
ALL = "all"

_PATTERNS = {
    "none": re.compile(r"all"),
    "daily": re.compile(r"(\d{4})-(\d{2})-(\d{2})"),
    "weekly": re.compile(r"(\d{4})-W(\d{2})"),
    "monthly": re.compile(r"(\d{4})-(\d{2})"),
}


def event_time(created_at: float, tick: int, tick_rate: int) -> float:
    return created_at + tick / tick_rate


_DAY = 86_400
_EPOCH = date(1970, 1, 1)


def period_key(reset: str, t: float) -> str:
    """The period containing UTC time ``t`` (seconds since the epoch)."""
    if reset == "none":
        return ALL
    day, second = divmod(t, _DAY)
    # The projection asks once per event: the key of a day is cached. Within a
    # millisecond of midnight, datetime decides (it rounds to the microsecond).
    if 0.001 < second < _DAY - 0.001 and 0 <= day < 1_000_000:
        return _key_of_day(reset, int(day))
    return _key_of_date(reset, datetime.fromtimestamp(t, UTC).date())


@functools.lru_cache(maxsize=256)
def _key_of_day(reset: str, day: int) -> str:
    return _key_of_date(reset, _EPOCH + timedelta(days=day))


def _key_of_date(reset: str, d: date) -> str:
    if reset == "daily":
        return d.isoformat()
    if reset == "weekly":
        year, week, _ = d.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if reset == "monthly":
        return f"{d.year:04d}-{d.month:02d}"
    raise ValueError(f"unknown reset schedule {reset!r}; known: {list(RESETS)}")


def _start(reset: str, key: str) -> date:
    m = _PATTERNS[reset].fullmatch(key)
    if m is None:
        raise ValueError(f"{key!r} is not a {reset} period key")
    if reset == "daily":
        return date(int(m[1]), int(m[2]), int(m[3]))
    if reset == "weekly":
        return date.fromisocalendar(int(m[1]), int(m[2]), 1)
    return date(int(m[1]), int(m[2]), 1)


def parse_period(reset: str, key: str) -> str:
    """Normalise a period key; ValueError if it is not a valid key for ``reset``."""
    if reset == "none":
        if key != ALL:
            raise ValueError(f"a board without resets has only the period {ALL!r}")
        return ALL
    try:
        return _key_of_date(reset, _start(reset, key))
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{key!r} is not a valid {reset} period: {exc}") from None


def previous_period(reset: str, key: str) -> str:
    """The period right before ``key`` (``all`` has none: ValueError)."""
    if reset == "none":
        raise ValueError("a board without resets has no previous period")
    start = _start(reset, key)
    return _key_of_date(reset, start - timedelta(days=1))
