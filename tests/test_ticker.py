"""The ticker (server/ticker.py): one pass per tick period runs every match of a rate,
on asyncio's event loop and on uvloop (the server's, whose clock has a resolution of a
millisecond)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from server.ticker import Ticker

RATE = 30


class CountingMatch:
    """What the ticker drives (``Ticked``), counting its ticks and flushes."""

    tick_rate = RATE

    def __init__(self) -> None:
        self.ticks = 0
        self.flushes = 0

    def run_due(self, due_at: float, now: float) -> float | None:
        self.ticks += 1
        return due_at + 1 / RATE

    def flush(self) -> None:
        self.flushes += 1


async def _run(seconds: float) -> tuple[int, list[CountingMatch]]:
    """Passes of a ticker running 10 matches for ``seconds``, and the matches."""
    ticker = Ticker()
    passes = 0
    record_pass = ticker.headroom.record_pass

    def counted(now: float, late: float) -> None:
        nonlocal passes
        passes += 1
        record_pass(now, late)

    ticker.headroom.record_pass = counted  # type: ignore[method-assign]
    matches = [CountingMatch() for _ in range(10)]
    for match in matches:
        ticker.add(match)
    await asyncio.sleep(seconds)
    await ticker.close()
    return passes, matches


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop]:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop  # type: ignore[no-any-return]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_one_pass_per_tick_runs_every_match(loop: str) -> None:
    factory = _uvloop() if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        passes, matches = runner.run(_run(0.5))
    ticks = matches[0].ticks
    assert ticks >= 5
    # Every match ticked at each pass, and its appends were handed over after it.
    assert all(m.ticks == ticks and m.flushes == ticks for m in matches)
    # No empty passes: on uvloop a timer may fire while the clock still reads a little
    # before the due time; without the ticker's slack that made ~8 passes per tick.
    assert passes <= ticks + 1
