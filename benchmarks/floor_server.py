"""The floor of the ingest benchmark: the least any Python server can do per player.

A raw ``uvloop`` protocol that speaks just enough of docs/protocol.md for the load
players (benchmarks/loadgen.py): it answers the HTTP upgrade, sends WELCOME and
JOINED, unmasks and decodes each INPUT frame to keep the player's last seq, and
writes every player one tiny UPDATE per tick acking it. No websockets library,
no validation, no simulation, no storage, no leaderboards.

What it costs per player-second is the platform's price of one read and one write
per input (system calls, loopback TCP, wakeups) plus the least Python possible:
no real server can go below it on the same machine, so ingest.py prints it beside
the two servers as the bound the capacity target has to be read against.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import msgpack

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

from server.prepared import frame_bytes  # what our server writes: the same framing cost

__all__ = ["floor_main"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_READ = memoryview(bytearray(64 * 1024))  # shared: get_buffer/buffer_updated run back to back


def floor_main(port_out: Any, received: Any, tick_rate: int) -> None:
    """Serve on a free loopback port (sent on ``port_out``) until terminated."""
    import uvloop

    last_seq: dict[Floor, int] = {}

    class Floor(asyncio.BufferedProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.buf = bytearray()
            self.upgraded = False

        def get_buffer(self, sizehint: int) -> memoryview:
            return _READ

        def buffer_updated(self, nbytes: int) -> None:
            buf = self.buf
            buf += _READ[:nbytes]
            if not self.upgraded:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                fields = (ln.partition(b":") for ln in bytes(buf[:end]).split(b"\r\n"))
                key = next(v for k, _, v in fields if k.lower() == b"sec-websocket-key")
                accept = base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                self.transport.write(frame_bytes(msgpack.packb([16, 1, "p", "player", {}])))
                del buf[: end + 4]
                self.upgraded = True
                last_seq[self] = 0
            pos = 0
            while len(buf) - pos >= 6:
                opcode, n, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
                if n == 126:
                    n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
                start = pos + head + 4
                if len(buf) < start + n:
                    break
                payload = apply_mask(bytes(buf[start : start + n]), bytes(buf[pos + head : start]))
                pos = start + n
                if opcode == 8:
                    self.transport.close()
                    break
                msg = msgpack.unpackb(payload)
                if msg[0] == 2:  # INPUT
                    last_seq[self] = msg[1][-1][0]
                    received.value += len(msg[1])
                elif msg[0] == 1:  # JOIN
                    joined = [17, msg[1], 0, "arena", tick_rate, {}, 0, "running", 0, 0, 0, False]
                    self.transport.write(frame_bytes(msgpack.packb(joined)))
            del buf[:pos]

        def connection_lost(self, exc: Exception | None) -> None:
            last_seq.pop(self, None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Floor, "127.0.0.1", 0)
        port_out.put(server.sockets[0].getsockname()[1])
        tick, next_at = 0, loop.time()
        while True:
            next_at += 1 / tick_rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            tick += 1
            for player, seq in list(last_seq.items()):
                player.transport.write(frame_bytes(msgpack.packb([19, tick, 0, None, [0, seq]])))

    uvloop.run(main())
