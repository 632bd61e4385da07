"""A binary message serialized once as a websocket frame, written to many connections.

``websockets.broadcast()`` frames the message again for every connection: a
``Frame`` object, its checks, a header and a copy of the payload through
``BytesIO``, the protocol's output list, then ``transport.write()``. A frame from
a server is never masked (RFC 6455 5.1), and with ``compression=None`` (server/app.py)
no extension rewrites it, so its bytes are the same for every connection:
:class:`Prepared` builds them once and each delivery is a single ``transport.write()``.

The direct write is what ``broadcast()`` would have produced, provided (checked per
connection in :meth:`Prepared.write`, else it falls back to ``broadcast()``):

- the protocol state is OPEN: nothing may follow a close frame (``broadcast()``
  skips such connections too);
- no extension was negotiated: an extension (permessage-deflate) would encode
  the payload per connection;
- no fragmented message is being sent (``send_in_progress``) and the protocol
  does not expect a continuation frame: a data frame must not land between
  fragments (``broadcast()`` skips and logs these);
- the protocol's own output (``protocol.writes``) is empty: anything it queued
  goes first, so bytes reach the transport in the order the frames were made.
  The asyncio connection flushes it right after every protocol call, so it is
  empty between callbacks; the check keeps the order even if that changes.

The sans-I/O protocol keeps no state about outgoing data frames besides those
(no byte counts, no sequence numbers), so skipping it changes nothing it relies on.
Memory: one copy of the frame (payload + 2-10 bytes of header) shared by all.

The frame itself is built here, not by websockets' ``Frame.serialize``: a final binary
frame from a server is a fixed first byte, the payload length in 1, 3 or 9 bytes and
the payload (RFC 6455 5.2), and the frame object, its checks and its ``BytesIO`` cost
3 us against 0.3 us here, and every match makes two a tick (its players' UPDATE and its
spectators' FRAME). tests/test_prepared.py checks the bytes against ``Frame.serialize``
at every length boundary.
"""

from __future__ import annotations

import logging
import struct

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.protocol import State

__all__ = ["FIN_BINARY", "Prepared", "frame_bytes"]

log = logging.getLogger(__name__)

_OPEN = State.OPEN
FIN_BINARY = 0x82
"""First byte: FIN, no reserved bits, opcode 2 (binary)."""
_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")


def frame_bytes(message: bytes) -> bytes:
    """``message`` as one final, unmasked binary websocket frame (RFC 6455 5.2)."""
    n = len(message)
    if n < 126:
        return bytes((FIN_BINARY, n)) + message
    if n < 1 << 16:
        return _LENGTH_16.pack(FIN_BINARY, 126, n) + message
    return _LENGTH_64.pack(FIN_BINARY, 127, n) + message


class Prepared:
    """One binary message, its websocket frame bytes built once."""

    __slots__ = ("_header", "wire")

    def __init__(self, message: bytes) -> None:
        self.wire = frame_bytes(message)
        """The whole frame as it goes on the wire: header then payload."""
        self._header = len(self.wire) - len(message)

    @property
    def message(self) -> memoryview:
        """The payload (no copy)."""
        return memoryview(self.wire)[self._header :]

    def __len__(self) -> int:
        return len(self.wire)

    def write(self, conn: ServerConnection) -> None:
        """Send to one connection without awaiting, like ``broadcast([conn], message)``."""
        proto = conn.protocol
        if (
            proto.state is _OPEN
            and not proto.extensions
            and not proto.writes
            and not proto.expect_continuation_frame
            and conn.send_in_progress is None
        ):
            try:
                conn.transport.write(self.wire)
            except Exception as exc:  # as broadcast(): one connection's failure is its own
                log.warning("skipped write: %s", exc)
        else:
            broadcast([conn], self.message)  # skips closing connections, frames as needed
