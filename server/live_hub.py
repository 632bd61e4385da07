"""Live spectating of one match: frames encoded once, released after the delay,
written to every live spectator without waiting for any of them.

A :class:`LiveHub` per live match receives each durable tick from the match's
sender (``Match._publish``), encodes its FRAME (and a STATE on keyframe ticks,
a SCOREBOARD when the standings changed) once, and keeps it in ``entries``
until every delay group has released it. A *group* is the spectators sharing
one delay: the match's ``spectator_delay`` and 0 for admins. Each message is kept
as a :class:`server.prepared.Prepared` websocket frame, serialized once; releasing
an entry writes those same bytes to all of a group's spectators: synchronously,
one ``transport.write()`` each, no task or copy per spectator.

Slow spectators (docs/protocol.md, 11.7): a spectator's queue is its unsent
bytes. Over ``queue_bytes`` it is skipped; at the next released keyframe it
gets SKIPPED + STATE and live frames again once its queue has drained; too
many skips closes it with 4010, too long in skip mode (stalled) drops its TCP
connection at once (server/closing.py). Memory per spectator is therefore at
most ``queue_bytes`` plus one frame, freed at most ``SLOW_CLOSE_GRACE_S`` after
the close.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from replay import protocol as p
from replay.keyframes import DEFAULT_KEYFRAME_SECONDS
from replay.rules import Rules
from server.closing import close_slow, drop
from server.prepared import Prepared
from server.spectator_options import SpectatingOptions

__all__ = ["LiveHub", "LiveSub"]

log = logging.getLogger(__name__)

SKIP_WINDOW_S = 60.0
"""``max_skips`` counts the skips of the last minute."""
RETAIN_EXTRA_S = DEFAULT_KEYFRAME_SECONDS + 2.0
"""Released entries kept beyond the delay, so the latest released keyframe and the
frames after it are in memory for a spectator who goes live."""


class LiveSub:
    """One live spectator of a hub."""

    __slots__ = ("conn", "group", "on_close", "skipping_since", "skips", "tick")

    def __init__(self, conn: ServerConnection, on_close: Callable[[], None]) -> None:
        self.conn = conn
        self.group: _Group | None = None
        self.skipping_since: float | None = None
        self.skips: deque[float] = deque()
        self.tick = 0
        """Last tick sent, valid while skipping (else the group's ``tick``)."""
        self.on_close = on_close

    def unsent(self) -> int:
        transport = self.conn.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def shown_tick(self) -> int:
        """The tick the client shows once it has read what was sent."""
        if self.skipping_since is not None or self.group is None:
            return self.tick
        return self.group.tick


@dataclass(slots=True)
class _Entry:
    tick: int
    at: float
    """Monotonic time the tick was published (its events durable)."""
    blob: bytes | None
    """The tick's events (``replay.codec.encode_batch``), None for a tick without."""
    keyframe: Any
    """The state on keyframe ticks (a copy nothing changes), else None; its STATE
    message is built when first sent (:meth:`LiveHub._state`)."""
    extra: Prepared | None
    """SCOREBOARD push or ENDED, sent right after the frame."""
    _frame: Prepared | None = None
    state: Prepared | None = None

    @property
    def frame(self) -> Prepared | None:
        """The FRAME message of the tick's events, built when first sent: a match
        nobody watches frames none (it built one a tick, 1 us each, and kept 5 s of
        them: 4,500 objects for the collector with 30 matches)."""
        if self._frame is None and self.blob is not None:
            self._frame = Prepared(p.frame(self.tick, self.blob))
        return self._frame


@dataclass(eq=False)
class _Group:
    delay: float
    subs: set[LiveSub] = field(default_factory=set)
    tick: int = 0
    """Newest released tick: the live edge of this group."""
    next_index: int = 0
    """Absolute index (hub.base_index-based) of the next entry to release."""


class LiveHub:
    def __init__(
        self,
        match_id: str,
        rules: Rules[Any],
        tick_rate: int,
        options: SpectatingOptions,
        initial_state: Any,
        *,
        queue_bytes: int,
        stall_seconds: float,
        max_skips: int,
        on_slow: Callable[[], None] | None = None,
    ) -> None:
        self.match_id = match_id
        self.rules = rules
        self.tick_rate = tick_rate
        self.options = options
        self.queue_bytes = queue_bytes
        self.stall_seconds = stall_seconds
        self.max_skips = max_skips
        self._on_slow = on_slow
        tick0 = rules.state_tick(initial_state)
        # Invariant: entries[i] has absolute index base_index + i; ticks increase.
        # The first entry is the initial state, so a young match always has a base.
        self.entries: deque[_Entry] = deque(
            # A copy: the caller's state goes on changing (its STATE is built when sent).
            [_Entry(tick0, time.monotonic(), None, rules.copy_state(initial_state), None)]
        )
        self.base_index = 0
        self.groups: dict[float, _Group] = {options.delay: _Group(options.delay, tick=tick0)}
        self.groups.setdefault(0.0, _Group(0.0, tick=tick0))
        for g in self.groups.values():
            g.next_index = 1
        self.finished = False
        self.drained = asyncio.Event()
        """Set once the match finished and every group released everything."""
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        """When the armed timer releases next (monotonic); inf when none is armed."""

    def _state(self, entry: _Entry) -> Prepared:
        """The STATE message of a keyframe entry, built when first sent, as the frame
        is: the matches of a process take their keyframes at the same tick, and 30 of
        10 players encoded theirs in the pass that published them (1.6 ms) although
        nobody watched."""
        if entry.state is None:
            rules, keyframe = self.rules, entry.keyframe
            data = rules.encode_state(keyframe)
            entry.state = Prepared(p.state(rules.state_tick(keyframe), rules.state_format, data))
        return entry.state

    # -- input from the match ----------------------------------------------------------

    def publish(
        self,
        tick: int,
        blob: bytes | None,
        keyframe: Any,
        board: list[dict[str, Any]] | None,
        at: float | None = None,
    ) -> None:
        """Tick ``tick`` is durable (called by the match's sender, in tick order).
        ``at``: when it was live (monotonic; default now). A hub fed from the store
        (server/follower.py) passes an estimate that is never earlier than the truth,
        so the delay still never shows a tick early."""
        extra = Prepared(p.scoreboard(None, tick, board)) if board is not None else None
        if blob is None and keyframe is None and extra is None:
            return
        self.entries.append(
            _Entry(tick, time.monotonic() if at is None else at, blob, keyframe, extra)
        )
        self._release(time.monotonic())

    def finish(self, ended: bytes, tick: int) -> None:
        """The match is over: ``ended`` (the ENDED message) follows the last frame."""
        self.entries.append(_Entry(tick, time.monotonic(), None, None, Prepared(ended)))
        self.finished = True
        self._release(time.monotonic())

    # -- releasing --------------------------------------------------------------------

    def _release(self, now: float) -> None:
        for g in self.groups.values():
            cutoff = now - g.delay
            while g.next_index - self.base_index < len(self.entries):
                entry = self.entries[g.next_index - self.base_index]
                if entry.at > cutoff:
                    break
                g.next_index += 1
                self._deliver(g, entry, now)
        self._prune(now)
        if self.finished and all(
            g.next_index - self.base_index >= len(self.entries) for g in self.groups.values()
        ):
            self.drained.set()
        else:
            self._arm(now)

    def _arm(self, now: float) -> None:
        """A timer for the next entry a delayed group must release on time: one with
        spectators, or any once the match is over (``drained``). A group nobody watches
        is released by the next publish or attach instead: a match without spectators
        pays no timer or wake-up per tick."""
        due = math.inf
        base, entries = self.base_index, self.entries
        for g in self.groups.values():
            if g.delay > 0 and (g.subs or self.finished) and g.next_index - base < len(entries):
                due = min(due, entries[g.next_index - base].at + g.delay)
        if due < self._timer_due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_due = due
            # A millisecond late rather than early: the loop's clock is coarser than
            # time.monotonic(), and an early wake-up would release nothing.
            self._timer = self._loop.call_later(max(0.0, due - now) + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_due = None, math.inf
        self._release(time.monotonic())

    def _prune(self, now: float) -> None:
        # Keep what a group has not released, and RETAIN_EXTRA_S of released entries
        # so the latest released keyframe stays available to spectators going live.
        oldest_needed = min(g.next_index for g in self.groups.values())
        horizon = now - max(self.groups) - RETAIN_EXTRA_S
        entries = self.entries
        while len(entries) > 1 and self.base_index < oldest_needed and entries[0].at < horizon:
            entries.popleft()
            self.base_index += 1

    def _deliver(self, g: _Group, entry: _Entry, now: float) -> None:
        if entry.blob is not None or entry.keyframe is not None:
            g.tick = entry.tick
        if not g.subs:
            return
        # The hot loop of the fan-out: per spectator one buffer-size check and one
        # transport write of the shared bytes per message. Closed connections are
        # skipped by Prepared.write and leave the group when their session ends
        # (SpectatorSession.close_now) or in the slow path below.
        limit = self.queue_bytes
        frame, extra = entry.frame, entry.extra
        slow: list[LiveSub] = []
        for sub in g.subs:
            if sub.skipping_since is None:
                conn = sub.conn
                transport = conn.transport
                if transport is None or transport.get_write_buffer_size() <= limit:
                    if frame is not None:
                        frame.write(conn)
                    if extra is not None:
                        extra.write(conn)
                    continue
            slow.append(sub)
        for sub in slow:
            if sub.conn.state is not State.OPEN:
                g.subs.discard(sub)
                continue
            if sub.skipping_since is not None:
                if entry.keyframe is not None and sub.unsent() <= self.queue_bytes // 2:
                    # Resynchronise at this keyframe: the client resets its state.
                    Prepared(p.skipped(sub.tick + 1, entry.tick, "slow_consumer")).write(sub.conn)
                    self._state(entry).write(sub.conn)
                    sub.skipping_since = None
                    if extra is not None:
                        extra.write(sub.conn)
                elif now - sub.skipping_since > self.stall_seconds:
                    # It read next to nothing for stall_seconds: a close frame queued
                    # behind its unread bytes would never reach it.
                    self._remove(g, sub, "stalled")
                    drop(sub.conn)
                continue
            if sub.unsent() > self.queue_bytes:
                sub.tick = entry.tick - 1  # it has every tick before this entry
                sub.skipping_since = now
                sub.skips.append(now)
                while sub.skips and sub.skips[0] < now - SKIP_WINDOW_S:
                    sub.skips.popleft()
                if len(sub.skips) > self.max_skips:
                    self._remove(g, sub, "too many skips")
                    close_slow(sub.conn, p.CLOSE_SLOW_CONSUMER, "slow consumer: too many skips")

    def _remove(self, g: _Group, sub: LiveSub, why: str) -> None:
        """Take a slow spectator out before its connection is closed or dropped."""
        g.subs.discard(sub)
        sub.group = None
        if self._on_slow is not None:
            self._on_slow()
        sub.on_close()
        log.info("closing slow spectator %s of %s: %s", sub.conn.remote_address, self.match_id, why)

    # -- spectators --------------------------------------------------------------------

    def _group(self, privileged: bool) -> _Group:
        """A spectator's group, released up to now (one nobody watches is released
        lazily, by the next publish or this)."""
        self._release(time.monotonic())
        return self.groups[0.0 if privileged else self.options.delay]

    def edge(self, privileged: bool) -> int:
        return self._group(privileged).tick

    def attach(self, sub: LiveSub, privileged: bool) -> int | None:
        """Go live: send the latest released keyframe and the released frames after it,
        then add ``sub`` to its group. Synchronous, so no frame is missed or doubled.
        Returns the tick the client shows, or None when no keyframe is in memory
        (the caller then resets the client from the store and calls :meth:`attach_after`)."""
        g = self._group(privileged)
        released = g.next_index - self.base_index
        start = None
        for i in range(released - 1, -1, -1):
            if self.entries[i].keyframe is not None:
                start = i
                break
        if start is None:
            return None
        self._state(self.entries[start]).write(sub.conn)
        self._send_released(sub.conn, start + 1, released)
        return self._join(g, sub)

    def attach_after(self, sub: LiveSub, privileged: bool, tick: int) -> int:
        """Like :meth:`attach` for a client already reset to ``tick``."""
        g = self._group(privileged)
        released = g.next_index - self.base_index
        first = next((i for i in range(released) if self.entries[i].tick > tick), released)
        self._send_released(sub.conn, first, released)
        return self._join(g, sub)

    def _send_released(self, conn: ServerConnection, lo: int, hi: int) -> None:
        for i in range(lo, hi):
            e = self.entries[i]
            if e.frame is not None:
                e.frame.write(conn)

    def _join(self, g: _Group, sub: LiveSub) -> int:
        sub.group = g
        sub.skipping_since = None
        g.subs.add(sub)
        self._arm(time.monotonic())  # its group is now released on time
        return g.tick

    def detach(self, sub: LiveSub) -> None:
        if sub.group is not None:
            sub.tick = sub.shown_tick()
            sub.group.subs.discard(sub)
            sub.group = None

    def queue_sizes(self) -> list[int]:
        """Unsent bytes per live spectator (a test and metrics hook)."""
        return [s.unsent() for g in self.groups.values() for s in g.subs]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_due = None, math.inf
