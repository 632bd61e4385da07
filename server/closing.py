"""Closing connections whose client does not read fast enough (slow consumers).

``ServerConnection.close()`` writes the close frame behind everything still unsent,
then waits for the write buffer to drain and for the client's close frame. A client
that does not read never drains it: the close would hang (websockets waits in
``drain()`` until the keepalive ping times out) while the connection's buffers stay
in memory. So the server does not wait for such a client:

- :func:`close_slow`: a slow client that still reads gets the close frame (4010)
  and :data:`SLOW_CLOSE_GRACE_S` to read up to it and answer; then the TCP connection
  is dropped (``transport.abort()``: the unsent bytes are discarded).
- :func:`drop`: a stalled client (it has read next to nothing for
  ``spectator_stall_seconds``) would never reach a close frame queued behind its
  unread data: the TCP connection is dropped at once. The client sees an abnormal
  closure (1006) and reconnects as after a network failure.

Either way the memory held for the connection is freed within the grace period.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection

__all__ = ["SLOW_CLOSE_GRACE_S", "close_slow", "drop"]

SLOW_CLOSE_GRACE_S = 2.0
"""Seconds a slow consumer has, after its close frame was written, to complete the
closing handshake before its TCP connection is dropped. Its buffers (at most the
send limit plus the close frame) are held that long at most."""

_closing: set[asyncio.Task[None]] = set()


def close_slow(conn: ServerConnection, code: int, reason: str) -> None:
    """Start the closing handshake; drop the connection if it is not done in time."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(conn.close(code, reason))
    _closing.add(task)  # the loop keeps only a weak reference to tasks
    task.add_done_callback(_closing.discard)
    loop.call_later(SLOW_CLOSE_GRACE_S, _abort, conn.transport)


def drop(conn: ServerConnection) -> None:
    """Drop the TCP connection now, discarding what is unsent."""
    _abort(conn.transport)


def _abort(transport: asyncio.Transport) -> None:
    # abort() of a transport that already closed is a no-op; connection_lost ends the
    # session (its recv() raises ConnectionClosed) and frees the buffers.
    transport.abort()
