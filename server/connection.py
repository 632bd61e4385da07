"""A websockets connection with a synchronous fast path for input frames.

websockets hands every received message to a queue that a task reads with
``await recv()``: a future and a task wake-up per frame. Inputs are the bulk of
the traffic (30 frames/s per player), so once a player is seated its INPUT
frames are handled right where the frame is parsed, in ``process_event``,
without a queue or a task switch. Everything else (other message types, text
and fragmented frames, control frames) takes the normal path.

Ordering: an INPUT frame may be handled before an earlier COMMAND frame that is
still queued for the session task. Inputs and commands are independent (both
take effect at the next tick), so nothing depends on their relative order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode

__all__ = ["GameConnection"]

log = logging.getLogger(__name__)

INPUT_PREFIX = b"\x92\x02"
"""msgpack of ``[2, ...]``: a two-element array whose first element is the INPUT type."""


class GameConnection(ServerConnection):
    fast_input: Callable[[bytes], None] | None = None
    """Set by the session once seated: takes the bytes of one INPUT frame."""

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
