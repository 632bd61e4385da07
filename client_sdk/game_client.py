"""GameClient: a player (or watcher) connection with automatic resume.

    async with GameClient(url, token, nodes=[other_url, ...]) as client:
        joined = await client.join("m1")
        client.send_input([1.0, 0.0, 0.5, False])
        async for message in client:        # Update, Catchup, Error, Ok, Ended, Joined
            ...

Resume. Inputs get increasing sequence numbers and stay in an unacknowledged
buffer until an UPDATE acknowledges them (cumulatively). When the connection
drops for a reason worth retrying, the client reconnects with exponential
backoff, JOINs again asking for the events after the last seq it has, and
resends the unacknowledged inputs; the server applies each seq at most once,
so resending is safe. A close in ``replay.protocol.PLAYER_NO_RETRY`` ends the
session (1001 only with one known node: in a cluster the match outlives its node).

Clusters (docs/protocol.md section 14). A JOIN answered by close 4011 (``moved``)
is sent again to the URL in the close reason, at most :data:`MAX_REDIRECTS` times
in a row; close 4012 (``match_moving``: the match is between nodes) is retried
through any known node after :data:`TRY_AGAIN_BACKOFF`, for up to
:data:`TRY_AGAIN_FOR_S`; a dropped connection is retried through any known node
(:class:`client_sdk.nodes.Nodes`: the caller's ``url`` and ``nodes``, redirect
targets, and ``GET /api/nodes``), the node that failed last. All of it is invisible
to the caller: inputs sent meanwhile are queued and sent after the next JOINED.
The wire messages come from :mod:`replay.protocol`; nothing here imports the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import broadcast
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode

from client_sdk.nodes import NODE_GONE, Nodes, is_ws_url
from replay import protocol as p
from replay.codec import decode_batch
from replay.fold import fold_events
from replay.games import builtin_games
from replay.rules import GameRegistry, Rules

__all__ = ["ClientClosed", "GameClient"]

log = logging.getLogger(__name__)

MAX_UNACKED = 1024
"""Unacknowledged inputs kept for resending (~34 s at 30/s); beyond it the oldest
are dropped: inputs are control samples, and old ones only matter until acked."""


KEEPALIVE_S = 2.0
"""Seconds between the client's pings, and for each pong to come: a silent node (paused,
cut off) is given up within twice this, a ping frame per player every 2 s (6 bytes)."""


class ClientClosed(Exception):
    """The session ended for good; ``code`` and ``reason`` are the last close frame's."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason


COMMAND_TIMEOUT_S = 10.0
"""How long :meth:`GameClient.command` waits for its OK or ERROR by default."""
JOIN_TIMEOUT_S = 10.0
"""How long a reconnect waits for the answer to its JOIN before trying again."""
MAX_REDIRECTS = 5
"""Redirects (close 4011) followed in a row, without a JOINED between them: more is a
loop between nodes that disagree, and the session ends instead of spinning."""
TRY_AGAIN_BACKOFF = (0.1, 0.3)
"""Seconds (uniform: jittered) before retrying after close 4012 (``match_moving``)."""
TRY_AGAIN_FOR_S = 10.0
"""How long a player keeps retrying while its match is between nodes (4012): the
lease of a dead owner lapses within a few seconds, then a node takes the match over."""


class GameClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        nodes: Sequence[str] = (),
        reconnect: bool = True,
        max_attempts: int = 10,
        backoff: tuple[float, float] = (0.05, 3.0),
        track_state: bool = True,
        keep_messages: bool = True,
        measure: bool = False,
        games: GameRegistry | None = None,
    ) -> None:
        """``track_state``: fold the match's events into ``self.state`` with the game's
        rules. ``keep_messages``: queue every message for ``async for`` (unread messages
        accumulate: iterate, or pass False to queue only ENDED, e.g. for bots whose
        acks and state advance anyway). ``measure``: record input-to-ack latencies in
        ``self.latencies``. ``nodes``: other websocket URLs of the same cluster, to
        reconnect through when ``url``'s node is gone (more are learned from the
        cluster itself)."""
        self.url = url
        """The node this client is connected to (or connects to next)."""
        self.nodes = Nodes([url, *nodes])
        self.token = token
        self.games = games or builtin_games()
        """The games whose matches this client can follow (``track_state``)."""
        self.reconnect = reconnect
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.track_state = track_state
        self.keep_messages = keep_messages
        self.ws: ClientConnection | None = None
        self.welcome: p.Welcome | None = None
        self.joined: p.Joined | None = None
        self.match_id: str | None = None
        self.slot: int | None = None
        self.rules: Rules[Any] | None = None
        self.state: Any = None
        self.last_seq = 0
        """Seq of the last match event this client has."""
        self.next_seq = 1
        self.acked_seq = 0
        self.acked_tick = -1
        self.tick = -1
        self.unacked: deque[tuple[int, list[Any]]] = deque()
        self.reconnects = 0
        self.redirects = 0
        """Redirects (close 4011) followed so far."""
        self.ended: p.Ended | None = None
        """The match's ENDED message, once it came (how and at which tick it ended)."""
        self.latencies: list[float] | None = [] if measure else None
        self._sent_at: dict[int, float] = {}
        self._messages: asyncio.Queue[p.ServerMessage | ClientClosed] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._closed: ClientClosed | None = None
        self._replies: dict[int, asyncio.Future[p.Ok]] = {}
        self._next_ref = 1
        self._joined_waiter: asyncio.Future[p.Joined] | None = None
        """What :meth:`join` waits for: the first JOINED, wherever redirects lead."""
        self._join_reply: asyncio.Future[p.Joined] | None = None
        """The answer to a reconnect's JOIN on the current connection."""
        self._join_from: int | None = 0
        """``from_seq`` of the first JOIN, until a JOINED came (then: ``last_seq``)."""

    # -- connecting -------------------------------------------------------------------

    async def connect(self, url: str | None = None) -> p.Welcome:
        """Open a connection to ``url`` (default: ``self.url``) and read WELCOME."""
        if url is not None:
            self.url = url
        self.ws = await connect(
            self.url,
            subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=None,
            compression=None,
            open_timeout=10,
            # A node that is paused (SIGSTOP, a VM stall) keeps the TCP connection open
            # but answers no ping: after KEEPALIVE_S without a pong the client takes the
            # connection for dead and reconnects, through another node if need be.
            ping_interval=KEEPALIVE_S,
            ping_timeout=KEEPALIVE_S,
            create_connection=_Connection,
        )
        try:
            first = p.decode_server(await self.ws.recv())
        except ConnectionClosed as exc:
            raise ClientClosed(_code(exc), _reason(exc)) from None
        if not isinstance(first, p.Welcome):
            raise p.ProtocolError(p.E_MALFORMED, f"expected WELCOME, got {first!r}")
        self.welcome = first
        self.ws.on_frame = self._on_frame  # type: ignore[attr-defined]
        return first

    async def __aenter__(self) -> GameClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def join(self, match_id: str, *, history: bool = True) -> p.Joined:
        """Take a seat (players) or watch (spectators, admins). With ``history`` the
        server first sends every stored event, so ``state`` is complete."""
        if self.ws is None:
            await self.connect()
        self.match_id = match_id
        self._join_from = self.last_seq if history or self.track_state else None
        return await self._join(self._join_from)

    async def _join(self, from_seq: int | None) -> p.Joined:
        assert self.ws is not None and self.match_id is not None
        self._joined_waiter = asyncio.get_running_loop().create_future()
        await self.ws.send(p.encode_join(self.match_id, from_seq))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_loop())
        return await self._joined_waiter

    # -- sending ------------------------------------------------------------------------

    def send_input(self, raw: Sequence[Any]) -> int:
        """Queue one input and write it now (no await: a synchronous write to the
        socket buffer). Returns its sequence number."""
        return self.send_inputs([raw])[-1]

    def send_inputs(self, raws: Sequence[Sequence[Any]]) -> list[int]:
        seqs = []
        now = time.perf_counter()
        batch = []
        for raw in raws:
            seq = self.next_seq
            self.next_seq += 1
            item = (seq, list(raw))
            self.unacked.append(item)
            batch.append(item)
            seqs.append(seq)
            if self.latencies is not None:
                self._sent_at[seq] = now
        while len(self.unacked) > MAX_UNACKED:
            self._sent_at.pop(self.unacked.popleft()[0], None)
        ws = self.ws
        if ws is not None and self.slot is not None:
            for i in range(0, len(batch), p.MAX_INPUTS_PER_FRAME):
                broadcast([ws], p.encode_inputs(batch[i : i + p.MAX_INPUTS_PER_FRAME]))
        return seqs

    async def command(
        self, kind: str, args: dict[str, Any] | None = None, timeout: float = COMMAND_TIMEOUT_S
    ) -> p.Ok:
        """Send a COMMAND; returns the OK (the tick it took effect at) or raises
        :class:`replay.protocol.ProtocolError` with the server's error code, or
        :class:`TimeoutError` when no answer came within ``timeout`` seconds (it never
        waits forever)."""
        assert self.ws is not None
        if type(kind) is not str or not 1 <= len(kind) <= p.MAX_ID_CHARS:
            raise p.ProtocolError(
                p.E_INVALID_FIELD, f"command kind must be a string of 1..{p.MAX_ID_CHARS} chars"
            )
        ref = self._next_ref
        self._next_ref += 1
        fut = self._replies[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send(p.encode_command(ref, kind, args or {}))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._replies.pop(ref, None)

    async def leave(self) -> None:
        if self.ws is not None:
            self._closing = True
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(p.encode_leave())
            await self.close()

    async def close(self) -> None:
        self._closing = True
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    # -- receiving ------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[p.ServerMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[p.ServerMessage]:
        while True:
            item = await self._messages.get()
            if isinstance(item, ClientClosed):
                if item.code == p.CLOSE_NORMAL or self._closing:
                    return
                raise item
            yield item
            if isinstance(item, p.Ended):
                return

    async def _read_loop(self) -> None:
        try:
            await self._read_and_reconnect()
        except Exception as exc:  # a bug must end the session, never leave it hanging
            log.exception("the client's reader failed")
            self._end(ClientClosed(None, f"client error: {exc!r}"))

    async def _read_and_reconnect(self) -> None:
        while True:
            ws = self.ws
            assert ws is not None
            try:
                # Binary frames are handled as they are parsed (_Connection); this loop
                # only sees anything else, and the end of the connection.
                async for frame in ws:
                    self._on_frame(frame)  # type: ignore[arg-type]
            except ConnectionClosed:
                pass
            code, reason = ws.close_code, ws.close_reason or "connection lost"
            if self._closing:
                self._end(ClientClosed(code, reason))
                return
            ended = await self._reconnect(code, reason)
            if ended is not None:
                self._end(ended)
                return

    def _end(self, closed: ClientClosed) -> None:
        """The session is over. When a reconnect's JOIN was refused, the refusal is
        ``closed.__cause__``: what :meth:`join` raises if it still waits (a redirected
        first JOIN, refused by the owner)."""
        refused = closed.__cause__ if isinstance(closed.__cause__, p.ProtocolError) else None
        self._closed = closed
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(closed)
        if self._joined_waiter is not None and not self._joined_waiter.done():
            self._joined_waiter.set_exception(refused or closed)
        self._messages.put_nowait(closed)

    async def _reconnect(self, code: int | None, reason: str) -> ClientClosed | None:
        """Get the session back after its connection closed with ``code``: follow a
        redirect, retry a match between nodes, or reconnect with backoff, through any
        known node. None once JOINED again (unacked inputs resent), else why it ends."""
        outage = _Outage()
        while True:
            step = self._next_try(outage, code, reason)
            if isinstance(step, ClientClosed):
                return step  # (the seat it had stays in ``slot``)
            self.slot = None  # inputs queue up until the next JOINED
            target, delay = step
            await asyncio.sleep(delay)
            if target is None:
                if not outage.refreshed:  # once per outage, after the jitter: spread out
                    outage.refreshed = True
                    await self.nodes.refresh(self.token)
                target = self.nodes.after(self.url)
            log.debug("closed %s (%s): joining again at %s", code, reason, target)
            try:
                closed = await self._rejoin(target)
            except _SessionOver as over:
                if isinstance(over.why, ClientClosed):
                    return over.why
                refusal = f"{over.why.code}: {over.why}"
                closed = ClientClosed(code, f"{reason}; then {target} refused the JOIN: {refusal}")
                closed.__cause__ = over.why
                return closed
            if closed is None:
                self.reconnects += 1
                return None
            code, reason = closed

    def _next_try(
        self, outage: _Outage, code: int | None, reason: str
    ) -> ClientClosed | tuple[str | None, float]:
        """After a close with ``code``: the session's end, or where to JOIN next (None:
        the next known node) and after how many seconds (docs/protocol.md 6 and 14)."""
        if self.ended is not None or self._closing:
            return ClientClosed(code, reason)  # the match is over: so is the session
        if code == p.CLOSE_MOVED and is_ws_url(reason):
            outage.redirects += 1
            if outage.redirects > MAX_REDIRECTS:
                why = f"more than {MAX_REDIRECTS} redirects in a row (the last to {reason})"
                return ClientClosed(code, why)
            self.redirects += 1
            self.nodes.learn(reason)
            return reason, 0.0
        # Redirects count "in a row" until something else happens: a redirect to a node
        # that died meanwhile ends in a failed connect, not in a loop.
        outage.redirects = 0
        if not self.reconnect or code in p.NO_RETRY:
            return ClientClosed(code, reason)
        if code == p.CLOSE_GOING_AWAY and len(self.nodes) < 2:
            return ClientClosed(code, reason)  # one server: its matches end with it
        if code in (p.CLOSE_TRY_AGAIN, p.CLOSE_MOVED):  # (a 4011 without a URL too)
            now = time.monotonic()
            outage.try_again_until = outage.try_again_until or now + TRY_AGAIN_FOR_S
            if now >= outage.try_again_until:
                why = f"{reason} (still between nodes after {TRY_AGAIN_FOR_S} s)"
                return ClientClosed(code, why)
            return None, random.uniform(*TRY_AGAIN_BACKOFF)
        outage.failures += 1
        if outage.failures > self.max_attempts:
            return ClientClosed(code, f"{reason} (no reconnect in {self.max_attempts} tries)")
        if code in NODE_GONE:
            self.nodes.fail(self.url)  # tried last from now on
        lo, hi = self.backoff
        return None, min(hi, lo * 2 ** (outage.failures - 1)) * (0.5 + random.random())

    async def _rejoin(self, url: str) -> tuple[int | None, str] | None:
        """Connect to ``url`` and JOIN from the last seq: None once JOINED, else the
        close code and reason to go on from; raises :class:`_SessionOver` when the
        JOIN or the connection was refused for good."""
        assert self.match_id is not None
        try:
            await self.connect(url)
        except ClientClosed as exc:  # closed before WELCOME: 4009 full, 4001 expired...
            return exc.code, exc.reason
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (400, 401, 403):
                raise _SessionOver(ClientClosed(None, f"{url} refused: HTTP {status}")) from None
            self.nodes.fail(url)
            return _DROPPED, f"{url}: HTTP {status}"
        except (OSError, InvalidHandshake, TimeoutError, p.ProtocolError) as exc:
            self.nodes.fail(url)  # unreachable, or not a matchreplay node (no WELCOME)
            return _DROPPED, f"{url}: {exc or type(exc).__name__}"
        ws = self.ws
        assert ws is not None
        self.nodes.answered(url)
        from_seq = self.last_seq if self.joined is not None else self._join_from
        reply = self._join_reply = asyncio.get_running_loop().create_future()
        with contextlib.suppress(ConnectionClosed):
            await ws.send(p.encode_join(self.match_id, from_seq))
        closed = asyncio.ensure_future(ws.wait_closed())
        await asyncio.wait([reply, closed], timeout=JOIN_TIMEOUT_S, return_when="FIRST_COMPLETED")
        closed.cancel()
        if not reply.done():
            reply.cancel()
            if ws.close_code is None:  # silent: give up on this connection
                await ws.close()
                return _DROPPED, f"{url}: no answer to JOIN in {JOIN_TIMEOUT_S} s"
            return ws.close_code, ws.close_reason or "connection lost"
        refused = reply.exception()
        if refused is not None:  # unknown_match, match_over, forbidden...: final
            await ws.close()
            raise _SessionOver(refused)  # type: ignore[arg-type]
        return None

    def _on_frame(self, frame: bytes) -> None:
        try:
            self._process(p.decode_server(frame))
        except p.ProtocolError as exc:
            log.warning("undecodable server frame: %s", exc)

    def _process(self, msg: p.ServerMessage) -> None:
        if isinstance(msg, p.Update):
            self._on_update(msg)
        elif isinstance(msg, p.Catchup):
            self._on_events(msg.events, msg.base_tick, msg.first_seq, None)
        elif isinstance(msg, p.Joined):
            self._on_joined(msg)
        elif isinstance(msg, p.Ended):
            self.ended = msg
        elif isinstance(msg, p.Ok):
            fut = self._replies.get(msg.ref)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, p.Error):
            if msg.code in _BETWEEN_NODES:
                return  # the close that follows says where to go (_reconnect)
            fut = self._replies.get(msg.ref) if isinstance(msg.ref, int) else None
            if fut is not None and not fut.done():
                fut.set_exception(p.ProtocolError(msg.code, msg.message, msg.ref))
            elif self._refuse_join(p.ProtocolError(msg.code, msg.message)):
                return
        if self.keep_messages or isinstance(msg, p.Ended):
            self._messages.put_nowait(msg)

    def _refuse_join(self, refusal: p.ProtocolError) -> bool:
        """An ERROR without a ref while a JOIN waits is its refusal: False if none waits."""
        for waiter in (self._join_reply, self._joined_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(refusal)
                return True
        return False

    def _on_joined(self, msg: p.Joined) -> None:
        self.joined = msg
        self.slot = msg.slot
        self.tick = msg.tick
        if self.track_state and self.rules is None:
            self.rules = self.games[msg.game]
            self.state = self.rules.initial_state(msg.settings, msg.seed)
        if not self.track_state:
            self.last_seq = max(self.last_seq, msg.last_seq)
        self._ack(msg.acked_seq, msg.tick)
        if self.slot is not None and self.unacked and self.ws is not None:
            # Resend what the server has not acknowledged: it ignores seqs it already has.
            pending = list(self.unacked)
            for i in range(0, len(pending), p.MAX_INPUTS_PER_FRAME):
                broadcast([self.ws], p.encode_inputs(pending[i : i + p.MAX_INPUTS_PER_FRAME]))
        for waiter in (self._join_reply, self._joined_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)

    def _on_update(self, msg: p.Update) -> None:
        self.tick = msg.tick
        if msg.events is not None:
            self._on_events(msg.events, msg.tick, None, msg.last_seq)
        elif msg.last_seq > self.last_seq and not self.track_state:
            self.last_seq = msg.last_seq
        slot = self.slot
        if slot is not None and msg.acks:
            ack = msg.ack_for(slot)
            if ack is not None:
                self._ack(ack, msg.tick)

    def _on_events(
        self, blob: bytes, base_tick: int, first_seq: int | None, last_seq: int | None
    ) -> None:
        """Fold events the client does not have yet (seq > ``last_seq``); skip the rest."""
        if not self.track_state:
            if last_seq is None:
                last_seq = (first_seq or 0) + len(msgpack.unpackb(blob)) - 1
            self.last_seq = max(self.last_seq, last_seq)
            return
        events = decode_batch(blob, base_tick)
        if first_seq is None:
            first_seq = (last_seq or 0) - len(events) + 1
        skip = self.last_seq - first_seq + 1
        if skip >= len(events):
            return
        assert self.rules is not None
        catalog = self.rules.stream_catalog
        fresh = []
        for type_, version, tick, data in events[max(0, skip) :]:
            if type_ in catalog:  # else a newer server's own event (0xFF00 up): kept as is,
                data, version = catalog.upcast(type_, version, data)  # the fold skips it
            fresh.append((type_, version, tick, data))
        # A ``rewound`` event replaces the state (the restored-state message, protocol.md).
        self.state = fold_events(self.rules, self.state, fresh, max(base_tick, fresh[-1][2]))
        self.last_seq = first_seq + len(events) - 1

    def _ack(self, seq: int, tick: int) -> None:
        if seq <= self.acked_seq:
            return
        self.acked_seq, self.acked_tick = seq, tick
        unacked, lat, now = self.unacked, self.latencies, time.perf_counter()
        while unacked and unacked[0][0] <= seq:
            s = unacked.popleft()[0]
            if lat is not None:
                sent = self._sent_at.pop(s, None)
                if sent is not None:
                    lat.append(now - sent)


_DROPPED = 1006
"""What a connection that ended without a close frame reports (never sent on the wire)."""


_BETWEEN_NODES = frozenset({p.E_MOVED, p.E_MATCH_MOVING})
"""ERRORs that announce a close 4011 / 4012: handled by the reconnect, never shown."""


@dataclass
class _Outage:
    """What one reconnect has been through so far (its limits are per outage)."""

    redirects: int = 0
    failures: int = 0
    try_again_until: float | None = None
    refreshed: bool = False
    """Whether the node list was fetched (once per outage)."""


class _SessionOver(Exception):
    """Raised inside a reconnect when the session cannot go on: ``why`` ends it."""

    def __init__(self, why: ClientClosed | p.ProtocolError) -> None:
        super().__init__(str(why))
        self.why = why


class _Connection(ClientConnection):
    """Handles binary frames synchronously as they are parsed (``on_frame``), instead of
    queueing each for a task to ``recv()``: one task wake-up less per server frame."""

    on_frame: Callable[[bytes], None] | None = None

    def process_event(self, event: Any) -> None:
        handler = self.on_frame
        if (
            handler is not None
            and isinstance(event, Frame)
            and event.opcode is Opcode.BINARY
            and event.fin  # fragmented messages take the normal path
        ):
            try:
                handler(bytes(event.data))
            except Exception:  # never break the connection's parser
                log.exception("processing a server frame failed")
            return
        super().process_event(event)


def _code(exc: ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None


def _reason(exc: ConnectionClosed) -> str:
    return exc.rcvd.reason if exc.rcvd is not None else "connection lost"
