"""Live spectating, on a cluster node, of matches that run on other nodes.

The node that runs a match feeds its :class:`~server.live_hub.LiveHub` tick by tick.
Any other node feeds a hub of its own from the store: one task per node follows the
global stream (woken by the store's commit notifications: LISTEN/NOTIFY on
PostgreSQL), folds each followed match's events into its state (keyframes for
spectators going live) and publishes every tick to the hub, so WATCH, live mode and
the delay work the same on every node.

The delay holds: a tick is stamped no earlier than it was live. Ticks read at once
(the catch-up when a node starts following) are stamped ``now - (last - tick) / rate``:
a match never ticks faster than its rate, so that is never earlier than the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from replay import protocol
from replay.codec import encode_batch
from replay.engine import ReplayEngine
from replay.errors import ReplayError
from replay.events import NewEvent
from replay.fold import fold_events
from replay.keyframes import keyframe_interval_ticks
from replay.rules import Rules
from replay.store.base import READ_ONLY_STATUSES, EventStore, MatchRecord
from server.live_hub import LiveHub

__all__ = ["Follower"]

log = logging.getLogger(__name__)

STATUS_POLL_S = 2.0
"""How often a followed match's record is read for an end the stream does not show
(a match interrupted, or marked ended, without a last event)."""


@dataclass(slots=True)
class _Followed:
    hub: LiveHub
    rules: Rules[Any]
    state: Any
    last_seq: int
    keyframe_every: int
    board: list[dict[str, Any]] | None


class Follower:
    """Feeds live hubs of matches that run elsewhere from the store (one per node)."""

    def __init__(
        self,
        store: EventStore,
        engine: ReplayEngine,
        make_hub: Callable[[MatchRecord, Rules[Any], Any], LiveHub],
        retire: Callable[[LiveHub], None],
    ) -> None:
        """``make_hub``: a new hub (registered with the spectators); ``retire``: a hub
        whose match ended, to let go once its delayed frames are out."""
        self.store = store
        self.engine = engine
        self._make_hub = make_hub
        self._retire = retire
        self.followed: dict[str, _Followed] = {}
        self._position = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._polled = time.monotonic()

    async def follow(
        self, record: MatchRecord, delay: float, hub: LiveHub | None = None
    ) -> LiveHub:
        """The hub of ``record``'s match (a running match of another node; spectators
        ``delay`` seconds behind), created and caught up with the store now, or ``hub``
        (a match this node stopped running), followed from its last published tick."""
        f = self.followed.get(record.match_id)
        if f is not None:
            return f.hub
        async with self._lock:
            if self._task is None:
                self._position = await self.store.last_position()
                self._task = asyncio.create_task(self._run(), name="follow-remote-matches")
            f = self.followed.get(record.match_id)
            if f is not None:
                return f.hub
            rules = self.engine.rules(record)
            if hub is None:
                start = max(-1, record.last_tick - math.ceil(delay * record.tick_rate) - 1)
                state = await self._state_at(record, rules, start)
                hub = self._make_hub(record, rules, state)
            else:
                start = hub.entries[-1].tick
                state = await self._state_at(record, rules, start)
            last_seq = await self._seq_through(record, start)
            f = _Followed(
                hub, rules, state, last_seq, keyframe_interval_ticks(record.tick_rate), None
            )
            self.followed[record.match_id] = f
            await self._catch_up(record.match_id, f, record.tick_rate)
            return hub

    def release(self, match_id: str) -> LiveHub | None:
        """Stop following ``match_id`` (this node carries it on now): its hub, whose
        last tick is the store's (the caller caught it up: :meth:`catch_up`)."""
        f = self.followed.pop(match_id, None)
        return f.hub if f is not None else None

    async def catch_up(self, match_id: str) -> None:
        f = self.followed.get(match_id)
        if f is not None:
            await self._catch_up(match_id, f, f.hub.tick_rate)

    async def _state_at(self, record: MatchRecord, rules: Rules[Any], tick: int) -> Any:
        if tick >= 0:
            with contextlib.suppress(ReplayError):
                return await self.engine.state_at(record.match_id, tick)
        return rules.initial_state(record.settings, record.seed)

    async def _seq_through(self, record: MatchRecord, tick: int) -> int:
        """The seq of the last event at or before ``tick`` (later ones are to publish)."""
        for b in await self.store.read_batches(record.match_id, from_tick=tick + 1):
            for k, e in enumerate(b.events):
                if e[2] > tick:
                    return b.first_seq + k - 1
        return record.version

    async def _catch_up(self, match_id: str, f: _Followed, rate: int) -> None:
        batches = await self.store.read_batches(match_id, from_seq=f.last_seq + 1)
        events = [
            e for b in batches for k, e in enumerate(b.events) if b.first_seq + k > f.last_seq
        ]
        if not events:
            return
        last_tick = events[-1][2]
        now = time.monotonic()
        self._publish(f, events, lambda tick: now - (last_tick - tick) / rate)
        f.last_seq = batches[-1].last_seq

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except ReplayError as exc:  # the store is down: try again in a moment
                log.warning("following other nodes' matches: %s", exc)
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("following other nodes' matches failed")
                await asyncio.sleep(1.0)

    async def _step(self) -> None:
        batches = await self.store.read_all_batches(self._position, limit=1000)
        if not batches:
            await self.store.wait_for_commit(self._position, STATUS_POLL_S)
            if time.monotonic() - self._polled >= STATUS_POLL_S:
                await self._poll_status()
            return
        for b in batches:
            self._position = b.last_position
            f = self.followed.get(b.match_id)
            if f is None or b.last_seq <= f.last_seq:
                continue
            if b.first_seq > f.last_seq + 1:  # started following after this cursor passed
                await self._catch_up(b.match_id, f, f.hub.tick_rate)
                continue
            events = [e for k, e in enumerate(b.events) if b.first_seq + k > f.last_seq]
            self._publish(f, events, _arrived)
            f.last_seq = b.last_seq

    def _publish(
        self,
        f: _Followed,
        events: Iterable[tuple[int, int, int, tuple[Any, ...]]],
        stamp: Callable[[int], float],
    ) -> None:
        rules = f.rules
        for tick, group in groupby(events, key=itemgetter(2)):
            tick_events = list(group)
            f.state = fold_events(rules, f.state, tick_events, tick)
            blob = encode_batch([NewEvent(t, tick, d, v) for t, v, _, d in tick_events])
            over = rules.is_over(f.state)
            keyframe = rules.copy_state(f.state) if tick % f.keyframe_every == 0 or over else None
            board = rules.scoreboard(f.state)
            changed = board if board != f.board else None
            f.board = board
            f.hub.publish(tick, blob, keyframe, changed, stamp(tick))
            if over:
                result = rules.result(f.state)
                reason = result.reason if result is not None else "over"
                self._finish(f, "ended", reason, tick)
                return

    def _finish(self, f: _Followed, status: str, reason: str, tick: int) -> None:
        f.hub.finish(
            protocol.ended(status, reason, tick, f.rules.scoreboard(f.state)),
            tick,
        )
        self.followed.pop(f.hub.match_id, None)
        self._retire(f.hub)

    async def _poll_status(self) -> None:
        self._polled = time.monotonic()
        for match_id, f in list(self.followed.items()):
            try:
                record = await self.store.get_match(match_id)
            except ReplayError:
                continue
            if record.status in READ_ONLY_STATUSES and record.version <= f.last_seq:
                self._finish(f, record.status, record.status, f.hub.entries[-1].tick)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _arrived(_tick: int) -> float:
    """A tick read as it is committed: live now."""
    return time.monotonic()
