"""The per-match feed: each tick's update, encoded once, written to every connection.

Writing does not await per connection: the update is serialized once as a
websocket frame (:class:`server.prepared.Prepared`) and its bytes are pushed into
each connection's transport buffer synchronously, one ``transport.write()`` each.

Slow receivers. A connection's bounded queue is its transport write buffer:
before each write the feed checks how many bytes are still unsent. Above
``limit_bytes`` (256 KiB by default, a few seconds of updates) the receiver is
not keeping up, and updates cannot be skipped (they carry the events a client
folds), so the connection is closed with 4010 (slow consumer; dropped if the closing
handshake is not done within ``SLOW_CLOSE_GRACE_S``, server/closing.py). The client
reconnects and resumes from the last seq it has: the missed events come from
the store, not from memory. Memory per connection is therefore bounded by
``limit_bytes`` plus one frame.

A subscriber that is still catching up from the store holds live frames in a
list instead (bounded by the same byte limit) and gets them after the catch-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from replay.protocol import CLOSE_SLOW_CONSUMER
from server.closing import close_slow
from server.prepared import Prepared

__all__ = ["Feed", "Subscriber"]

_OPEN = State.OPEN

log = logging.getLogger(__name__)


class Subscriber:
    __slots__ = ("conn", "pending", "pending_bytes")

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        # (last_seq, frame) held while catching up; None once live.
        self.pending: list[tuple[int, Prepared]] | None = []
        self.pending_bytes = 0

    def unsent_bytes(self) -> int:
        transport = self.conn.transport
        return transport.get_write_buffer_size() if transport is not None else 0


class Feed:
    def __init__(self, limit_bytes: int, on_slow: Callable[[], None] | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.subscribers: set[Subscriber] = set()
        self._on_slow = on_slow

    def subscribe(self, conn: ServerConnection) -> Subscriber:
        """A subscriber in catch-up mode: call :meth:`go_live` after sending the catch-up."""
        sub = Subscriber(conn)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def go_live(self, sub: Subscriber) -> None:
        """Send the frames held during catch-up, in order, and switch to direct writes.

        Some of them may carry events the catch-up already sent: clients skip the
        events of an UPDATE whose ``last_seq`` they already have and keep its acks
        (docs/protocol.md, "Catch-up"), so nothing is filtered here.
        """
        pending, sub.pending = sub.pending or [], None
        if sub in self.subscribers and sub.conn.state is State.OPEN:
            for _, frame in pending:
                frame.write(sub.conn)

    def publish(self, message: bytes, last_seq: int) -> None:
        frame = Prepared(message)
        limit = self.limit_bytes
        for sub in list(self.subscribers):
            conn = sub.conn
            if conn.protocol.state is not _OPEN:  # (conn.state is a property over this one)
                continue
            if sub.pending is not None:
                sub.pending.append((last_seq, frame))
                sub.pending_bytes += len(frame)
                if sub.pending_bytes > limit:
                    self._drop(sub)
            elif sub.unsent_bytes() > limit:
                self._drop(sub)
            else:
                frame.write(conn)

    def _drop(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if self._on_slow is not None:
            self._on_slow()
        log.info("closing slow consumer %s", sub.conn.remote_address)
        close_slow(sub.conn, CLOSE_SLOW_CONSUMER, "slow consumer: updates not read in time")
