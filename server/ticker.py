"""One task ticks every match of the process, and measures the process's headroom.

A task per match (and another to send) costs a wake-up, a timer and a store
round trip per match per tick: with matches of 2-10 players that per-match cost,
not the players, is what fills a core. So the matches share one clock: each
tick rate has one grid of due times (``k / rate`` on the event loop's clock), every
match of that rate is due at the same instants, and one pass runs all the due
matches, then hands their ticks to the store together, where they meet in one
group commit (server/match.py, ``flush``).

Each pass also tells :class:`server.headroom.Headroom` how late it ran (tick
lateness: the event loop was busy past a due time).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Protocol

from server.headroom import Headroom

__all__ = ["Ticked", "Ticker"]

CLOCK_SLACK_S = 0.001
"""A due time this close ahead counts as come. uvloop's clock and timers have a
resolution of one millisecond: a timer set for a due time may fire while the clock
still reads a little before it, and without the slack the ticker went back to sleep
for the rest of that millisecond, several times a tick (30 matches at 30 Hz: 790 passes
in 3 s, 700 of them empty; 90 with the slack)."""


class Ticked(Protocol):
    """What the ticker drives (server/match.py's Match)."""

    tick_rate: int

    def run_due(self, due_at: float, now: float) -> float | None:
        """Run the tick due at ``due_at``; the next due time, or None when done."""
        ...

    def flush(self) -> None:
        """Hand what the tick produced to the store (without waiting for it)."""
        ...


class Ticker:
    """The tick clock of every match in the process (see the module docstring)."""

    def __init__(self, headroom: Headroom | None = None) -> None:
        self.headroom = headroom or Headroom()
        self._due: list[tuple[float, int, Ticked]] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._sleep: asyncio.Future[None] | None = None
        self._wake_at = math.inf
        """When the sleeping ticker wakes next."""

    def add(self, match: Ticked) -> None:
        """Tick ``match`` from the next instant of its rate's grid on."""
        loop = asyncio.get_running_loop()
        period = 1.0 / match.tick_rate
        due_at = (math.floor(loop.time() / period) + 1) * period
        heapq.heappush(self._due, (due_at, next(self._order), match))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="ticker")
        elif due_at < self._wake_at and self._sleep is not None and not self._sleep.done():
            self._sleep.set_result(None)  # due before what the ticker sleeps towards

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._due
        while due:
            wake_at = due[0][0]
            if wake_at > loop.time() + CLOCK_SLACK_S:
                self._sleep, self._wake_at = loop.create_future(), wake_at
                timer = loop.call_at(wake_at, _wake, self._sleep)
                await self._sleep
                timer.cancel()
                self._wake_at = math.inf
            now = loop.time()
            ran: list[Ticked] = []
            late = 0.0
            while due and due[0][0] <= now + CLOCK_SLACK_S:
                due_at, order, match = heapq.heappop(due)
                late = max(late, now - due_at)
                next_at = match.run_due(due_at, now)
                if next_at is not None:
                    heapq.heappush(due, (next_at, order, match))
                ran.append(match)
            self.headroom.record_pass(now, late)
            for match in ran:  # every due match ticked: their appends meet in one group
                match.flush()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
