"""GameClient: a player (or watcher) connection with automatic resume.

    async with GameClient(url, token) as client:
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
session. The wire messages come from :mod:`replay.protocol`; nothing here imports
the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import broadcast
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode

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


class ClientClosed(Exception):
    """The session ended for good; ``code`` and ``reason`` are the last close frame's."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason


COMMAND_TIMEOUT_S = 10.0
"""How long :meth:`GameClient.command` waits for its OK or ERROR by default."""


class GameClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
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
        ``self.latencies``."""
        self.url = url
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

    # -- connecting -------------------------------------------------------------------

    async def connect(self) -> p.Welcome:
        self.ws = await connect(
            self.url,
            subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=None,
            compression=None,
            open_timeout=10,
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
        return await self._join(self.last_seq if history or self.track_state else None)

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
        while True:
            assert self.ws is not None
            try:
                # Binary frames are handled as they are parsed (_Connection); this loop
                # only sees anything else, and the end of the connection.
                async for frame in self.ws:
                    self._on_frame(frame)  # type: ignore[arg-type]
            except ConnectionClosed:
                pass
            code, reason = self.ws.close_code, self.ws.close_reason or "connection lost"
            if self._closing or not self.reconnect or code in p.PLAYER_NO_RETRY:
                self._end(ClientClosed(code, reason))
                return
            if not await self._resume():
                self._end(ClientClosed(code, reason))
                return

    def _end(self, closed: ClientClosed) -> None:
        self._closed = closed
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(closed)
        if self._joined_waiter is not None and not self._joined_waiter.done():
            self._joined_waiter.set_exception(closed)
        self._messages.put_nowait(closed)

    async def _resume(self) -> bool:
        """Reconnect with backoff, JOIN again from the last seq, resend unacked inputs."""
        lo, hi = self.backoff
        for attempt in range(self.max_attempts):
            await asyncio.sleep(min(hi, lo * 2**attempt) * (0.5 + random.random()))
            try:
                self.slot = None
                await self.connect()
                assert self.ws is not None and self.match_id is not None
                joined = self._joined_waiter = asyncio.get_running_loop().create_future()
                await self.ws.send(p.encode_join(self.match_id, self.last_seq))
                closed = asyncio.ensure_future(self.ws.wait_closed())
                await asyncio.wait([joined, closed], timeout=10, return_when="FIRST_COMPLETED")
                closed.cancel()
                if not joined.done():
                    continue  # closed or silent: try again
                joined.result()
            except p.ProtocolError as exc:
                log.info("resume refused: %s", exc)
                return False
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                if isinstance(exc, InvalidStatus) and exc.response.status_code in (400, 401, 403):
                    return False
                if isinstance(exc, ConnectionClosed) and _code(exc) in p.PLAYER_NO_RETRY:
                    return False
                continue
            self.reconnects += 1
            return True
        return False

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
            fut = self._replies.get(msg.ref) if isinstance(msg.ref, int) else None
            if fut is not None and not fut.done():
                fut.set_exception(p.ProtocolError(msg.code, msg.message, msg.ref))
            elif self._joined_waiter is not None and not self._joined_waiter.done():
                self._joined_waiter.set_exception(p.ProtocolError(msg.code, msg.message))
                return
        if self.keep_messages or isinstance(msg, p.Ended):
            self._messages.put_nowait(msg)

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
        if self._joined_waiter is not None and not self._joined_waiter.done():
            self._joined_waiter.set_result(msg)

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
