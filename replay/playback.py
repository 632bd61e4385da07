"""Playback: an async iterator of frames, one per tick, with viewer controls.

::

    playback = Playback(engine, match_id, start=0, speed=2.0, with_state=True)
    async for frame in playback:
        draw(frame.tick, frame.events, frame.state)

Every tick from ``start`` to the limit yields exactly one frame, including
ticks without events, in increasing tick order until a :meth:`seek` moves the
position (backwards too). Controls may be called from any task of the loop:

* :meth:`set_speed`: ``MIN_SPEED`` to ``MAX_SPEED`` times the match tick rate
  (the limits of the spectator protocol's PLAY), or ``None`` for as fast as
  possible. Frame ``t`` is due ``(t - t0) / (tick_rate * speed)`` seconds after
  the anchor ``t0``; the anchor is reset by every control, so a change never
  causes a burst of catch-up frames.
* :meth:`pause` / :meth:`resume`; :meth:`step` releases exactly ``n`` frames
  (unthrottled) and leaves the playback paused.
* :meth:`seek`: the next frame is the given tick, with its exact state.
* :meth:`reset`: the shortest way for a viewer that folds events itself to
  show a tick from scratch: a keyframe's state and the frames after it.
* The **limit** (:meth:`limit`): the last durable tick, capped by ``end`` and
  by ``edge``, a cap that may move with time (a spectator's delay edge). At the
  limit, iteration stops; ``follow_live=True`` instead waits for new durable
  ticks of a match still being recorded (not for ``edge`` to move), and stops
  once the match has ended and its last tick was played. A stopped playback
  goes on after a :meth:`seek` or :meth:`reset`.

Every tick is reached through the :class:`~replay.engine.ReplayEngine` (its
cache and its one keyframe-base selection). Pacing uses an injectable
``clock``/``sleep`` pair so tests can run a throttled playback deterministically.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from replay.engine import ReplayEngine
from replay.errors import ReplayError, TickOutOfRangeError
from replay.fold import fold_events
from replay.protocol import MAX_SPEED, MIN_SPEED
from replay.source import StoredEvent, read_events
from replay.store.base import READ_ONLY_STATUSES

__all__ = ["MAX_SPEED", "MIN_SPEED", "Frame", "InvalidSpeedError", "Playback", "Reset"]

READ_AHEAD_TICKS = 256
"""Ticks of events read per source call: ~8.5 s at 30 Hz, about 100 KB of
decoded events for a busy 64-player match, and one source round trip per
256 frames instead of per frame."""


class InvalidSpeedError(ReplayError, ValueError):
    """A playback speed outside ``MIN_SPEED``..``MAX_SPEED`` (use None for unthrottled)."""

    code = "invalid_speed"


@dataclass(frozen=True, slots=True)
class Frame:
    tick: int
    events: list[StoredEvent]
    """The tick's events ``(type, version, tick, data)``, in order; empty for a quiet tick."""
    state: Any | None = None
    """The state at the end of ``tick`` (a copy the caller owns), when requested."""


@dataclass(frozen=True, slots=True)
class Reset:
    """A tick shown from scratch (:meth:`Playback.reset`): fold ``frames`` into ``state``."""

    tick: int
    """The tick of ``state``: the nearest valid keyframe's, or the target itself."""
    state: Any
    """The exact state at the end of ``tick`` (a copy the caller owns)."""
    frames: list[Frame]
    """After ``tick`` up to the target: the ticks with events, then the target (no states)."""


class Playback:
    def __init__(
        self,
        engine: ReplayEngine,
        match_id: str,
        *,
        start: int = 0,
        end: int | None = None,
        speed: float | None = 1.0,
        with_state: bool = False,
        follow_live: bool = False,
        edge: Callable[[], int] | None = None,
        live_poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.match_id = match_id
        self.end = end
        """Last tick to play (inclusive); None: the last tick (or none when following live)."""
        self.with_state = with_state
        self.follow_live = follow_live
        self.edge = edge
        """The newest tick the viewer may see now, asked before every frame (cheap, no
        I/O): a spectator's delay edge (docs/protocol.md 11.3). None: no such cap."""
        self.live_poll_seconds = live_poll_seconds
        self._clock = clock
        self._sleep = sleep
        self._speed = _checked_speed(speed)
        self._next = start
        self._loaded = False
        self._checked_start = False
        self._tick_rate = 0
        self._last_tick = -1  # last durable tick known; refreshed at the limit
        self._live = True
        # Events of ticks [_buf_from, _buf_to], by tick: read ahead in one call.
        self._buf: dict[int, list[StoredEvent]] = {}
        self._buf_from, self._buf_to = 0, -1
        # The next window, read while this one plays: (from, to, task).
        self._prefetch: tuple[int, int, asyncio.Future[list[StoredEvent]]] | None = None
        self._rules: Any = None
        # Invariant: when not None, _state is the exact state at the end of tick _next - 1.
        self._state: Any | None = None
        self._anchor: tuple[float, int] | None = None
        self._running = asyncio.Event()
        self._running.set()
        self._steps = 0
        self._seeks = 0  # counts seeks, so a frame being built knows one happened meanwhile
        self._control = asyncio.Event()  # wakes a throttled or live wait on any control

    # -- controls ------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The tick of the next frame."""
        return self._next

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def speed(self) -> float | None:
        return self._speed

    def set_speed(self, speed: float | None) -> None:
        self._speed = _checked_speed(speed)
        self._touch()

    def pause(self) -> None:
        self._running.clear()
        self._touch()

    def resume(self) -> None:
        self._running.set()
        self._touch()

    def step(self, n: int = 1) -> None:
        """Release ``n`` more frames at once, then stay paused (steps still pending
        when the playback stops at its limit are dropped)."""
        if n < 1:
            raise ValueError("step forward by at least one frame (seek to go back)")
        self._running.clear()
        self._steps += n
        self._touch()

    async def limit(self) -> int:
        """The newest tick this playback may reach now (re-reading the last durable
        tick): min(last durable tick, ``end``, ``edge()``)."""
        await self._refresh()
        return self._limit()

    async def seek(self, tick: int) -> None:
        """Make ``tick`` the next frame. Raises TickOutOfRangeError beyond the limit
        (the playback is unchanged)."""
        await self._check(tick)
        if tick != self._next:
            self._moved(tick)
        self._touch()

    async def seek_live(self) -> None:
        """Jump to the limit: the live edge of a match being recorded (or the viewer's edge)."""
        await self.seek(await self.limit())

    async def reset(self, tick: int) -> Reset:
        """Show ``tick`` from scratch, for a viewer that folds events itself: the state
        of the nearest valid keyframe at or before ``tick`` (the exact state at ``tick``
        when there is none) and the frames after it up to ``tick``, so the viewer folds
        at most one keyframe interval. The next frame is ``tick + 1``. Raises
        TickOutOfRangeError beyond the limit (the playback is unchanged)."""
        await self._check(tick)
        base = await self.engine.keyframe_at_or_before(self.match_id, tick)
        if base is None:
            base = tick, await self.engine.state_at(self.match_id, tick)
        base_tick, state = base
        frames = []
        if tick > base_tick:
            by_tick: dict[int, list[StoredEvent]] = {}
            for event in await read_events(self.engine.source, self.match_id, base_tick + 1, tick):
                by_tick.setdefault(event[2], []).append(event)
            frames = [Frame(t, events) for t, events in by_tick.items()]
            if tick not in by_tick:
                frames.append(Frame(tick, []))  # the viewer's state must reach ``tick``
        self._moved(tick + 1)
        self._touch()
        return Reset(base_tick, state, frames)

    def shows(self, tick: int) -> None:
        """The viewer reached ``tick`` another way (a live feed): the next frame is
        ``tick + 1``. Not checked against the limit: at it, iteration stops (or,
        following live, waits) until ``tick + 1`` is there."""
        if tick + 1 != self._next:
            self._moved(tick + 1)
        self._checked_start = True
        self._touch()

    # -- iteration -------------------------------------------------------------------

    def __aiter__(self) -> Playback:
        return self

    async def __anext__(self) -> Frame:
        if not self._checked_start:
            await self._begin()
        while True:
            by_step = await self._gate()
            tick = self._next
            if self.end is not None and tick > self.end:
                break
            if tick > self._limit():
                ready = await self._await_tick(tick)
                if ready is None:
                    continue  # a control call (seek, pause, ...) while waiting: re-evaluate
                if not ready:
                    break
            seeks = self._seeks
            events = await self._events_of(tick)
            state = None
            if self.with_state and self._state is None:
                state = await self.engine.state_at(self.match_id, tick)
            if seeks != self._seeks:
                continue  # a seek while this frame was read: build the frame it asked for
            if self.with_state:
                if state is None:
                    state = fold_events(self._rules, self._state, events, tick)
                self._state = state
                state = self._rules.copy_state(state)
            if by_step:
                self._steps -= 1
            self._next = tick + 1
            return Frame(tick, events, state)
        self._steps = 0
        self._drop_prefetch()
        raise StopAsyncIteration

    # -- internals ---------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Re-read the match record: its last durable tick and whether it is live."""
        record = await self.engine.match(self.match_id, refresh=True)
        if not self._loaded:
            self._tick_rate = record.tick_rate
            self._rules = self.engine.rules(record)
            self._loaded = True
        self._last_tick = max(0, record.last_tick)
        self._live = record.status not in READ_ONLY_STATUSES

    def _limit(self) -> int:
        limit = self._last_tick
        if self.end is not None:
            limit = min(limit, self.end)
        if self.edge is not None:
            limit = min(limit, self.edge())
        return limit

    async def _check(self, tick: int) -> None:
        limit = await self.limit()
        if not 0 <= tick <= limit:
            raise TickOutOfRangeError(self.match_id, tick, limit)
        self._checked_start = True

    def _moved(self, next_tick: int) -> None:
        self._next = next_tick
        self._state = None
        self._seeks += 1

    async def _begin(self) -> None:
        await self._refresh()
        if not 0 <= self._next <= self._last_tick and not (self.follow_live and self._live):
            raise TickOutOfRangeError(self.match_id, self._next, self._last_tick)
        self._checked_start = True

    def _touch(self) -> None:
        self._anchor = None
        self._control.set()

    async def _gate(self) -> bool:
        """Return when the next frame may go: True for a pending step (consumed by the
        caller once the frame exists), False when playing and the frame is due."""
        while True:
            # Cleared before reading the controls' state, so a control call during
            # any await below is never missed.
            self._control.clear()
            if self._steps:
                return True
            if self._running.is_set():
                if await self._wait_due():
                    return False
                continue  # a control changed the schedule: re-evaluate
            await self._control.wait()

    async def _wait_due(self) -> bool:
        """Sleep until the next frame is due; False when a control interrupted."""
        if self._speed is None:
            return True
        now = self._clock()
        if self._anchor is None:
            self._anchor = (now, self._next)
            return True
        t0, tick0 = self._anchor
        delay = t0 + (self._next - tick0) / (self._tick_rate * self._speed) - now
        return delay <= 0 or await self._unless_control(self._sleep(delay))

    async def _unless_control(self, job: Awaitable[Any]) -> bool:
        """Await ``job`` unless a control call comes (or came, since the caller cleared
        the flag) first; True when ``job`` finished."""
        task = asyncio.ensure_future(job)
        waker = asyncio.ensure_future(self._control.wait())
        try:
            done, _ = await asyncio.wait({task, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the caller is cancelled: nothing left waiting behind it
            task.cancel()
            waker.cancel()
        return task in done and waker not in done

    async def _await_tick(self, tick: int) -> bool | None:
        """Wait until ``tick`` is durable and within ``edge``: True; False when it is past
        ``edge``, or never will be durable (match over, or not following); None when a
        control call interrupted the wait."""
        waited = False
        while True:
            self._control.clear()
            position = await self.engine.source.last_position()
            await self._refresh()
            if self.edge is not None and tick > self.edge():
                return False  # the edge moves with time, not with commits: the caller decides
            if tick <= self._last_tick:
                if waited:
                    self._anchor = None  # resume pacing from the live edge
                return True
            if not (self.follow_live and self._live):
                return False
            wait = self.engine.source.wait_for_commit(position, self.live_poll_seconds)
            if not await self._unless_control(wait):
                return None
            waited = True

    async def _events_of(self, tick: int) -> list[StoredEvent]:
        if not self._buf_from <= tick <= self._buf_to:
            ahead = self._prefetch
            self._prefetch = None
            if ahead is not None and ahead[0] == tick:
                to, events = ahead[1], await ahead[2]
            else:
                if ahead is not None:
                    ahead[2].cancel()  # a seek moved away from it
                to = self._window_end(tick)
                events = await read_events(self.engine.source, self.match_id, tick, to)
            self._buf = {}
            for event in events:
                self._buf.setdefault(event[2], []).append(event)
            self._buf_from, self._buf_to = tick, to
            if to < self._last_tick and (self.end is None or to < self.end):
                # Overlap the next read with playing this window.
                nxt, nxt_to = to + 1, self._window_end(to + 1)
                task = asyncio.ensure_future(
                    read_events(self.engine.source, self.match_id, nxt, nxt_to)
                )
                task.add_done_callback(_retrieve)
                self._prefetch = (nxt, nxt_to, task)
        return self._buf.get(tick, [])

    def _window_end(self, tick: int) -> int:
        # Not capped by ``edge``: events past it are read ahead, never sent early.
        to = min(tick + READ_AHEAD_TICKS - 1, self._last_tick)
        return to if self.end is None else min(to, self.end)

    def _drop_prefetch(self) -> None:
        if self._prefetch is not None:
            self._prefetch[2].cancel()
            self._prefetch = None


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A prefetch nobody awaits (dropped by a seek or the end) must not log
    # "exception never retrieved"; whoever awaits it still gets the exception.
    if not task.cancelled():
        task.exception()


def _checked_speed(speed: float | None) -> float | None:
    if speed is not None and not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidSpeedError(
            f"speed {speed}x is outside {MIN_SPEED}x..{MAX_SPEED}x (None: unthrottled)"
        )
    return speed
