"""One spectator connection's session: a match watched live behind the delay, or any
past tick (docs/protocol.md section 11).

``server/session.py`` hands it the decoded spectator messages. Modes: ``live``
(subscribed to the match's :class:`server.live_hub.LiveHub`), ``replay`` (a task
pulling paced frames from a :class:`replay.playback.Playback`), ``paused``. Outside
the live feed every tick is reached through that one Playback per WATCH, and so
through the replay engine (its cache, its one keyframe-base selection).

The delay rule (:meth:`server.spectators.Spectators.delay_edge`) is the Playback's
``edge``: every path that sends match data (WATCH, SEEK, PLAY, STEP, LIVE, MARKERS,
CLIP, SCOREBOARD) stays within ``Playback.limit()``, and the live feed releases
frames to a spectator's group only once they are past the same delay (11.3).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection

from replay import protocol as p
from replay.codec import encode_batch
from replay.errors import ReplayError, TickOutOfRangeError, UnknownMatchError
from replay.events import NewEvent
from replay.playback import Frame, Playback
from replay.source import StoredEvent
from replay.store.base import MatchRecord
from replay.timeline import marker_json
from server.auth import Identity
from server.closing import drop
from server.live_hub import LiveHub, LiveSub
from server.spectators import Spectators

__all__ = ["SpectatorSession"]

BACKPRESSURE_POLL_S = 0.02


class SpectatorSession:
    def __init__(
        self,
        spectators: Spectators,
        conn: ServerConnection,
        identity: Identity,
        send: Callable[[bytes], None],
        on_slow: Callable[[], None],
    ) -> None:
        self.spectators = spectators
        self.conn = conn
        self.identity = identity
        self.privileged = identity.role == "admin"
        self.send = send
        self._on_slow = on_slow
        self.record: MatchRecord | None = None
        """The watched match as first read; the engine keeps the latest (``_latest``)."""
        self.playback: Playback | None = None
        """Outside live mode, its position is the tick after the one the client shows."""
        self.mode = "paused"
        self.sub = LiveSub(conn, self._closed_by_hub)
        self.hub: LiveHub | None = None
        self._pump: asyncio.Task[None] | None = None
        self._seeking: asyncio.Task[None] | None = None
        """The seek in progress: SEEKs that arrive meanwhile coalesce into ``_seek_to``."""
        self._seek_to: int | None = None
        self._replaced = 0
        """SEEKs replaced by a newer one, each still owed its PLAYBACK (in order)."""

    # -- messages ------------------------------------------------------------------------

    async def handle(self, msg: Any) -> None:
        if isinstance(msg, p.ListMatches):
            items = await self.spectators.list(self.identity, msg.status, msg.limit)
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
            # Seeks coalesce: a SEEK that arrives while one is in progress replaces any
            # pending one, so a scrubbing client gets the state of where it stopped,
            # not of every tick it passed. The replaced one is still answered by a
            # PLAYBACK (no STATE): every control gets exactly one, in order.
            if self._seek_to is not None:
                self._replaced += 1
            self._seek_to = msg.tick
            if self._seeking is None:
                self._seeking = asyncio.get_running_loop().create_task(self._seek_latest())
            return
        await self._settle()  # every other message comes after the seeks before it
        if isinstance(msg, p.Play):
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
            await self.scoreboard(msg)

    async def _seek_latest(self) -> None:
        try:
            while (tick := self._seek_to) is not None:
                self._seek_to = None
                for _ in range(self._replaced):
                    self._status(False)
                self._replaced = 0
                try:
                    await self.seek(tick)
                except (p.ProtocolError, ReplayError) as exc:
                    self.send(p.error(exc.code, str(exc)))
        finally:
            self._seeking = None

    async def _settle(self) -> None:
        """Wait for the seeks in progress (SEEK answers in order with the other controls)."""
        if self._seeking is not None and self._seeking is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._seeking)

    async def watch(self, msg: p.Watch) -> None:
        await self._settle()
        ident, spectators = self.identity, self.spectators
        if ident.role == "player":
            raise p.ProtocolError(
                p.E_FORBIDDEN, "players JOIN their match; WATCH is for spectators"
            )
        forbidden = p.ProtocolError(p.E_FORBIDDEN, f"not allowed to watch {msg.match_id!r}")
        try:
            record = await spectators.engine.match(msg.match_id, refresh=True)
        except UnknownMatchError:
            if not spectators.visible_to(ident, msg.match_id):
                raise forbidden from None  # whether a match exists is not public either
            raise p.ProtocolError(p.E_UNKNOWN_MATCH, f"no match {msg.match_id!r}") from None
        if not spectators.visible_to(ident, record):
            raise forbidden
        await self.stop()
        self.record = record
        self.hub = await spectators.hub_for(record)
        self.playback = Playback(spectators.engine, record.match_id, edge=self._delay_edge)
        self.playback.pause()
        rules = spectators.engine.rules(record)
        opts = spectators.options_of(record.match_id)
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
                    "last_tick": spectators.edge(record, self.privileged),
                }
            )
        )
        if msg.start == "live":
            await self.live()
        else:
            await self.seek(msg.start)

    # -- controls ------------------------------------------------------------------------

    async def seek(self, tick: int) -> None:
        playing = self.mode == "replay"  # from live, a seek pauses: the viewer chose a moment
        await self.stop()
        tick, clamped = await self._clamp(tick)
        await self._reset(tick)
        if playing:
            self._start_pump()
        self._status(clamped)

    async def play(self, speed: float) -> None:
        await self.stop()
        self._playback().set_speed(speed)  # the protocol checked it: the same limits
        self._start_pump()
        self._status(False)

    async def pause(self) -> None:
        await self.stop()
        self._status(False)

    async def step(self, n: int) -> None:
        await self.stop()
        shown = self._shown()
        target, clamped = await self._clamp(max(0, shown + n))
        if n < 0:
            await self._reset(target)
        elif target > shown:
            playback = self._playback()
            playback.step(target - shown)
            with contextlib.suppress(StopAsyncIteration):  # the limit never shrinks
                for _ in range(target - shown):
                    # Unpaced (a fold, at once) but never more than the spectator's queue
                    # ahead of what the client read: a burst of STEPs waits for the client
                    # instead of queueing its frames in the server.
                    if not await self._room():
                        return
                    self._send_frame(await anext(playback))
        self._status(clamped)

    async def live(self) -> None:
        await self.stop()
        assert self.record is not None
        hub = self.spectators.hubs.get(self.record.match_id)
        if hub is None or hub.finished:
            await self._reset(await self._playback().limit())
            self._status(False)
            return
        self.hub = hub
        if hub.attach(self.sub, self.privileged) is None:
            tick = await self._playback().limit()
            await self._reset(tick)
            hub.attach_after(self.sub, self.privileged, tick)
        self.mode = "live"
        self._status(False)

    async def markers(self, msg: p.Markers) -> None:
        assert self.record is not None
        edge = await self._playback().limit()
        to = edge if msg.to_tick is None else min(msg.to_tick, edge)
        found = (
            await self.spectators.timeline.markers(
                self.record.match_id, msg.from_tick, to, abandoned=msg.abandoned
            )
            if to >= msg.from_tick
            else []
        )
        self.send(p.markers_reply(msg.ref, [marker_json(m) for m in found]))

    async def clip(self, msg: p.Clip) -> None:
        assert self.record is not None
        match_id, timeline = self.record.match_id, self.spectators.timeline
        edge = await self._playback().limit()
        if msg.kill_tick > edge:
            raise TickOutOfRangeError(match_id, msg.kill_tick, edge)
        found = await timeline.markers(match_id, msg.kill_tick, msg.kill_tick)
        kill = next((m for m in found if "killer" in m.data), None)
        if kill is None:
            raise p.ProtocolError(
                "unknown_marker", f"no kill marker at tick {msg.kill_tick}", msg.ref
            )
        c = await timeline.kill_clip(match_id, kill, msg.seconds)
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

    async def scoreboard(self, msg: p.Scoreboard) -> None:
        assert self.record is not None
        tick = self._shown()
        # A live spectator may show a quiet tick past the store's last one: nothing
        # happened since that one, so the standings are its standings.
        readable = min(tick, await self._playback().limit())
        rows = await self.spectators.engine.scoreboard_at(self.record.match_id, readable)
        self.send(p.scoreboard(msg.ref, tick, rows))

    # -- internals -------------------------------------------------------------------------

    def _playback(self) -> Playback:
        assert self.playback is not None  # set by WATCH, which every control follows
        return self.playback

    def _latest(self) -> MatchRecord:
        """The newest record of the watched match any read of the engine has seen."""
        assert self.record is not None
        return self.spectators.engine.cached_match(self.record.match_id) or self.record

    def _delay_edge(self) -> int:
        return self.spectators.delay_edge(self._latest(), self.privileged)

    async def _clamp(self, tick: int) -> tuple[int, bool]:
        limit = await self._playback().limit()
        return (tick, False) if tick <= limit else (limit, True)

    def _shown(self) -> int:
        """The tick the client shows once it has read what was sent."""
        if self.mode == "live":
            return self.sub.shown_tick()
        return self._playback().position - 1

    def _status(self, clamped: bool) -> None:
        shown = self._shown()
        # What the client shows was visible to it: a live quiet tick past the store's
        # last one (Spectators.edge) is still within its edge.
        edge = max(shown, self.spectators.edge(self._latest(), self.privileged))
        speed = self._playback().speed or 0.0  # never None here: the server always paces
        self.send(p.playback(self.mode, speed, shown, edge, clamped))

    async def stop(self) -> None:
        """Leave live mode or stop the playback task; the mode becomes paused."""
        if self.mode == "live" and self.hub is not None:
            self.hub.detach(self.sub)
            self._playback().shows(self.sub.shown_tick())
        task, self._pump = self._pump, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.playback is not None:
            self.playback.pause()
        self.mode = "paused"

    def _closed_by_hub(self) -> None:
        # The hub took this slow spectator out (its connection is being closed).
        if self.playback is not None:
            self.playback.shows(self.sub.tick)
        self.mode = "paused"

    async def _reset(self, tick: int) -> None:
        """STATE of the nearest valid keyframe at or before ``tick`` (the exact state at
        ``tick`` when there is none), then the FRAMEs up to ``tick``: the client folds at
        most one keyframe interval."""
        reset = await self._playback().reset(tick)
        rules = self.spectators.engine.rules(self._latest())
        self.send(p.state(reset.tick, rules.state_format, rules.encode_state(reset.state)))
        for frame in reset.frames:
            self._send_frame(frame)

    def _send_frame(self, frame: Frame) -> None:
        self.send(p.frame(frame.tick, _blob(frame.events)))

    def _start_pump(self) -> None:
        self.mode = "replay"
        self._playback().resume()
        self._pump = asyncio.get_running_loop().create_task(self._play())

    async def _play(self) -> None:
        """One FRAME per tick, paced by the Playback, from the tick after the shown one;
        waits (never skips) while the client's queue is over the limit. At the limit:
        a live match is followed live, a finished one pauses (an unasked PLAYBACK)."""
        assert self.record is not None
        playback = self._playback()
        while True:
            # Before taking a frame: a cancel (any control) never loses a taken one.
            await self._backpressure()
            try:
                frame = await anext(playback)
            except StopAsyncIteration:
                break
            self._send_frame(frame)
        self._pump = None
        hub = self.spectators.hubs.get(self.record.match_id)
        if hub is not None and not hub.finished:
            await self.live()  # caught up with the live edge: follow it
        else:
            playback.pause()
            self.mode = "paused"
            self._status(False)

    async def _backpressure(self) -> None:
        if not await self._room():
            raise asyncio.CancelledError

    async def _room(self) -> bool:
        """Wait until the client's unread bytes are under the queue limit: True; False
        when it stalled that long (its connection is then dropped)."""
        waited = 0.0
        while self.sub.unsent() > self.spectators.queue_bytes:
            if waited > self.spectators.stall_seconds:
                # Stalled: a close frame behind its unread bytes would never reach it.
                self._on_slow()
                drop(self.conn)
                return False
            await asyncio.sleep(BACKPRESSURE_POLL_S)
            waited += BACKPRESSURE_POLL_S
        return True

    def close_now(self) -> None:
        """The connection is gone: leave the hub and stop the playback and seek tasks."""
        if self.hub is not None:
            self.hub.detach(self.sub)
        if self._seeking is not None:
            self._seeking.cancel()
            self._seeking = None
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None


def _blob(events: list[StoredEvent]) -> bytes | None:
    if not events:
        return None
    return encode_batch([NewEvent(t, tick, data, v) for t, v, tick, data in events])
