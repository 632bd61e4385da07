"""One spectator's view of one match: live behind the delay, or any past tick.

The asyncio shell of a spectator session (server/session.py hands it the
decoded spectator messages). Modes: ``live`` (subscribed to the match's
:class:`server.spectating.LiveHub`), ``replay`` (a playback task reading the
store at a speed), ``paused``.

The delay rule lives in ONE place, :meth:`Watcher.edge`: every path that sends
match data (WATCH, SEEK, PLAY, STEP, LIVE, MARKERS, CLIP, SCOREBOARD, LIST)
clamps its tick with it, and the live feed releases frames to a spectator's
group only once they are past the same delay (docs/protocol.md, 11.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection

from replay import protocol as p
from replay.codec import encode_batch
from replay.engine import ReplayEngine
from replay.errors import TickOutOfRangeError, UnknownMatchError
from replay.events import NewEvent
from replay.keyframes import load_keyframe
from replay.playback import READ_AHEAD_TICKS
from replay.rules import GameRegistry
from replay.source import StoredEvent, read_events
from replay.store.base import READ_ONLY_STATUSES, EventStore, MatchRecord
from replay.timeline import Timeline
from server.auth import Identity
from server.closing import drop
from server.spectating import LiveHub, LiveSub, SpectatingOptions, finished_edge, stored_options

if TYPE_CHECKING:
    from server.lobby import Lobby

__all__ = ["Spectating", "Watcher"]

BACKPRESSURE_POLL_S = 0.02


class Spectating:
    """The server-wide part: options and hubs per match, one engine and timeline."""

    def __init__(
        self,
        store: EventStore,
        games: GameRegistry,
        default_delay: float,
        queue_bytes: int,
        stall_seconds: float,
        max_skips: int,
    ) -> None:
        self.store = store
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

    def edge(self, record: MatchRecord, privileged: bool) -> int:
        """THE delay rule: the newest tick this spectator may see."""
        hub = self.hubs.get(record.match_id)
        if hub is not None:
            return hub.edge(privileged)
        delay = 0.0 if privileged else self.learn(record).delay
        if record.status not in READ_ONLY_STATUSES:
            return 0  # not published by this process (yet): only the initial state
        return finished_edge(record.last_tick, record.tick_rate, record.ended_at, delay)

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
                {
                    "match_id": r.match_id,
                    "game": r.game,
                    "status": r.status,
                    "tick_rate": r.tick_rate,
                    "players": list(r.players),
                    "tick": self.edge(r, ident.role == "admin"),
                    "spectator_delay": o.delay,
                    "public_spectating": o.public,
                    "created_at": r.created_at,
                    "ended_at": r.ended_at,
                }
            )
        return out[:limit]


class Watcher:
    def __init__(
        self,
        spectating: Spectating,
        lobby: Lobby,
        conn: ServerConnection,
        identity: Identity,
        send: Callable[[bytes], None],
        on_slow: Callable[[], None],
    ) -> None:
        self.sp = spectating
        self.lobby = lobby
        self.conn = conn
        self.identity = identity
        self.privileged = identity.role == "admin"
        self.send = send
        self._on_slow = on_slow
        self.record: MatchRecord | None = None
        self.mode = "paused"
        self.speed = 1.0
        self.tick = 0
        """The tick the client shows (outside live mode)."""
        self.sub = LiveSub(conn, self._closed_by_hub)
        self.hub: LiveHub | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the one cap ---------------------------------------------------------------------

    def edge(self) -> int:
        assert self.record is not None
        return self.sp.edge(self.record, self.privileged)

    async def _refresh(self) -> MatchRecord:
        assert self.record is not None
        self.record = await self.sp.engine.match(self.record.match_id, refresh=True)
        return self.record

    async def _clamp(self, tick: int) -> tuple[int, bool]:
        record = await self._refresh()
        # The store's last tick too: a keyframe-only tick has no events to read up to.
        limit = min(self.edge(), max(0, record.last_tick)) if record.last_tick >= 0 else 0
        return (tick, False) if tick <= limit else (limit, True)

    # -- messages ------------------------------------------------------------------------

    async def handle(self, msg: Any) -> None:
        if isinstance(msg, p.ListMatches):
            items = await self.sp.list(self.identity, msg.status, msg.limit)
            self.send(p.matches(msg.ref, items))
            return
        if isinstance(msg, p.Watch):
            await self.watch(msg)
            return
        if self.record is None:
            raise p.ProtocolError(
                p.E_NOT_WATCHING, "WATCH a match first", getattr(msg, "ref", None)
            )
        if isinstance(msg, p.Seek):
            await self.seek(msg.tick)
        elif isinstance(msg, p.Play):
            await self.play(msg.speed)
        elif isinstance(msg, p.Pause):
            await self.pause()
        elif isinstance(msg, p.Step):
            await self.step(msg.n)
        elif isinstance(msg, p.GoLive):
            await self.live()
        elif isinstance(msg, p.Markers):
            await self.markers(msg)
        elif isinstance(msg, p.Clip):
            await self.clip(msg)
        elif isinstance(msg, p.Scoreboard):
            tick = self._shown()
            rows = await self.sp.engine.scoreboard_at(self.record.match_id, tick)
            self.send(p.scoreboard(msg.ref, tick, rows))

    async def watch(self, msg: p.Watch) -> None:
        ident = self.identity
        if ident.role == "player":
            raise p.ProtocolError(
                p.E_FORBIDDEN, "players JOIN their match; WATCH is for spectators"
            )
        forbidden = p.ProtocolError(p.E_FORBIDDEN, f"not allowed to watch {msg.match_id!r}")
        try:
            record = await self.sp.engine.match(msg.match_id, refresh=True)
        except UnknownMatchError:
            if not self.sp.visible_to(ident, msg.match_id):
                raise forbidden from None  # whether a match exists is not public either
            raise p.ProtocolError(p.E_UNKNOWN_MATCH, f"no match {msg.match_id!r}") from None
        if not self.sp.visible_to(ident, record):
            raise forbidden
        await self.stop()
        self.record = record
        self.hub = self.sp.hubs.get(record.match_id)
        rules = self.sp.engine.rules(record)
        opts = self.sp.options_of(record.match_id)
        self.send(
            p.watching(
                record.describe()
                | {
                    "state_format": rules.state_format,
                    "spectator_delay": 0.0 if self.privileged else opts.delay,
                    "public_spectating": opts.public,
                    "status": record.status,
                    "live": self.hub is not None and not self.hub.finished,
                    "first_tick": 0,
                    "last_tick": self.edge(),
                }
            )
        )
        self.speed = 1.0
        if msg.start == "live":
            await self.live()
        else:
            self.mode = "paused"
            await self.seek(msg.start)

    # -- controls ------------------------------------------------------------------------

    async def seek(self, tick: int) -> None:
        playing = self.mode == "replay"  # from live, a seek pauses: the viewer chose a moment
        await self.stop()
        tick, clamped = await self._clamp(tick)
        await self._reset_to(tick)
        if playing:
            self._start_playback()
        self._status(clamped)

    async def play(self, speed: float) -> None:
        await self.stop()
        self.speed = speed
        self._start_playback()
        self._status(False)

    async def pause(self) -> None:
        await self.stop()
        self._status(False)

    async def step(self, n: int) -> None:
        await self.stop()
        if n < 0:
            await self._reset_to(max(0, self.tick + n))
            self._status(False)
            return
        target, clamped = await self._clamp(self.tick + n)
        if target > self.tick:
            await self._send_frames(self.tick + 1, target, every_tick=True)
        self._status(clamped)

    async def live(self) -> None:
        await self.stop()
        hub = self.sp.hubs.get(self.record.match_id) if self.record else None
        if hub is None or hub.finished:
            tick, _ = await self._clamp(1 << 40)
            await self._reset_to(tick)
            self._status(False)
            return
        self.hub = hub
        if hub.attach(self.sub, self.privileged) is None:
            tick = min(hub.edge(self.privileged), max(0, (await self._refresh()).last_tick))
            await self._reset_to(tick)
            hub.attach_after(self.sub, self.privileged, tick)
        self.mode = "live"
        self._status(False)

    async def markers(self, msg: p.Markers) -> None:
        edge, _ = await self._clamp(1 << 40)
        to = edge if msg.to_tick is None else min(msg.to_tick, edge)
        found = (
            await self.sp.timeline.markers(self.record.match_id, msg.from_tick, to)
            if to >= msg.from_tick
            else []
        )  # type: ignore[union-attr]
        self.send(
            p.markers_reply(
                msg.ref, [{"tick": m.tick, "kind": m.kind, "data": m.data} for m in found]
            )
        )

    async def clip(self, msg: p.Clip) -> None:
        assert self.record is not None
        edge, _ = await self._clamp(1 << 40)
        if msg.kill_tick > edge:
            raise TickOutOfRangeError(self.record.match_id, msg.kill_tick, edge)
        found = await self.sp.timeline.markers(self.record.match_id, msg.kill_tick, msg.kill_tick)
        kill = next((m for m in found if "killer" in m.data), None)
        if kill is None:
            raise p.ProtocolError(
                "unknown_marker", f"no kill marker at tick {msg.kill_tick}", msg.ref
            )
        c = await self.sp.timeline.kill_clip(self.record.match_id, kill, msg.seconds)
        self.send(
            p.clip_reply(
                msg.ref,
                {
                    "match_id": c.match_id,
                    "from_tick": c.from_tick,
                    "to_tick": c.to_tick,
                    "follow": c.follow,
                    "follow_player": c.follow_player,
                },
            )
        )

    # -- internals -------------------------------------------------------------------------

    def _shown(self) -> int:
        return self.sub.shown_tick() if self.mode == "live" else self.tick

    def _status(self, clamped: bool) -> None:
        self.send(p.playback(self.mode, self.speed, self._shown(), self.edge(), clamped))

    async def stop(self) -> None:
        """Leave live mode or stop the playback task; the mode becomes paused."""
        if self.mode == "live" and self.hub is not None:
            self.tick = self.sub.shown_tick()
            self.hub.detach(self.sub)
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.mode = "paused"

    def _closed_by_hub(self) -> None:
        self.mode = "paused"

    async def _reset_to(self, tick: int) -> None:
        """STATE of the nearest keyframe at or before ``tick``, then FRAMEs up to it
        (the client folds at most one keyframe interval). Without a usable keyframe,
        the STATE is the exact ``state_at(tick)``."""
        assert self.record is not None
        record = self.record
        rules = self.sp.engine.rules(record)
        base, state = -1, None
        kf = await self.sp.store.get_keyframe(record.match_id, tick)
        if kf is not None:
            state = load_keyframe(rules, kf)
            base = kf.tick
        if state is None:
            state = await self.sp.engine.state_at(record.match_id, tick)
            base = tick
        self.send(p.state(base, rules.state_format, rules.encode_state(state)))
        self.tick = base
        if tick > base:
            await self._send_frames(base + 1, tick, every_tick=False)

    async def _send_frames(self, lo: int, hi: int, *, every_tick: bool) -> None:
        """FRAMEs of ticks lo..hi at once (a fold the client does instantly)."""
        assert self.record is not None
        events = await read_events(self.sp.store, self.record.match_id, lo, hi)
        for tick, evs in _by_tick(events, lo, hi, every_tick):
            self.send(p.frame(tick, _blob(evs)))
        self.tick = hi

    def _start_playback(self) -> None:
        self.mode = "replay"
        self._task = asyncio.get_running_loop().create_task(self._playback())

    async def _playback(self) -> None:
        """One FRAME per tick, paced at ``speed`` x tick rate, from the tick after the
        shown one; waits (never skips) while the client's queue is over the limit."""
        assert self.record is not None
        match_id = self.record.match_id
        period = 1.0 / (self.record.tick_rate * self.speed)
        anchor, first = time.monotonic(), self.tick + 1
        while True:
            edge, _ = await self._clamp(1 << 40)
            if self.tick >= edge:
                hub = self.sp.hubs.get(match_id)
                self._task = None
                if hub is not None and not hub.finished:
                    await self.live()  # caught up with the live edge: follow it
                else:
                    self.mode = "paused"
                    self._status(False)
                return
            hi = min(edge, self.tick + READ_AHEAD_TICKS)
            events = await read_events(self.sp.store, match_id, self.tick + 1, hi)
            for tick, evs in _by_tick(events, self.tick + 1, hi, True):
                delay = anchor + (tick - first) * period - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._backpressure()
                self.send(p.frame(tick, _blob(evs)))
                self.tick = tick

    async def _backpressure(self) -> None:
        waited = 0.0
        while self.sub.unsent() > self.sp.queue_bytes:
            if waited > self.sp.stall_seconds:
                # Stalled: a close frame behind its unread bytes would never reach it.
                self._on_slow()
                drop(self.conn)
                raise asyncio.CancelledError
            await asyncio.sleep(BACKPRESSURE_POLL_S)
            waited += BACKPRESSURE_POLL_S

    def close_now(self) -> None:
        """The connection is gone: leave the hub and stop the playback task."""
        if self.hub is not None:
            self.hub.detach(self.sub)
        if self._task is not None:
            self._task.cancel()
            self._task = None


def _blob(events: list[StoredEvent]) -> bytes | None:
    if not events:
        return None
    return encode_batch([NewEvent(t, tick, data, v) for t, v, tick, data in events])


def _by_tick(
    events: list[StoredEvent], lo: int, hi: int, every_tick: bool
) -> list[tuple[int, list[StoredEvent]]]:
    grouped: dict[int, list[StoredEvent]] = {}
    for e in events:
        grouped.setdefault(e[2], []).append(e)
    if every_tick:
        return [(t, grouped.get(t, [])) for t in range(lo, hi + 1)]
    items = sorted(grouped.items())
    if not items or items[-1][0] != hi:
        items.append((hi, []))  # the client's state must reach tick hi (state_at(hi))
    return items
