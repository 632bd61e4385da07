"""A running match: seats and connections around the match machine.

The match itself (commands and inputs in; events, acks, keyframe and end
decisions out) is :class:`replay.machine.MatchMachine`, the same machine the
offline generator and the tests drive. This module only moves things in and
out of it, and never makes a tick wait for the disk:

* the process's :class:`server.ticker.Ticker` calls :meth:`Match.run_due` when a
  tick is due (on a drift-free clock shared by every match of the same rate),
  which steps the machine and puts the tick's decisions in the outbox;
* after each pass the ticker calls :meth:`Match.flush`, which hands the events of
  every waiting tick to the store in one append (the due matches' appends meet in
  one group commit), and only once that append is durable publishes each tick's
  UPDATE (acks included), answers commands and writes keyframes. Hence:
  acknowledged means durable. One append per match is in flight at a time; what
  ticks meanwhile goes with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from replay import protocol
from replay.codec import encode_batch
from replay.engine import ReplayEngine
from replay.errors import ReplayError, TickOutOfRangeError
from replay.events import SYSTEM_ADMIN, SYSTEM_SESSION, NewEvent
from replay.keyframes import keyframe_interval_ticks, make_keyframe
from replay.machine import MatchMachine, RewindError, Tick
from replay.rules import END, JOIN, LEAVE, START, Command, GameRegistry, Rejection, Rules
from replay.store.base import AppendResult, EventIds, EventStore, MatchRecord
from replay.system import MAX_REASON_CHARS
from server.fanout import Feed
from server.live_hub import LiveHub
from server.metrics import Metrics
from server.ticker import Ticker

LEASE_LOST = "lease_lost"
"""The store's code for a write under an epoch that is no longer the match's."""

__all__ = ["REWIND", "REWIND_HORIZON_S", "JoinRefused", "Match", "Seat"]

log = logging.getLogger(__name__)

MAX_BEHIND_TICKS = 5
"""When the loop is more than this many ticks late (a stalled process), it skips
ahead instead of running the missed ticks back to back; skipped ticks are overruns."""
REAP_INTERVAL_S = 0.5
REWIND = "rewind"
"""The admin command (websocket COMMAND, ``args``: ``to``, ``reason``) the server answers
itself: :meth:`Match.rewind` (docs/protocol.md, "Rewinds")."""
REWIND_HORIZON_S = 300.0
"""How far back (seconds of play) a rewind may go by default (``Settings.rewind_horizon_s``)."""

Outcome = list[NewEvent] | Rejection
"""What the machine decided for a command: its events, or why not."""


class Peer(Protocol):
    """What a match needs from a connection (server/session.py implements it)."""

    def send(self, frame: bytes) -> None: ...

    def close_soon(self, code: int, reason: str) -> None: ...


class JoinRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Seat:
    """One player's place in the match, kept across reconnects for the grace period."""

    player: str
    slot: int | None = None
    """The seat the rules gave the player, set once the join is durable."""
    peer: Peer | None = None
    held_until: float | None = None
    """Monotonic deadline while reserved (no slot yet) or disconnected; None while connected."""
    acked_seq: int = 0
    """Highest seq acknowledged in a published (durable) UPDATE."""
    joined: asyncio.Future[int] | None = None
    leaving: bool = False
    seen: bool = False
    """A connection held the seat before: taking it again is a reconnect (audit)."""


class Match:
    def __init__(
        self,
        record: MatchRecord,
        rules: Rules[Any],
        store: EventStore,
        metrics: Metrics,
        *,
        start_players: int,
        seat_timeout: float,
        grace_period: float,
        send_buffer_bytes: int,
        ticker: Ticker,
        admission: Callable[[], str] = lambda: "",
        on_finished: Callable[[Match], None] | None = None,
        rewind_horizon_s: float = REWIND_HORIZON_S,
        state: Any = None,
        epoch: int | None = None,
    ) -> None:
        """``state``: where the match starts (a fork's: the parent's state of the fork
        tick, its ``forked`` event already stored; a match taken over: its last durable
        state); None: the game's initial state. ``epoch``: this node's lease on the match
        (a cluster, server/cluster.py): every write carries it, and the store refuses
        writes under an older one; None: a single server."""
        self.record = record
        self.epoch = epoch
        self.leased_at = time.monotonic()
        """When this node got the lease (its heartbeat's renewals sent earlier do not
        know of it yet)."""
        self.match_id = record.match_id
        self.rules = rules
        self.store = store
        self.metrics = metrics
        self.tick_rate = record.tick_rate
        self.start_players = start_players
        self.max_players = rules.limits(record.settings).max_players
        self.seat_timeout = seat_timeout
        self.grace_period = grace_period
        self.machine = MatchMachine(
            rules,
            state if state is not None else rules.initial_state(record.settings, record.seed),
            keyframe_every=keyframe_interval_ticks(self.tick_rate),
            auto_start=start_players,
        )
        self.status: str = record.status
        self.end_reason = ""
        self.seats: dict[str, Seat] = {}
        self.feed = Feed(send_buffer_bytes, metrics.slow_consumers.inc)
        self.last_seq = record.version
        """Seq of the last event in a published UPDATE (what live subscribers have)."""
        self.durable_tick = record.last_tick
        """The last tick whose events are durable and published."""
        self.overruns = 0
        self._outbox: deque[Tick] = deque()
        """Ticks run and not yet handed to the store."""
        self._appending: asyncio.Future[AppendResult] | None = None
        """The append in flight (one at a time, so the stream stays in tick order)."""
        self._version = record.version
        """The stream's last seq once every append handed over is durable."""
        self._ids = EventIds()
        self._stopping = False
        """No tick runs any more (the rules ended the match, or it is being stopped)."""
        self._ending: asyncio.Task[None] | None = None
        self._on_finished = on_finished
        self._ticker = ticker
        self._admission = admission
        """Why the process takes no new player now ("" when it does; server/headroom.py)."""
        self._next_reap = 0.0
        self._background: set[asyncio.Task[Any]] = set()
        self._roster: list[str] = list(record.players)
        """Every player who ever joined, in join order (stored with the match)."""
        self.hub: LiveHub | None = None
        """Live spectators (server/live_hub.py), set by the lobby."""
        self.rewind_horizon_s = rewind_horizon_s
        self._engine: ReplayEngine | None = None
        """Reads the state a rewind restores (made on the first rewind)."""
        self.moved = False
        """Another node carries the match on (lost, or handed over)."""
        self.node = ""
        """The cluster node that runs it (set by the lobby; "" on a single server)."""
        self.kicked: set[str] = set()
        """Players an admin removed: refused a seat for the rest of the match."""

    @property
    def state(self) -> Any:
        """The live state (the machine's; changed only by its ``evolve``)."""
        return self.machine.state

    @property
    def tick(self) -> int:
        """The last tick run (its events may not be durable yet)."""
        return self.machine.tick

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._ticker.add(self)
        self.metrics.matches.labels(status="live").inc()

    @property
    def spectator_delay(self) -> float:
        """Seconds spectators lag behind (docs/protocol.md 11.2); the viewer's HTTP API reads it."""
        return self.hub.options.delay if self.hub is not None else 0.0

    @property
    def read_only(self) -> bool:
        return self.status in ("ended", "interrupted")

    async def stop(self, status: str = "interrupted", reason: str = "server shutdown") -> None:
        """Run no further tick, make every event durable, then mark the match."""
        self._stopping = True
        await self._drain()
        if self._ending is not None:  # the rules ended it: that end stands
            await asyncio.shield(self._ending)
        elif not self.read_only:
            self.end_reason = reason
            await self._finish(status, reason)
        # Metadata and keyframe writes handed off by the sender complete before the store closes.
        await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _drain(self, through: float = math.inf) -> None:
        """Until every tick run so far, or up to tick ``through``, is durable and
        published (or the store failed)."""
        while (self._appending is not None or self._outbox) and self.durable_tick < through:
            if self._appending is None:
                self.flush()  # ticks waiting for the next pass go now
            if self._appending is not None:
                await asyncio.wait([self._appending])

    async def _finish(self, status: str, reason: str) -> None:
        self.status = status
        self.end_reason = reason
        try:
            await self.store.update_match(
                self.match_id,
                status=status,
                ended_at=time.time(),
                players=self._roster,
                epoch=self.epoch,
            )
        except ReplayError as exc:
            log.error("match %s: could not mark %s: %s", self.match_id, status, exc)
        frame = protocol.ended(status, reason, self.tick, self.rules.scoreboard(self.state))
        self.feed.publish(frame, self.last_seq)
        if self.hub is not None:
            self.hub.finish(frame, self.tick)
        # A match that ended as planned closes normally (1000; ENDED said why); one cut
        # short by the server is "going away" so clients know to look for it again.
        code = protocol.CLOSE_NORMAL if status == "ended" else protocol.CLOSE_GOING_AWAY
        for sub in list(self.feed.subscribers):
            self._spawn(sub.conn.close(code, f"match {status}: {reason}"[:120]))
        for seat in self.seats.values():
            if seat.joined is not None and not seat.joined.done():
                seat.joined.set_exception(JoinRefused(protocol.E_MATCH_OVER, f"match {status}"))
        # Invariant: every queued command gets exactly one reply, even when it never ran.
        for _, done in self.machine.take_commands():
            if done is not None:
                done(Rejection(protocol.E_MATCH_OVER, f"the match is {status}"))
        self.metrics.matches.labels(status="live").dec()
        if self._on_finished is not None:
            self._on_finished(self)

    # -- leaving this node (a cluster: server/cluster.py) --------------------------------

    def lost(self) -> None:
        """Another node holds the match now: stop at once, write nothing more, and send
        the players and spectators to look for it again (4012: through any node)."""
        if self.moved or self.read_only:  # an ended match is no longer renewed: not lost
            return
        log.warning("match %s: lease lost; another node carries it on", self.match_id)
        self._stopping = True
        self._outbox.clear()
        self._leave_node(protocol.CLOSE_TRY_AGAIN, "match moved: join again")

    async def hand_over(self, release: Callable[[], Awaitable[bool]], url: str) -> None:
        """A node stopping with live peers: run no further tick, make every tick durable,
        pass the lease on (``release``), then send the players to ``url`` (4011)."""
        self._stopping = True
        await self._drain()
        if self._ending is not None:  # the rules ended it meanwhile: that end stands
            await asyncio.shield(self._ending)
            return
        if self.read_only or self.moved:
            return
        if not await release():
            self.lost()
            return
        self._leave_node(protocol.CLOSE_MOVED, url)

    def _leave_node(self, code: int, reason: str) -> None:
        self.moved = True
        for seat in self.seats.values():
            if seat.joined is not None and not seat.joined.done():
                seat.joined.set_exception(JoinRefused(protocol.E_MATCH_MOVING, reason))
        for _, done in self.machine.take_commands():
            if done is not None:
                done(Rejection(protocol.E_MATCH_MOVING, reason))
        for sub in list(self.feed.subscribers):
            self._spawn(sub.conn.close(code, reason[:120]))
        self.metrics.matches.labels(status="live").dec()
        if self._on_finished is not None:
            self._on_finished(self)

    def restore_seats(self, seats: dict[str, int], acked: dict[int, int]) -> None:
        """A match taken over: its seated players' seats, held for the grace period for
        their reconnects (each resumes like after a dropped connection)."""
        held_until = time.monotonic() + self.grace_period
        for player, slot in seats.items():
            self.seats[player] = Seat(
                player, slot=slot, held_until=held_until, acked_seq=acked.get(slot, 0)
            )
            if player not in self._roster:
                self._roster.append(player)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- seats --------------------------------------------------------------------------

    def reserve(self, player: str) -> Seat:
        """Hold a seat for ``player`` for ``seat_timeout`` seconds (its JOIN claims it)."""
        if self.read_only or self._stopping:
            raise JoinRefused(protocol.E_MATCH_OVER, f"match {self.match_id} is {self.status}")
        if player in self.kicked:
            raise JoinRefused(protocol.E_FORBIDDEN, f"{player} was kicked from {self.match_id}")
        seat = self.seats.get(player)
        if seat is None:
            if len(self.seats) >= self.max_players:
                raise JoinRefused(protocol.E_MATCH_FULL, f"all {self.max_players} seats are taken")
            full = self._admission()
            if full:  # a seat already held (a resume) is always let in
                raise JoinRefused(protocol.E_SERVER_FULL, f"this server is full: {full}")
            seat = self.seats[player] = Seat(player)
        if seat.peer is None:
            seat.held_until = time.monotonic() + self.seat_timeout
        return seat

    async def join(self, player: str, peer: Peer) -> tuple[Seat, bool]:
        """Seat ``player`` on ``peer``: a new seat (a ``join`` command, durable before
        this returns), or the player's existing seat (resume). Returns (seat, resumed)."""
        seat = self.reserve(player)
        old = seat.peer
        if old is not None and old is not peer:
            old.close_soon(protocol.CLOSE_REPLACED, "the same player connected again")
        seat.peer = peer
        seat.held_until = None
        if seat.slot is not None:
            if old is None:  # a new connection: a fork's held seat, or a reconnect
                self.note_session(player, "reconnect" if seat.seen else "join")
            seat.seen = True
            return seat, True
        seat.seen = True
        if seat.joined is None:
            seat.joined = asyncio.get_running_loop().create_future()
            self.machine.queue(Command(JOIN, player, {}), self._on_join(seat))
        try:
            await asyncio.shield(seat.joined)
        except JoinRefused:
            if self.seats.get(player) is seat:
                del self.seats[player]
            raise
        return seat, False

    def _on_join(self, seat: Seat) -> Callable[[Outcome], None]:
        def done(result: Outcome) -> None:
            assert seat.joined is not None
            if isinstance(result, Rejection):
                if not seat.joined.done():
                    seat.joined.set_exception(JoinRefused(result.code, result.reason))
                return
            seat.slot = self.rules.seat_of(self.state, seat.player)
            if seat.player not in self._roster:
                self._roster.append(seat.player)
                self._spawn(
                    self.store.update_match(
                        self.match_id, players=list(self._roster), epoch=self.epoch
                    )
                )
            if not seat.joined.done():
                seat.joined.set_result(seat.slot)

        return done

    def detach(self, seat: Seat, peer: Peer) -> None:
        """The connection of ``seat`` went away: keep the seat for the grace period."""
        if seat.peer is peer:
            seat.peer = None
            seat.held_until = time.monotonic() + self.grace_period
            if seat.slot is not None and not seat.leaving:
                self.note_session(seat.player, "disconnect")

    def leave(self, seat: Seat, why: str = "leave") -> None:
        """Give the seat up at the next tick; ``why`` (``leave``, ``timeout``: the grace
        period ran out, ``kicked``) goes into the audit trail's ``session`` event."""
        if seat.leaving:
            return
        seat.leaving = True
        if seat.slot is None:
            self.seats.pop(seat.player, None)
            return
        self.note_session(seat.player, why)

        def done(result: Outcome) -> None:
            if self.seats.get(seat.player) is seat:
                del self.seats[seat.player]
                self.machine.forget_player(seat.player)  # a later seat starts its seqs afresh

        self.machine.queue(Command(LEAVE, seat.player, {}), done)

    def _reap(self) -> None:
        now = time.monotonic()
        for seat in list(self.seats.values()):
            if seat.held_until is None or seat.held_until > now:
                continue
            if seat.slot is not None:  # a seat (a fork's held one too) left for too long
                self.leave(seat, "timeout")  # the grace period ran out
            elif seat.joined is None:
                del self.seats[seat.player]  # a reservation nobody claimed

    # -- inputs and commands ----------------------------------------------------------------

    def submit_inputs(
        self, seat: Seat, inputs: list[tuple[int, list[Any]]]
    ) -> list[tuple[int, Rejection]]:
        """Validate and queue inputs (sans I/O). Returns (seq, rejection) for each
        refused input; duplicates (seq already received) are skipped silently."""
        rejected = self.machine.submit_inputs(seat.player, inputs)
        if rejected:  # (the common case has none: no Counter on the hot path)
            for code, n in Counter(r.code for _, r in rejected).items():
                self.metrics.reject(code, n)
        return rejected

    def command(
        self, player: str, kind: str, args: dict[str, Any], reply: Callable[[int | Rejection], None]
    ) -> None:
        """Queue a command for the next tick; ``reply`` gets the tick it took effect at
        (after its events are durable) or the rules' Rejection.

        ``end`` is decided by the rules like any command, so the end of the match is
        an event in its log and the match ends as if by its own rules. A game whose
        rules refuse ``end`` as an unknown command is stopped instead: marked ended
        with nothing in the log."""

        def done(result: Outcome) -> None:
            if isinstance(result, Rejection):
                if kind == END and result.code == "unknown_command":
                    reason = str(args.get("reason", "ended by admin"))[:64]
                    self._spawn(self.stop("ended", reason))
                    reply(self.tick)
                    return
                reply(result)
            else:
                reply(result[0].tick if result else self.tick)

        if kind == REWIND:
            self._spawn(self._rewind_command(player, args, reply))
            return
        if kind in (START, END):  # only admins send them: the audit trail records who
            self.note_admin(player, kind, str(args.get("reason", "")))
        self.machine.queue(Command(kind, player, args), done)

    def note_admin(self, actor: str, action: str, reason: str, detail: Any = None) -> None:
        """Record an admin's action on this match (an ``admin`` event with the next tick,
        before the commands that tick decides)."""
        at_ms = int(time.time() * 1000)
        data = (actor, action, reason[:MAX_REASON_CHARS], at_ms, detail)
        self.machine.note(NewEvent(SYSTEM_ADMIN, 0, data))

    def note_session(self, player: str, what: str) -> None:
        """Record a player's connection change (a ``session`` event with the next tick)."""
        self.machine.note(NewEvent(SYSTEM_SESSION, 0, (player, what, int(time.time() * 1000))))

    def kick(self, player: str, *, actor: str, reason: str) -> bool:
        """An admin removes ``player``: its seat is given up at the next tick, its
        connection closed (4003) and any later seat refused. False: not in the match."""
        seat = self.seats.get(player)
        if seat is None or seat.leaving:
            return False
        self.kicked.add(player)
        self.note_admin(actor, "kick", reason, player)
        if seat.peer is not None:
            seat.peer.close_soon(protocol.CLOSE_FORBIDDEN, f"kicked: {reason}"[:120])
            seat.peer = None
        self.leave(seat, "kicked")
        return True

    # -- rewinds (docs/replay.md "Rewinds and forks") ----------------------------------------

    async def rewind(self, to_tick: int, *, actor: str, reason: str) -> int:
        """Continue the match from the exact state of ``to_tick`` at the next tick B
        (replay/machine.py); returns B once its ``rewound`` event is durable and published.
        Raises RewindError: ``rewind_ahead`` (a tick not run yet), ``rewind_beyond_horizon``,
        ``match_over`` and the machine's codes."""
        if self.read_only or self._stopping:
            raise RewindError(protocol.E_MATCH_OVER, f"match {self.match_id} is {self.status}")
        horizon = round(self.rewind_horizon_s * self.tick_rate)
        if to_tick < self.tick - horizon:
            raise RewindError(
                "rewind_beyond_horizon",
                f"tick {to_tick} is more than {self.rewind_horizon_s:g} s before tick {self.tick}",
            )
        # A tick already run may still be on its way to the disk (the store lags the
        # simulation by a few ticks under load): the admin named a tick the match showed.
        await self._drain(through=to_tick)
        if self._engine is None:
            self._engine = ReplayEngine(self.store, GameRegistry([self.rules]))
        try:
            state = await self._engine.state_at(self.match_id, to_tick)
        except TickOutOfRangeError as exc:
            raise RewindError("rewind_ahead", str(exc)) from None
        landed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def done(result: Outcome) -> None:
            assert not isinstance(result, Rejection)
            self._reseat()
            if not landed.done():
                landed.set_result(result[0].tick)

        if self._stopping:
            raise RewindError(protocol.E_MATCH_OVER, f"match {self.match_id} is {self.status}")
        self.machine.rewind(
            state,
            actor=actor,
            reason=reason[:MAX_REASON_CHARS],
            at_ms=int(time.time() * 1000),
            token=done,
        )
        return await landed

    def _reseat(self) -> None:
        """After a rewind: every player keeps a seat. One not seated in the restored state
        joins again; one seated there who has gone since leaves (both at the next tick)."""
        seat_of, state = self.rules.seat_of, self.state
        for seat in list(self.seats.values()):
            if seat.slot is None or seat.leaving:
                continue
            seat.slot = seat_of(state, seat.player)
            if seat.slot is None:
                self.machine.queue(Command(JOIN, seat.player, {}), self._on_join(seat))
        for player in self._roster:
            if player not in self.seats and seat_of(state, player) is not None:
                self.machine.queue(Command(LEAVE, player, {}))

    async def _rewind_command(
        self, player: str, args: dict[str, Any], reply: Callable[[int | Rejection], None]
    ) -> None:
        to_tick = args.get("to")
        if not isinstance(to_tick, int) or isinstance(to_tick, bool):
            reply(Rejection("invalid_field", "rewind needs an integer 'to' tick"))
            return
        try:
            reply(await self.rewind(to_tick, actor=player, reason=str(args.get("reason", ""))))
        except RewindError as exc:
            reply(Rejection(exc.code, str(exc)))

    # -- ticking (driven by server/ticker.py) ----------------------------------------------

    def run_due(self, due_at: float, now: float) -> float | None:
        """Run the tick due at ``due_at`` (loop time ``now``); the next due time, or None
        once the match runs no more ticks. Synchronous: never waits for the disk."""
        if self._stopping:
            return None
        t0 = time.perf_counter()
        try:
            out = self.machine.step()
        except Exception:  # a rules bug must not take the process down with it
            log.exception("match %s: tick %d failed; match interrupted", self.match_id, self.tick)
            self._stopping = True
            self._spawn(self.stop("interrupted", "internal error"))
            return None
        if out.accepted:
            self.metrics.inputs.inc(out.accepted)  # counted per tick, not per frame
        if not out.quiet:
            self._outbox.append(out)
        self.metrics.ticks.inc()
        self.metrics.tick_seconds.observe(time.perf_counter() - t0)
        if out.over:
            self._stopping = True
            return None
        if now >= self._next_reap:
            self._next_reap = now + REAP_INTERVAL_S
            self._reap()
        period = 1.0 / self.tick_rate
        next_at = due_at + period
        if now > next_at:  # this tick started later than the next one was due
            behind = int((now - due_at) / period)
            self.overruns += 1
            self.metrics.tick_overruns.inc()
            if behind > MAX_BEHIND_TICKS:  # skip ahead: keep the rate, drop the backlog
                self.overruns += behind
                self.metrics.tick_overruns.inc(behind)
                next_at = due_at + (behind + 1) * period
        return next_at

    def flush(self) -> None:
        """Hand the events of every waiting tick to the store in one append, unless one
        is in flight (its completion flushes again). Ticks without events are published
        at once, behind any append in flight. Each tick's events are encoded once: the
        same bytes go to the players and, for a one-tick append, to the store."""
        if self._appending is not None or not self._outbox:
            return
        ticks = list(self._outbox)
        self._outbox.clear()
        blobs = [encode_batch(t.events) if t.events else None for t in ticks]
        events = [e for t in ticks for e in t.events]
        if not events:
            self._published(ticks, blobs)
            return
        with_events = [b for b in blobs if b is not None]
        started = time.perf_counter()
        try:
            self._appending = self.store.append_soon(
                self.match_id,
                events,
                self._version,
                first_id=self._ids.take(len(events)),
                encoded=with_events[0] if len(with_events) == 1 else None,
                epoch=self.epoch,
            )
        except ReplayError as exc:  # refused before queueing (a closed store, a bad batch)
            self._appending = asyncio.get_running_loop().create_future()
            self._appending.set_exception(exc)
        self._appending.add_done_callback(
            lambda done: self._appended(done, ticks, blobs, len(events), started)
        )

    def _appended(
        self,
        done: asyncio.Future[AppendResult],
        ticks: list[Tick],
        blobs: list[bytes | None],
        count: int,
        started: float,
    ) -> None:
        self._appending = None
        exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
        if isinstance(exc, ReplayError) and exc.code == LEASE_LOST:
            # Another node took the match over (this one was paused past its lease):
            # it carries on from the last durable tick; this copy goes.
            self.lost()
            return
        if exc is not None:
            # The live state already holds these events: the match cannot go on
            # truthfully. Nothing unacknowledged is claimed; the match stops.
            log.error("match %s: append failed (%s); match interrupted", self.match_id, exc)
            self._stopping = True
            self._outbox.clear()
            if self._ending is None:
                self._ending = asyncio.ensure_future(
                    self._finish("interrupted", f"store error: {exc}"[:100])
                )
            return
        self._version = done.result().last_seq
        self.metrics.append_latency.observe(time.perf_counter() - started)
        self.metrics.events.inc(count)
        self._published(ticks, blobs)
        self.flush()

    def _published(self, ticks: list[Tick], blobs: list[bytes | None]) -> None:
        """Everything in ``ticks`` is durable: publish each tick in order."""
        seq = self._version - sum(len(t.events) for t in ticks)
        for t, blob in zip(ticks, blobs, strict=True):
            self._publish(t, blob, seq := seq + len(t.events))
        if ticks[-1].over and self._ending is None:
            result = self.rules.result(self.state)
            reason = result.reason if result is not None else "over"
            self._ending = asyncio.ensure_future(self._finish("ended", reason))

    def _publish(self, t: Tick, blob: bytes | None, last_seq: int) -> None:
        """Everything up to ``last_seq`` is durable: tell the players."""
        self.last_seq = last_seq
        self.durable_tick = t.tick
        self.feed.publish(protocol.update(t.tick, last_seq, blob, t.acks), last_seq)
        if t.scoreboard is not None:
            self.feed.publish(protocol.scoreboard(None, t.tick, t.scoreboard), last_seq)
        if self.hub is not None:
            self.hub.publish(t.tick, blob, t.keyframe, t.scoreboard)
        acks = t.acks
        if acks:
            seats_by_slot = {s.slot: s for s in self.seats.values() if s.slot is not None}
            for i in range(0, len(acks), 2):
                seat = seats_by_slot.get(acks[i])
                if seat is not None:
                    seat.acked_seq = acks[i + 1]
        for done, result in t.replies:
            if done is not None:
                done(result)
        if t.started and self.status == "created":
            self.status = "running"
            self._spawn(self.store.update_match(self.match_id, status="running", epoch=self.epoch))
        if t.keyframe is not None:
            self._spawn(self._put_keyframe(t.keyframe))

    async def _put_keyframe(self, state: Any) -> None:
        with contextlib.suppress(ReplayError):
            await self.store.put_keyframe(make_keyframe(self.rules, self.match_id, state))

    # -- views --------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The match as JSON (``replay.protocol.match_info``) as the lobby sees it live:
        its seats, connections and tick overruns too."""
        return (
            protocol.match_info(
                self.record,
                status=self.status,
                tick=self.tick,
                players=[s.player for s in self.seats.values() if s.slot is not None],
            )
            | {
                "connected": sum(1 for s in self.seats.values() if s.peer is not None),
                "start_players": self.start_players,
                "max_players": self.max_players,
                "overruns": self.overruns,
                "last_seq": self.last_seq,
            }
            | ({"node": self.node} if self.node else {})
        )
