"""One websocket connection: WELCOME, JOIN, then inputs and commands until it closes.

The session is the asyncio shell around :mod:`replay.protocol` (parsing) and
:class:`server.match.Match` (the game). Bad frames get an ERROR and the session
goes on; it closes only for what it cannot survive (see the close codes in
docs/protocol.md). Nothing a client sends can raise out of :meth:`Session.run`
into the match: the match sees only validated messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from replay import protocol as p
from replay.codec import encode_batch
from replay.errors import ReplayError, UnknownMatchError
from replay.events import NewEvent
from replay.leaderboards.service import Leaderboards
from replay.rules import END, START, Rejection
from replay.store.base import EventStore
from server import leaderboard_api
from server.auth import ANONYMOUS, Identity
from server.config import Settings
from server.connection import GameConnection
from server.fanout import Subscriber
from server.lobby import Lobby
from server.match import REWIND, JoinRefused, Match, Seat
from server.metrics import Metrics
from server.spectator_session import SpectatorSession
from server.spectators import Spectators

__all__ = ["Session", "SessionDeps"]

log = logging.getLogger(__name__)

MAX_ERRORS_IN_A_ROW = 20
"""Bad frames in a row (no good frame between) before the connection is closed with 4002."""
CATCHUP_FRAME_BYTES = 64 * 1024
"""Stored batches are regrouped into CATCHUP frames of about this size."""
REFUSAL_REPORT_INTERVAL_S = 1.0
"""A repeated refusal (same rules code) is reported at most once a second per connection."""
CATCHUP_FRAMES_PER_TURN = 4
"""A catch-up yields to the event loop after this many frames (~256 KiB): one client's
long read never holds up the ticks and the other connections."""


class Budget:
    """A token bucket: ``rate`` messages (or inputs) a second, ``burst`` at once.

    Over budget, a message is dropped with ERROR ``rate_limited``; once a client runs
    a whole burst beyond it (it ignores those ERRORs) the connection is closed with 4008.
    Every client message type has one (docs/protocol.md section 7, "Budgets")."""

    __slots__ = ("burst", "kind", "rate", "refill_at", "tokens")

    def __init__(self, kind: str, rate: float, burst: int) -> None:
        self.kind, self.rate, self.burst = kind, rate, burst
        self.tokens = float(burst)
        self.refill_at = time.monotonic()

    def spend(self, n: int, now: float) -> float:
        """Take ``n``; the tokens left (negative: over budget by that much)."""
        tokens = self.tokens + (now - self.refill_at) * self.rate
        self.tokens = (self.burst if tokens > self.burst else tokens) - n
        self.refill_at = now
        return self.tokens


@dataclass(frozen=True)
class SessionDeps:
    """What the sessions of a server use, shared by all of them."""

    settings: Settings
    """Limits a session enforces and announces in WELCOME (input rate, join timeout, ...)."""
    store: EventStore
    """Catch-up reads, and whether a match that is not live exists."""
    lobby: Lobby
    spectators: Spectators
    leaderboards: Leaderboards
    metrics: Metrics


class Session:
    def __init__(self, deps: SessionDeps, conn: ServerConnection, identity: Identity) -> None:
        self.deps = deps
        self.conn = conn
        self.identity = identity
        self.match: Match | None = None
        self.seat: Seat | None = None
        self.sub: Subscriber | None = None
        self.spectator: SpectatorSession | None = None
        """Set by the first spectator message (LIST/WATCH): docs/protocol.md section 11."""
        self._errors = 0
        self._closing = False
        self._refused = 0
        self._last_refusal = ""
        self._next_refusal_report = 0.0
        s = deps.settings
        self._input_budget = Budget("inputs", s.input_rate, s.input_burst)
        self._command_budget = Budget("COMMANDs", s.command_rate, s.command_burst)
        self._query_budget = Budget("LEADERBOARD queries", s.query_rate, s.query_burst)
        self._control_budget = Budget("messages", s.control_rate, s.control_burst)
        self._deadline = 0.0
        """Loop time by which a connection that neither JOINed nor WATCHed must act."""
        self._queries: set[asyncio.Task[None]] = set()
        """Waiting leaderboard queries; invariant: at most p.MAX_PENDING_QUERIES."""

    # -- the Peer interface (used by the match) ---------------------------------------

    def send(self, frame: bytes) -> None:
        broadcast([self.conn], frame)  # a synchronous write: never awaits the client

    def close_soon(self, code: int, reason: str) -> None:
        """Start the closing handshake without waiting for it: :meth:`run` keeps reading
        (and discarding) what the client already sent, so the client's close frame is
        not stuck behind a full receive buffer."""
        self._closing = True
        asyncio.get_running_loop().create_task(self.conn.close(code, reason))

    # -- the session --------------------------------------------------------------------

    async def run(self) -> None:
        s = self.deps.settings
        self.send(
            p.welcome(
                self.identity.player,
                self.identity.role,
                {
                    "max_frame_bytes": s.max_frame_bytes,
                    "max_inputs_per_frame": p.MAX_INPUTS_PER_FRAME,
                    "input_rate": s.input_rate,
                    "input_burst": s.input_burst,
                    "command_rate": s.command_rate,
                    "command_burst": s.command_burst,
                    "query_rate": s.query_rate,
                    "query_burst": s.query_burst,
                    "control_rate": s.control_rate,
                    "control_burst": s.control_burst,
                    "max_command_args_bytes": p.MAX_COMMAND_ARGS_BYTES,
                    "max_nesting": p.MAX_NESTING,
                    "grace_period": s.grace_period,
                },
            )
        )
        anonymous = self.identity is ANONYMOUS
        self._deadline = asyncio.get_running_loop().time() + (
            s.anonymous_timeout if anonymous else s.join_timeout
        )
        try:
            while True:
                if self._must_act(anonymous):
                    try:
                        async with asyncio.timeout_at(self._deadline):
                            frame = await self.conn.recv()
                    except TimeoutError:
                        self.close_soon(
                            p.CLOSE_JOIN_TIMEOUT,
                            "no WATCH in time" if anonymous else "no JOIN in time",
                        )
                        self._deadline += 3600.0  # keep draining until the close completes
                        continue
                else:
                    frame = await self.conn.recv()
                if not self._closing:
                    await self._handle(frame)
        except ConnectionClosed:
            pass
        finally:
            self._detach()

    def _must_act(self, anonymous: bool) -> bool:
        """Whether the connection is still on its deadline: one that neither JOINed nor
        LISTed/WATCHed; an anonymous one until it WATCHes a match (LIST and queries
        do not extend its short budget: docs/protocol.md section 2)."""
        if self.match is not None:
            return False
        if anonymous:
            return self.spectator is None or self.spectator.record is None
        return self.spectator is None

    def _detach(self) -> None:
        for task in self._queries:
            task.cancel()
        if self.spectator is not None:
            self.spectator.close_now()
        if self.match is not None:
            if self.sub is not None:
                self.match.feed.unsubscribe(self.sub)
            if self.seat is not None:
                self.match.detach(self.seat, self)

    async def _handle(self, frame: bytes | str) -> None:
        try:
            msg = p.decode_client(frame)
            if isinstance(msg, p.Inputs):
                self._inputs(msg)
                return self._good()
            if isinstance(msg, p.Command):
                budget = self._command_budget
            elif isinstance(msg, p.LeaderboardQuery):
                budget = self._query_budget
            elif isinstance(msg, p.Seek):
                # No budget: seeks coalesce (at most one is served at a time, the ones
                # that arrive meanwhile cost a PLAYBACK each), and a viewer's scrubber
                # sends them as fast as they are answered.
                budget = None
            else:
                budget = self._control_budget
            if budget is not None and not self._within(budget, 1, getattr(msg, "ref", None)):
                return None
            if isinstance(msg, p.Join):
                await self._join(msg)
            elif isinstance(msg, p.Command):
                self._command(msg)
            elif isinstance(msg, p.Leave):
                self._leave()
            elif isinstance(msg, p.LeaderboardQuery):
                await self._leaderboard(msg)
            else:
                await self._spectate(msg)
        except p.ProtocolError as exc:
            self._protocol_error(exc)
            return
        except ReplayError as exc:  # tick_out_of_range, unknown_match, ... from a spectator request
            self._protocol_error(p.ProtocolError(exc.code, str(exc), getattr(msg, "ref", None)))
            return None
        return self._good()

    def _good(self) -> None:
        self._errors = 0

    def _within(self, budget: Budget, n: int, ref: int | None) -> bool:
        """Spend ``n`` of ``budget``: True when within it. Over it: ERROR ``rate_limited``
        (the message is dropped), or a close with 4008 once a whole burst beyond it.
        Neither counts as a protocol error: a flood ends with 4008, never 4002."""
        left = budget.spend(n, time.monotonic())
        if left >= 0:
            return True
        self.deps.metrics.reject(p.E_RATE_LIMITED, n)
        if left < -budget.burst:
            self.close_soon(p.CLOSE_RATE_LIMITED, f"flood of {budget.kind}")
        else:
            self.send(
                p.error(
                    p.E_RATE_LIMITED,
                    f"dropped: over {budget.rate:g} {budget.kind}/s (burst {budget.burst})",
                    ref,
                )
            )
        return False

    def _protocol_error(self, exc: p.ProtocolError) -> None:
        self.deps.metrics.reject(exc.code)
        self.send(p.error(exc.code, exc.message, exc.ref))
        self._errors += 1
        if self._errors > MAX_ERRORS_IN_A_ROW:
            self.close_soon(p.CLOSE_PROTOCOL_ERROR, "too many protocol errors")

    # -- leaderboard queries (docs/protocol.md, "Leaderboards") -----------------------------

    async def _leaderboard(self, msg: p.LeaderboardQuery) -> None:
        """Answer a query with the HTTP API's own function (one set of parameter rules).
        A query without ``wait`` is an in-memory read answered here, in order; one that
        waits runs as a task, so this connection's inputs and controls go on meanwhile."""
        if not self._closing and self.identity is not ANONYMOUS:
            # Querying is a use of the connection: the join timeout restarts.
            self._deadline = asyncio.get_running_loop().time() + self.deps.settings.join_timeout
        if msg.args.get("wait") is None:
            await self._answer_query(msg)
            return
        if len(self._queries) >= p.MAX_PENDING_QUERIES:
            raise p.ProtocolError(
                p.E_TOO_MANY_QUERIES,
                f"at most {p.MAX_PENDING_QUERIES} waiting queries per connection",
                msg.ref,
            )
        task = asyncio.get_running_loop().create_task(self._answer_query(msg))
        self._queries.add(task)
        task.add_done_callback(self._queries.discard)

    async def _answer_query(self, msg: p.LeaderboardQuery) -> None:
        try:
            body = await leaderboard_api.query(
                self.deps.leaderboards, msg.query, msg.args, self.identity is ANONYMOUS
            )
        except ReplayError as exc:  # LeaderboardError: bad_parameter, unknown_board, ...
            self._protocol_error(p.ProtocolError(exc.code, str(exc), msg.ref))
            return
        except Exception:  # a bug, not bad input: logged, answered all the same
            log.exception("leaderboard query failed: %s %r", msg.query, msg.args)
            self.send(p.error("internal", "internal error", msg.ref))
            return
        self.send(p.leaderboard_reply(msg.ref, body))

    # -- spectating ------------------------------------------------------------------------

    async def _spectate(self, msg: p.SpectatorMessage) -> None:
        if self.match is not None:
            raise p.ProtocolError(p.E_FORBIDDEN, "a connection that JOINed a match cannot WATCH")
        if self.spectator is None:
            self.spectator = SpectatorSession(
                self.deps.spectators,
                self.conn,
                self.identity,
                self.send,
                self.deps.metrics.slow_consumers.inc,
            )
        await self.spectator.handle(msg)

    # -- JOIN -----------------------------------------------------------------------------

    async def _join(self, msg: p.Join) -> None:
        if self.match is not None:
            raise p.ProtocolError(p.E_ALREADY_JOINED, "this connection already joined a match")
        ident = self.identity
        if not ident.may_enter(msg.match_id):
            raise p.ProtocolError(
                p.E_FORBIDDEN, f"this token is for match {ident.match!r}, not {msg.match_id!r}"
            )
        if self.spectator is not None:
            raise p.ProtocolError(p.E_FORBIDDEN, "a spectator WATCHes; it cannot JOIN")
        if ident.role == "spectator" and self.deps.spectators.options_of(msg.match_id).delay > 0:
            # JOIN's stream is undelayed: it would bypass the anti-ghosting delay.
            raise p.ProtocolError(p.E_FORBIDDEN, f"match {msg.match_id!r} is delayed: use WATCH")
        try:
            match = await self.deps.lobby.locate(msg.match_id)
        except ReplayError as exc:
            if exc.code != p.E_MATCH_MOVING:
                raise
            # Its node died and its lease has not lapsed yet (a cluster): try again soon.
            self.send(p.error(p.E_MATCH_MOVING, str(exc), None))
            self.close_soon(p.CLOSE_TRY_AGAIN, "match moving: join again")
            return
        if isinstance(match, str):  # it runs on another node of the cluster
            self.send(p.error(p.E_MOVED, match, None))
            self.close_soon(p.CLOSE_MOVED, match)
            return
        if match is None or match.read_only:
            try:
                record = await self.deps.store.get_match(msg.match_id)
            except UnknownMatchError:
                raise p.ProtocolError(p.E_UNKNOWN_MATCH, f"no match {msg.match_id!r}") from None
            raise p.ProtocolError(p.E_MATCH_OVER, f"match {msg.match_id!r} is {record.status}")
        seat, resumed = None, False
        if ident.role == "player":
            try:
                seat, resumed = await match.join(ident.player, self)
            except JoinRefused as exc:
                raise p.ProtocolError(exc.code, exc.message) from None
        self.match, self.seat = match, seat
        self.sub = match.feed.subscribe(self.conn)
        if seat is not None and isinstance(self.conn, GameConnection):
            self.conn.fast_input = self._fast_input
        self.send(
            p.joined(
                match.match_id,
                seat.slot if seat else None,
                match.record.game,
                match.tick_rate,
                match.record.settings,
                match.record.seed,
                match.status,
                match.tick,
                match.last_seq,
                seat.acked_seq if seat else 0,
                resumed,
            )
        )
        if msg.from_seq is not None:
            await self._catch_up(match, msg.from_seq)
        match.feed.go_live(self.sub)

    async def _catch_up(self, match: Match, from_seq: int) -> None:
        """Stored events after ``from_seq``, regrouped into frames of ~64 KiB."""
        try:
            batches = await self.deps.store.read_batches(match.match_id, from_seq=from_seq + 1)
        except ReplayError as exc:
            self.send(p.error(exc.code, f"catch-up failed: {exc}"))
            return
        group: list[NewEvent] = []
        first = 0
        size = 0
        sent = 0
        for batch in batches:
            for k, (type_, version, tick, data) in enumerate(batch.events):
                seq = batch.first_seq + k
                if seq <= from_seq:
                    continue
                if not group:
                    first = seq
                group.append(NewEvent(type_, tick, data, version))
                size += 24  # a typical arena event; the frame limit is approximate
            if size >= CATCHUP_FRAME_BYTES:
                self.send(p.catchup(first, group[0].tick, encode_batch(group)))
                group, size = [], 0
                sent += 1
                if sent % CATCHUP_FRAMES_PER_TURN == 0:
                    await asyncio.sleep(0)  # let the ticks and other sessions run
                    if self._closing:
                        return
        if group:
            self.send(p.catchup(first, group[0].tick, encode_batch(group)))

    # -- INPUT, COMMAND, LEAVE ------------------------------------------------------------

    def _fast_input(self, frame: bytes) -> None:
        """An INPUT frame, handled synchronously as it is parsed (server/connection.py)."""
        if self._closing:
            return
        try:
            msg = p.decode_input_frame(frame)
            if type(msg) is not p.Inputs:
                raise p.ProtocolError(p.E_MALFORMED, "a frame is an array [type, ...fields]")
            self._inputs(msg)
        except p.ProtocolError as exc:
            self._protocol_error(exc)
            return
        self._errors = 0

    def _inputs(self, msg: p.Inputs) -> None:
        if self.identity.role != "player":
            raise p.ProtocolError(p.E_FORBIDDEN, f"{_a(self.identity.role)} cannot send inputs")
        if self.match is None or self.seat is None:
            raise p.ProtocolError(p.E_NOT_JOINED, "JOIN a match before sending inputs")
        now = time.monotonic()
        if not self._within(self._input_budget, len(msg.inputs), msg.inputs[-1][0]):
            return
        rejected = self.match.submit_inputs(self.seat, msg.inputs)
        if rejected:
            # The same refusal is reported at most once a second: a dead player's inputs
            # are refused 30 times a second and each ERROR costs a send; the acks cover
            # refused inputs anyway. A different refusal code is reported at once.
            self._refused += len(rejected)
            seq, first = rejected[0]
            if now >= self._next_refusal_report or first.code != self._last_refusal:
                more = f" ({self._refused - 1} more refused)" if self._refused > 1 else ""
                self.send(p.error(p.E_REJECTED, f"{first.code}: input {seq}: {first.reason}{more}"))
                self._refused = 0
                self._last_refusal = first.code
                self._next_refusal_report = now + REFUSAL_REPORT_INTERVAL_S

    def _command(self, msg: p.Command) -> None:
        role = self.identity.role
        if role not in ("player", "admin"):
            raise p.ProtocolError(p.E_FORBIDDEN, f"{_a(role)} cannot send commands", msg.ref)
        if self.match is None:
            raise p.ProtocolError(p.E_NOT_JOINED, "JOIN a match before sending commands", msg.ref)
        # The game says which commands its players and admins may send; an admin also
        # starts and ends matches (the lifecycle commands of every game).
        rules = self.match.rules
        allowed = (
            rules.player_commands
            if role == "player"
            else rules.admin_commands | {START, END, REWIND}
        )
        if msg.kind not in allowed:
            raise p.ProtocolError(
                p.E_FORBIDDEN,
                f"{_a(role)} cannot send {msg.kind!r} (allowed in this game: {sorted(allowed)})",
                msg.ref,
            )
        ref = msg.ref

        def reply(result: int | Rejection) -> None:
            if isinstance(result, Rejection):
                self.send(p.error(p.E_REJECTED, f"{result.code}: {result.reason}", ref))
            else:
                self.send(p.ok(ref, result))

        self.match.command(self.identity.player, msg.kind, dict(msg.args), reply)

    def _leave(self) -> None:
        if self.match is None or self.seat is None:
            raise p.ProtocolError(p.E_NOT_JOINED, "not seated in a match")
        self.match.leave(self.seat)
        self.close_soon(1000, "left the match")


def _a(role: str) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"
