"""The server's spectators: per match its options and live hub, the delay rule, the
access rule, and one replay engine and timeline that every spectator reads through.

The delay rule lives here, in ONE place (docs/protocol.md 11.3): :meth:`Spectators.delay_edge`
is the newest tick a spectator may see by time; :meth:`Spectators.edge` caps it at the
last tick the store holds, which is what every read path (WATCH, LIST, the HTTP match
and viewer routes) can answer. A live match quiet past a keyframe tick has published
that tick to its hub, but stored no event since: without the cap its state is not
readable yet (``tick_out_of_range``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from replay.engine import ReplayEngine
from replay.errors import ReplayError
from replay.protocol import match_info
from replay.rules import GameRegistry, Rules
from replay.store.base import READ_ONLY_STATUSES, EventStore, MatchRecord
from replay.timeline import Timeline
from server.auth import Identity
from server.follower import Follower
from server.live_hub import LiveHub
from server.spectator_options import SpectatingOptions, stored_options

__all__ = ["Spectators", "finished_edge"]


class Spectators:
    """The server-wide part: options and hubs per match, one engine and timeline."""

    def __init__(
        self,
        store: EventStore,
        games: GameRegistry,
        default_delay: float,
        queue_bytes: int,
        stall_seconds: float,
        max_skips: int,
        on_slow: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.on_slow = on_slow
        self.default_delay = default_delay
        self.queue_bytes = queue_bytes
        self.stall_seconds = stall_seconds
        self.max_skips = max_skips
        self.engine = ReplayEngine(store, games)
        self.timeline = Timeline(self.engine)
        self.options: dict[str, SpectatingOptions] = {}
        """Per match created by this process or whose record was read (~150 bytes each);
        a cache of ``MatchRecord.options``, where the options are stored."""
        self.hubs: dict[str, LiveHub] = {}
        """Live matches, and finished ones until their delayed frames are all released."""
        self.follower: Follower | None = None
        """A cluster node: hubs of matches running on other nodes, fed from the store."""

    def make_hub(self, record: MatchRecord, rules: Rules[Any], state: Any) -> LiveHub:
        """The live hub of a match whose spectators see ``state`` first."""
        hub = self.hubs[record.match_id] = LiveHub(
            record.match_id,
            rules,
            record.tick_rate,
            self.learn(record),
            state,
            queue_bytes=self.queue_bytes,
            stall_seconds=self.stall_seconds,
            max_skips=self.max_skips,
            on_slow=self.on_slow,
        )
        return hub

    async def hub_for(self, record: MatchRecord) -> LiveHub | None:
        """The live hub of ``record``'s match: this process's, or (a cluster node) one
        fed from the store while the match runs on another node."""
        hub = self.hubs.get(record.match_id)
        if hub is None and self.follower is not None and record.status not in READ_ONLY_STATUSES:
            hub = await self.follower.follow(record, self.learn(record).delay)
        return hub

    async def take_followed(self, match_id: str) -> LiveHub | None:
        """This node carries the match on now: the hub it followed it with, caught up
        with the store (its spectators stay attached), or None."""
        if self.follower is None or match_id not in self.follower.followed:
            return None
        await self.follower.catch_up(match_id)
        return self.follower.release(match_id)

    def left(self, record: MatchRecord, hub: LiveHub) -> None:
        """This node no longer runs the match (another node does): a cluster node keeps
        feeding its hub from the store, so its spectators stay; else it is retired."""
        if self.follower is None:
            self.retire(hub)
            return
        follower = self.follower

        async def follow() -> None:
            try:
                await follower.follow(record, self.learn(record).delay, hub=hub)
            except ReplayError:
                self.retire(hub)

        asyncio.get_running_loop().create_task(follow())

    def options_of(self, match_id: str) -> SpectatingOptions:
        options = self.options.get(match_id)
        if options is None:
            record = self.engine.cached_match(match_id)
            if record is None:  # never read: the safe side, the default delay and private
                return SpectatingOptions(self.default_delay, False)
            options = self.learn(record)
        return options

    def learn(self, record: MatchRecord) -> SpectatingOptions:
        """The options stored with ``record`` (cached: a record's options never change)."""
        options = self.options.get(record.match_id)
        if options is None:
            options = stored_options(record.options, self.default_delay)
            self.options[record.match_id] = options
        return options

    def visible_to(self, ident: Identity, match: str | MatchRecord) -> bool:
        """Pass the record when you have one: after a restart only the record knows
        whether an old match is public (an id never read before counts as private)."""
        match_id = match if isinstance(match, str) else match.match_id
        if ident.role == "player":
            return False
        if not ident.player:  # token-less
            if not isinstance(match, str):
                return self.learn(match).public
            return self.options_of(match_id).public
        return ident.may_enter(match_id)

    def delay_edge(self, record: MatchRecord, privileged: bool) -> int:
        """THE delay rule: the newest tick this spectator may see by time (no I/O).
        For a live match, the hub's newest released tick, which may be past the
        store's last tick (quiet ticks): readers use :meth:`edge`."""
        hub = self.hubs.get(record.match_id)
        if hub is not None:
            return hub.edge(privileged)
        delay = 0.0 if privileged else self.learn(record).delay
        if record.status not in READ_ONLY_STATUSES:
            return 0  # not published by this process (yet): only the initial state
        return finished_edge(record.last_tick, record.tick_rate, record.ended_at, delay)

    def edge(self, record: MatchRecord, privileged: bool) -> int:
        """The newest tick this spectator may see that the store can answer for: the
        delay edge capped at ``record``'s last tick (pass a fresh record)."""
        return min(self.delay_edge(record, privileged), max(0, record.last_tick))

    def retire(self, hub: LiveHub) -> None:
        """A finished match's hub leaves once its delayed frames are all released."""

        async def wait() -> None:
            await hub.drained.wait()
            await hub.close()
            if self.hubs.get(hub.match_id) is hub:
                del self.hubs[hub.match_id]
            self.engine.forget(hub.match_id)

        asyncio.get_running_loop().create_task(wait())

    async def list(self, ident: Identity, status: str | None, limit: int) -> list[dict[str, Any]]:
        statuses = {"live": ["created", "running"], "finished": ["ended", "interrupted"]}
        records = await self.store.list_matches(
            status=statuses.get(status or ""), limit=limit if ident.player else 1000
        )
        out = []
        for r in records:
            if not self.visible_to(ident, r):
                continue
            o = self.learn(r)
            out.append(
                match_info(r, tick=self.edge(r, ident.role == "admin"))
                | {"spectator_delay": o.delay, "public_spectating": o.public}
            )
        return out[:limit]


def finished_edge(last_tick: int, tick_rate: int, ended_at: float | None, delay: float) -> int:
    """The edge of a match that is no longer published tick by tick (11.3): all of
    it once ``ended_at + delay`` has passed, else ticks were released at the rate."""
    last = max(0, last_tick)
    if delay <= 0 or ended_at is None:
        return last
    remaining = ended_at + delay - time.time()
    if remaining <= 0:
        return last
    return max(0, last - math.ceil(remaining * tick_rate))
