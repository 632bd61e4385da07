"""A websockets connection with a synchronous fast path for input frames.

websockets parses every received frame with a generator-based parser, builds a
``Frame`` object, queues it as a message and wakes the task reading it with
``await recv()``. Inputs are the bulk of the traffic (30 frames/s per player),
so once a player is seated its INPUT frames skip all of that:

* :meth:`GameConnection.data_received` splits the received bytes itself while
  they are small, complete INPUT frames: a header check, the unmasking (the C
  speedup websockets uses), and the handler, right there. That is ~0.6 us
  against ~7.5 us through the generic parser (measured on the reference machine).
* Anything else (another message type, a fragment, a control frame, a frame
  that is incomplete, too large, unmasked or with reserved bits set) goes to
  websockets from that frame on, with everything after it in the chunk, so its
  rules (limits, errors, close codes) apply exactly as without the fast path.
* Frames websockets parses itself still reach :meth:`process_event`, which
  handles INPUT frames synchronously too: no queue, no task switch.

Invariant, checked before the first byte is taken: the fast path splits frames
only where websockets' parser would start a new frame. That holds when the
protocol is OPEN, no fragmented message is in progress, its reader holds no
unparsed bytes and the parser is suspended between frames (at ``at_eof``).
Then consuming whole frames ourselves leaves websockets exactly where it was.
When any of that cannot be established (another websockets version included)
every byte goes through websockets: slower, never different.

Reads. asyncio reads a plain ``Protocol``'s socket with ``sock.recv(256 KiB)``:
CPython allocates 256 KiB for every read and shrinks it to the few dozen bytes
received, which glibc serves with heap growth and trimming: ~20 us per read on
the reference machine, more than everything else an input costs. A
:class:`~asyncio.BufferedProtocol` is read with ``recv_into()`` instead, so
:class:`GameConnection` is one: every connection reads into one shared buffer
and passes a copy of what arrived to :meth:`data_received`.

Plain HTTP. A new connection is plain HTTP until it asks for a websocket: its bytes go
to a channel (server/http_keepalive.py) that answers requests and keeps the
connection alive between them; websockets' handshake (and its task) starts only
with an upgrade request, which it then reads from its first byte (:meth:`upgrade`).

Ordering: an INPUT frame may be handled before an earlier COMMAND frame that is
still queued for the session task. Inputs and commands are independent (both
take effect at the next tick), so nothing depends on their relative order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol as WebSocketProtocol
from websockets.protocol import State
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from server.prepared import FIN_BINARY

__all__ = ["GameConnection"]

log = logging.getLogger(__name__)

INPUT_PREFIX = b"\x92\x02"
"""msgpack of ``[2, ...]``: a two-element array whose first element is the INPUT type."""

_AT_EOF = getattr(StreamReader.at_eof, "__code__", None)
_PARSE = getattr(WebSocketProtocol.parse, "__code__", None)
_OPEN = State.OPEN

READ_BUFFER_BYTES = 64 * 1024
"""Most bytes taken from a socket per read. One buffer for the whole process: 64 KiB."""
_read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))
# Invariant: the buffer is shared by every connection, which is safe because the event
# loop calls get_buffer() and buffer_updated() back to back, in its one thread, and
# buffer_updated() copies the bytes out before anything else can run.


class Channel(Protocol):
    """A connection's plain HTTP until it upgrades (server/http_keepalive.py's HttpChannel)."""

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool: ...

    def connection_lost(self) -> None: ...


class GameConnection(ServerConnection, asyncio.BufferedProtocol):
    fast_input: Callable[[bytes], None] | None = None
    """Set by the session once seated: takes the bytes of one INPUT frame."""

    def __init__(
        self, *args: Any, open_channel: Callable[[GameConnection], Channel], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.open_channel = open_channel
        self.channel: Channel | None = None
        """Plain HTTP, until an upgrade: then None and websockets has the connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # What websockets' Connection.connection_made sets up for writing; its handshake
        # task (ServerConnection.connection_made) waits for an upgrade.
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(self.write_limit_high, self.write_limit_low)
        self.channel = self.open_channel(self)

    def upgrade(self, data: bytes) -> None:
        """A websocket upgrade: websockets takes the connection, ``data`` (the request
        and whatever followed it) first, as if the connection had just opened."""
        self.channel = None
        super().connection_made(self.transport)
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self.channel is not None:
            return self.channel.eof_received()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.channel is not None:
            # websockets never had this connection: nothing of its to close or log.
            channel, self.channel = self.channel, None
            channel.connection_lost()
            return
        super().connection_lost(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_read_buffer[:nbytes]))

    _parser_between_frames = False
    """Cache of :meth:`_between_frames`: true after the fast path took whole frames
    (that leaves websockets' parser where it was); forgotten whenever websockets parses."""

    def data_received(self, data: bytes) -> None:
        handler = self.fast_input
        if (
            handler is None
            or self.protocol.state is not _OPEN
            or not (self._parser_between_frames or self._between_frames())
        ):
            if self.channel is not None:  # plain HTTP (no session yet: fast_input is None)
                self.channel.data_received(data)
                return
            self._parser_between_frames = False
            super().data_received(data)
            return
        proto = self.protocol
        limit = min(proto.max_message_size or 1 << 62, proto.max_fragment_size or 1 << 62)
        pos, size = 0, len(data)
        while pos < size:
            # Client frames are masked: header (2 or 4 bytes), 4-byte key, payload.
            if size - pos < 6 or data[pos] != FIN_BINARY:
                break
            length = data[pos + 1]
            if length < 0x80:  # not masked: a protocol error websockets reports
                break
            length &= 0x7F
            head = 2
            if length == 126:
                if size - pos < 8:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif length == 127:  # inputs are never that large
                break
            start = pos + head + 4
            end = start + length
            if end > size or length > limit:
                break
            payload = apply_mask(data[start:end], data[pos + head : start])
            if payload[:2] != INPUT_PREFIX:
                break
            pos = end
            try:
                handler(payload)
            except Exception:  # a bug here must not break the connection's parser
                log.exception("input fast path failed")
            if self.fast_input is not handler:  # the session detached or closed meanwhile
                break
        if pos < size:
            self._parser_between_frames = False
            super().data_received(data[pos:] if pos else data)
        else:
            self._parser_between_frames = True

    def _between_frames(self) -> bool:
        proto = self.protocol
        if proto.state is not _OPEN or proto.current_size is not None or proto.reader.buffer:
            return False
        # The parser is a chain of generators (the handshake's, then Protocol.parse);
        # between frames the innermost one is Protocol.parse's ``reader.at_eof()``.
        outer, inner = None, proto.parser
        while (nested := getattr(inner, "gi_yieldfrom", None)) is not None:
            outer, inner = inner, nested
        return getattr(inner, "gi_code", None) is _AT_EOF and (
            getattr(outer, "gi_code", None) is _PARSE
        )

    def process_event(self, event: object) -> None:
        handler = self.fast_input
        if (
            handler is not None
            and isinstance(event, Frame)
            and event.opcode is Opcode.BINARY
            and event.fin
            and event.data[:2] == INPUT_PREFIX
        ):
            try:
                handler(bytes(event.data))
            except Exception:  # a bug here must not break the connection's parser
                log.exception("input fast path failed")
            return
        super().process_event(event)  # type: ignore[arg-type]
