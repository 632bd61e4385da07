"""A running match: the rules, the live state, seats, the tick loop and the sender.

Two tasks per match, so the tick loop never waits for the disk:

* the **tick loop** runs ``decide -> evolve`` for queued commands, then
  ``tick -> evolve`` with each player's latest input, on a drift-free clock
  (tick ``n`` is due at ``start + n / rate``, whatever the previous ones cost),
  and hands the tick's events to the outbox;
* the **sender** drains the outbox in tick order: it appends the events of all
  waiting ticks in one call (the store group-commits across matches), and only
  after that append is durable publishes each tick's UPDATE (acks included),
  confirms commands and writes keyframes. Hence: acknowledged means durable.

Inputs are samples of a player's controls: the newest valid input received
before a tick is the one the tick uses, and the tick's UPDATE acknowledges
(cumulatively) every input up to it. Each client seq is applied at most once:
a seq at or below the highest one received from that player is ignored, so a
client may resend unacknowledged inputs after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from replay import protocol
from replay.codec import encode_batch
from replay.errors import ReplayError
from replay.events import NewEvent
from replay.keyframes import keyframe_interval_ticks, make_keyframe
from replay.leaderboards.scoreboard import ScoreboardFeed
from replay.rules import Command, Rejection, Rules
from replay.store.base import EventIds, EventStore, MatchRecord
from server.fanout import Feed
from server.metrics import Metrics
from server.spectating import LiveHub

__all__ = ["JoinRefused", "Match", "Seat"]

log = logging.getLogger(__name__)

MAX_BEHIND_TICKS = 5
"""When the loop is more than this many ticks late (a stalled process), it skips
ahead instead of running the missed ticks back to back; skipped ticks are overruns."""
REAP_INTERVAL_S = 0.5


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
    """Set once the ``joined`` event is durable."""
    peer: Peer | None = None
    held_until: float | None = None
    """Monotonic deadline while reserved (no slot yet) or disconnected; None while connected."""
    highest_seq: int = 0
    """Highest client seq received: lower or equal seqs are duplicates and ignored.
    Invariant: every seq up to it is applied, superseded, refused, or ``pending``."""
    pending: tuple[int, Any] | None = None
    """(seq, validated input) for the next tick."""
    acked_seq: int = 0
    """Highest seq acknowledged in a published (durable) UPDATE."""
    joined: asyncio.Future[int] | None = None
    leaving: bool = False


@dataclass(slots=True)
class _TickRecord:
    tick: int
    events: list[NewEvent]
    acks: list[int]
    done: list[tuple[Callable[[int], None], Sequence[NewEvent]]] = field(default_factory=list)
    keyframe: Any = None
    over: bool = False
    scoreboard: list[dict[str, Any]] | None = None
    """The standings, when this tick changed them (pushed to players and spectators)."""


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
        on_finished: Callable[[Match], None] | None = None,
    ) -> None:
        self.record = record
        self.match_id = record.match_id
        self.rules = rules
        self.store = store
        self.metrics = metrics
        self.tick_rate = record.tick_rate
        self.start_players = start_players
        self.max_players = int(record.settings.get("max_players", 1 << 16))
        self.seat_timeout = seat_timeout
        self.grace_period = grace_period
        self.state = rules.initial_state(record.settings, record.seed)
        self.tick = rules.state_tick(self.state)
        self.status: str = record.status
        self.end_reason = ""
        self.seats: dict[str, Seat] = {}
        self.feed = Feed(send_buffer_bytes, metrics.slow_consumers.inc)
        self.last_seq = record.version
        """Seq of the last event in a published UPDATE (what live subscribers have)."""
        self.overruns = 0
        self._started = False
        self._commands: list[tuple[Command, Callable[[list[NewEvent] | Rejection], None]]] = []
        self._with_input: dict[str, Seat] = {}
        self._accepted = 0
        self._outbox: deque[_TickRecord] = deque()
        self._wake = asyncio.Event()
        self._ids = EventIds()
        self._keyframe_every = keyframe_interval_ticks(self.tick_rate)
        self._stopping = False
        self._on_finished = on_finished
        self._ticker: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._roster: list[str] = list(record.players)
        """Every player who ever joined, in join order (stored with the match)."""
        self._scoreboard = ScoreboardFeed(rules)
        self.hub: LiveHub | None = None
        """Live spectators (server/spectating.py), set by the lobby."""

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"tick:{self.match_id}")
        self._sender = asyncio.create_task(self._send_loop(), name=f"send:{self.match_id}")
        self.metrics.matches.labels(status="live").inc()

    @property
    def spectator_delay(self) -> float:
        """Seconds spectators lag behind (docs/protocol.md 11.2); the viewer's HTTP API reads it."""
        return self.hub.options.delay if self.hub is not None else 0.0

    @property
    def read_only(self) -> bool:
        return self.status in ("ended", "interrupted")

    async def stop(self, status: str = "interrupted", reason: str = "server shutdown") -> None:
        """Finish the current tick, make every event durable, then mark the match."""
        if self._stopping:
            if self._sender is not None:
                await asyncio.shield(self._sender)
            return
        self._stopping = True
        self.end_reason = reason
        if self._ticker is not None:
            await self._ticker
        self._wake.set()
        if self._sender is not None:
            await self._sender
        if not self.read_only:
            await self._finish(status, reason)
        # Metadata and keyframe writes handed off by the sender complete before the store closes.
        await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _finish(self, status: str, reason: str) -> None:
        self.status = status
        self.end_reason = reason
        try:
            await self.store.update_match(
                self.match_id, status=status, ended_at=time.time(), players=self._roster
            )
        except ReplayError as exc:
            log.error("match %s: could not mark %s: %s", self.match_id, status, exc)
        frame = protocol.ended(status, reason, self.tick, self.rules.scoreboard(self.state))
        self.feed.publish(frame, self.last_seq)
        if self.hub is not None:
            self.hub.finish(frame, self.tick)
        code = protocol.CLOSE_MATCH_OVER if status == "ended" else protocol.CLOSE_GOING_AWAY
        for sub in list(self.feed.subscribers):
            self._spawn(sub.conn.close(code, f"match {status}: {reason}"))
        for seat in self.seats.values():
            if seat.joined is not None and not seat.joined.done():
                seat.joined.set_exception(JoinRefused(protocol.E_MATCH_OVER, f"match {status}"))
        # Invariant: every queued command gets exactly one reply, even when it never ran.
        commands, self._commands = self._commands, []
        for _, done in commands:
            done(Rejection(protocol.E_MATCH_OVER, f"the match is {status}"))
        self.metrics.matches.labels(status="live").dec()
        if self._on_finished is not None:
            self._on_finished(self)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- seats --------------------------------------------------------------------------

    def reserve(self, player: str) -> Seat:
        """Hold a seat for ``player`` for ``seat_timeout`` seconds (its JOIN claims it)."""
        if self.read_only or self._stopping:
            raise JoinRefused(protocol.E_MATCH_OVER, f"match {self.match_id} is {self.status}")
        seat = self.seats.get(player)
        if seat is None:
            if len(self.seats) >= self.max_players:
                raise JoinRefused(protocol.E_MATCH_FULL, f"all {self.max_players} seats are taken")
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
            return seat, True
        if seat.joined is None:
            seat.joined = asyncio.get_running_loop().create_future()
            self._commands.append((Command("join", player, {"name": player}), self._on_join(seat)))
        try:
            await asyncio.shield(seat.joined)
        except JoinRefused:
            if self.seats.get(player) is seat:
                del self.seats[player]
            raise
        return seat, False

    def _on_join(self, seat: Seat) -> Callable[[list[NewEvent] | Rejection], None]:
        def done(result: list[NewEvent] | Rejection) -> None:
            assert seat.joined is not None
            if isinstance(result, Rejection):
                if not seat.joined.done():
                    seat.joined.set_exception(JoinRefused(result.code, result.reason))
                return
            # The joined event carries the slot first (arena: (slot, player, name)).
            seat.slot = int(result[0].data[0])
            if seat.player not in self._roster:
                self._roster.append(seat.player)
                self._spawn(self.store.update_match(self.match_id, players=list(self._roster)))
            if not seat.joined.done():
                seat.joined.set_result(seat.slot)
            self._maybe_autostart()

        return done

    def detach(self, seat: Seat, peer: Peer) -> None:
        """The connection of ``seat`` went away: keep the seat for the grace period."""
        if seat.peer is peer:
            seat.peer = None
            seat.held_until = time.monotonic() + self.grace_period

    def leave(self, seat: Seat) -> None:
        if seat.leaving:
            return
        seat.leaving = True
        if seat.slot is None:
            self.seats.pop(seat.player, None)
            return

        def done(result: list[NewEvent] | Rejection) -> None:
            if self.seats.get(seat.player) is seat:
                del self.seats[seat.player]

        self._commands.append((Command("leave", seat.player, {}), done))

    def _reap(self) -> None:
        now = time.monotonic()
        for seat in list(self.seats.values()):
            if seat.held_until is not None and seat.held_until <= now and seat.joined is None:
                del self.seats[seat.player]  # a reservation nobody claimed
            elif seat.held_until is not None and seat.held_until <= now and seat.slot is not None:
                self.leave(seat)  # the grace period ran out

    # -- inputs and commands ----------------------------------------------------------------

    def submit_inputs(
        self, seat: Seat, inputs: list[tuple[int, list[Any]]]
    ) -> list[tuple[int, Rejection]]:
        """Validate and queue inputs (sans I/O). Returns (seq, rejection) for each
        refused input; duplicates (seq already received) are skipped silently."""
        rejected: list[tuple[int, Rejection]] = []
        accepted = 0
        validate, state, player = self.rules.validate_input, self.state, seat.player
        highest = seat.highest_seq
        for seq, raw in inputs:
            if seq <= highest:
                continue
            highest = seq
            value = validate(state, player, raw)
            if isinstance(value, Rejection):
                rejected.append((seq, value))
            else:
                seat.pending = (seq, value)
                accepted += 1
        if highest > seat.highest_seq:
            # Refused inputs are done too: the next tick's ack covers them (cumulatively).
            seat.highest_seq = highest
            self._with_input[player] = seat
        self._accepted += accepted
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
        an event in its log (arena: ``match_ended``) and the match ends as if by its
        own rules. A game whose rules have no ``end`` command is stopped instead:
        marked ended with nothing in the log."""

        def done(result: list[NewEvent] | Rejection) -> None:
            if isinstance(result, Rejection):
                if kind == "end" and result.code == "unknown_command":
                    reason = str(args.get("reason", "ended by admin"))[:64]
                    self._spawn(self.stop("ended", reason))
                    reply(self.tick)
                    return
                reply(result)
            else:
                reply(result[0].tick if result else self.tick)

        self._commands.append((Command(kind, player, args), done))

    def _maybe_autostart(self) -> None:
        joined = sum(1 for s in self.seats.values() if s.slot is not None)
        if not self._started and joined >= self.start_players:
            self._started = True
            self._commands.append((Command("start", "", {}), lambda result: None))

    # -- the tick loop --------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.tick_rate
        next_at = loop.time()
        next_reap = 0.0
        while not self._stopping:
            next_at += period
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                if self._stopping:
                    break
            t0 = time.perf_counter()
            try:
                over = self._run_tick()
            except Exception:  # a rules bug must not take the process down with it
                log.exception(
                    "match %s: tick %d failed; match interrupted", self.match_id, self.tick
                )
                self._stopping = True
                self._wake.set()
                self._spawn(self.stop("interrupted", "internal error"))
                return
            elapsed = time.perf_counter() - t0
            self.metrics.ticks.inc()
            self.metrics.tick_seconds.observe(elapsed)
            now = loop.time()
            if now > next_at + period:
                behind = int((now - next_at) / period)
                self.overruns += 1
                self.metrics.tick_overruns.inc()
                if behind > MAX_BEHIND_TICKS:
                    self.overruns += behind
                    self.metrics.tick_overruns.inc(behind)
                    next_at = now  # skip ahead: keep the rate, drop the backlog
            if now >= next_reap:
                next_reap = now + REAP_INTERVAL_S
                self._reap()
            if over:
                self._stopping = True
                break
        self._wake.set()

    def _run_tick(self) -> bool:
        """One tick, synchronously: never awaits, so it never waits for the disk."""
        rules, state = self.rules, self.state
        t = self.tick + 1
        events: list[NewEvent] = []
        record = _TickRecord(t, events, [])
        commands, self._commands = self._commands, []
        for cmd, done in commands:
            result = rules.decide(state, t, cmd)
            if isinstance(result, Rejection):
                done(result)
                continue
            rules.evolve(state, result, t)
            events.extend(result)
            record.done.append((done, result))
        inputs: dict[str, Any] = {}
        acks = record.acks
        for player, seat in self._with_input.items():
            if seat.slot is None:
                continue
            if seat.pending is not None:
                inputs[player] = seat.pending[1]
                seat.pending = None
            # Every input received so far is now applied, superseded or refused.
            acks += (seat.slot, seat.highest_seq)
        self._with_input.clear()
        if self._accepted:
            self.metrics.inputs.inc(self._accepted)  # counted per tick, not per frame
            self._accepted = 0
        ticked = rules.tick(state, t, inputs)
        rules.evolve(state, ticked, t)
        events.extend(ticked)
        self.tick = t
        record.over = rules.is_over(state)
        # Computed here, where the state is exactly this tick's (the sender runs behind).
        record.scoreboard = self._scoreboard.update(state, events)
        if t % self._keyframe_every == 0 or record.over:
            record.keyframe = rules.copy_state(state)
        if (
            events
            or acks
            or record.done
            or record.keyframe is not None
            or record.over
            or record.scoreboard is not None
        ):
            self._outbox.append(record)
            self._wake.set()
        return record.over

    # -- the sender ---------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        version = self.record.version
        while True:
            if not self._outbox:
                # Checked before waiting: the ticker's last wake and stop()'s may have come
                # as one, consumed by the pass that sent the last records.
                if self._stopping and (self._ticker is None or self._ticker.done()):
                    break
                await self._wake.wait()
                self._wake.clear()
                continue
            records = list(self._outbox)
            self._outbox.clear()
            events = [e for r in records for e in r.events]
            if events:
                t0 = time.perf_counter()
                try:
                    result = await self.store.append(
                        self.match_id, events, version, first_id=self._ids.take(len(events))
                    )
                except Exception as exc:  # any store failure, typed or not
                    # The live state already holds these events: the match cannot go on
                    # truthfully. Nothing unacknowledged is claimed; the match stops.
                    log.error("match %s: append failed (%s); match interrupted", self.match_id, exc)
                    self._stopping = True
                    self._spawn(self._finish("interrupted", f"store error: {exc}"[:100]))
                    return
                version = result.last_seq
                self.metrics.append_latency.observe(time.perf_counter() - t0)
                self.metrics.events.inc(len(events))
            seq = version - len(events)
            for r in records:
                self._publish(r, seq := seq + len(r.events))
            if any(r.over for r in records):
                last = records[-1]
                await self._finish("ended", self._end_reason_of(last))
                return
        # stopped without ending: the caller marks the match

    def _publish(self, r: _TickRecord, last_seq: int) -> None:
        """Everything up to ``last_seq`` is durable: tell the players."""
        self.last_seq = last_seq
        blob = encode_batch(r.events) if r.events else None
        self.feed.publish(protocol.update(r.tick, last_seq, blob, r.acks), last_seq)
        if r.scoreboard is not None:
            self.feed.publish(protocol.scoreboard(None, r.tick, r.scoreboard), last_seq)
        if self.hub is not None:
            self.hub.publish(r.tick, blob, r.keyframe, r.scoreboard)
        acks = r.acks
        seats_by_slot = (
            {s.slot: s for s in self.seats.values() if s.slot is not None} if acks else {}
        )
        for i in range(0, len(acks), 2):
            seat = seats_by_slot.get(acks[i])
            if seat is not None:
                seat.acked_seq = acks[i + 1]
        for done, result in r.done:
            done(result)
            if self.status == "created" and any(
                e.type == _started_type(self.rules) for e in result
            ):
                self.status = "running"
                self._spawn(self.store.update_match(self.match_id, status="running"))
        if r.keyframe is not None:
            self._spawn(self._put_keyframe(r.keyframe))

    async def _put_keyframe(self, state: Any) -> None:
        with contextlib.suppress(ReplayError):
            await self.store.put_keyframe(make_keyframe(self.rules, self.match_id, state))

    def _end_reason_of(self, r: _TickRecord) -> str:
        for e in reversed(r.events):
            if e.type == _ended_type(self.rules) and len(e.data) >= 2:
                return str(e.data[1])
        return "over"

    # -- views --------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "match_id": self.match_id,
            "game": self.record.game,
            "status": self.status,
            "tick": self.tick,
            "tick_rate": self.tick_rate,
            "players": [s.player for s in self.seats.values() if s.slot is not None],
            "connected": sum(1 for s in self.seats.values() if s.peer is not None),
            "start_players": self.start_players,
            "max_players": self.max_players,
            "overruns": self.overruns,
            "last_seq": self.last_seq,
        }


def _event_code(rules: Rules[Any], name: str) -> int:
    try:
        return rules.catalog.by_name(name).code
    except LookupError:
        return -1


def _started_type(rules: Rules[Any]) -> int:
    return _event_code(rules, "match_started")


def _ended_type(rules: Rules[Any]) -> int:
    return _event_code(rules, "match_ended")
