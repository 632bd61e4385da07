"""Lean load players for the ingest benchmarks: many players per process, little CPU each.

On a 2-core machine the load generators share the cores with the server under
test, so every microsecond they spend is taken from the server's latency. The
SDK's ``GameClient`` is built for games (typed messages, reconnect, state); a
load player needs none of it. Each one here is a plain ``asyncio.Protocol``
that speaks just enough of docs/protocol.md:

* the HTTP upgrade is written by hand (token in ``Authorization``,
  ``Sec-WebSocket-Protocol: matchreplay.v1``);
* client frames are built directly: ``0x82``, the masked length, a zero mask
  key (so the masked payload is the payload: the server unmasks it as it must,
  and nothing here spends time masking; RFC 6455 asks clients for an
  unpredictable key to protect proxies, irrelevant on loopback);
* server frames are unmasked and small: a tiny parser finds their boundaries
  and only JOINED, UPDATE and ERROR payloads are decoded;
* sockets are read with ``recv_into()`` one shared buffer (a ``BufferedProtocol``):
  a plain ``Protocol`` is read with ``recv(256 KiB)``, whose allocation costs
  more than everything else here (see server/connection.py).

Both servers of a benchmark (ours and the bare baseline) get exactly this load,
so the comparison stays fair. Latency is measured per input: time sent -> the
first UPDATE whose cumulative ack for this player's slot covers it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import msgpack

__all__ = ["JoinRefused", "LeanPlayer", "close_players", "connect_players"]

_JOINED, _UPDATE, _ERROR = 17, 19, 20
_ZERO_MASK = b"\x00\x00\x00\x00"
_READ = memoryview(bytearray(64 * 1024))  # shared: get_buffer/buffer_updated run back to back


class JoinRefused(Exception):
    """The server answered JOIN with an ERROR; ``args[0]`` is its code."""


def client_frame(payload: bytes) -> bytes:
    """A final binary frame from client to server, masked with the zero key."""
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    return head + _ZERO_MASK + payload


class LeanPlayer(asyncio.BufferedProtocol):
    def __init__(self, handshake: bytes) -> None:
        self._handshake = handshake
        self._buf = bytearray()
        self._upgraded = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.joined: asyncio.Future[int | None] | None = None
        self.slot: int | None = None
        self.next_seq = 1
        self.acked_seq = 0
        self._sent: deque[tuple[int, float]] = deque()
        self.latencies: list[float] = []
        self.errors = 0
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self._handshake)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for fut in (self.opened, self.joined):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection closed"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ

    def buffer_updated(self, nbytes: int) -> None:
        buf = self._buf
        buf += _READ[:nbytes]
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self._upgraded = True
            self.opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size - pos < head + n:
                break
            if opcode == 2:
                self._message(buf, pos + head, n)
            elif opcode == 8:
                self.transport.close()  # type: ignore[union-attr]
            pos += head + n
        if pos:
            del buf[:pos]

    # -- messages ----------------------------------------------------------------------------

    def _message(self, buf: bytearray, start: int, n: int) -> None:
        # The type is the second byte of a fixarray header: skip everything else unread.
        kind = buf[start + 1]
        if kind == _UPDATE:
            msg = msgpack.unpackb(buf[start : start + n])
            acks, slot = msg[4], self.slot
            for i in range(0, len(acks), 2):
                if acks[i] == slot:
                    self._ack(acks[i + 1])
                    break
        elif kind == _JOINED:
            msg = msgpack.unpackb(buf[start : start + n])
            self.slot = msg[2]
            if self.joined is not None and not self.joined.done():
                self.joined.set_result(self.slot)
        elif kind == _ERROR:
            self.errors += 1
            if self.joined is not None and not self.joined.done():  # the JOIN was refused
                code = msgpack.unpackb(buf[start : start + n])[1]
                self.joined.set_exception(JoinRefused(code))

    def _ack(self, seq: int) -> None:
        if seq <= self.acked_seq:
            return
        self.acked_seq = seq
        sent, now = self._sent, time.perf_counter()
        while sent and sent[0][0] <= seq:
            self.latencies.append(now - sent.popleft()[1])

    # -- sending ---------------------------------------------------------------------------

    def join(self, match_id: str) -> asyncio.Future[int | None]:
        self.joined = asyncio.get_running_loop().create_future()
        self.transport.write(client_frame(msgpack.packb([1, match_id, None])))  # type: ignore[union-attr]
        return self.joined

    def send_inputs(self, raws: Sequence[Sequence[Any]]) -> None:
        seq = self.next_seq
        self.next_seq = seq + len(raws)
        items = [[seq + k, *raw] for k, raw in enumerate(raws)]
        self.transport.write(client_frame(msgpack.packb([2, items])))  # type: ignore[union-attr]
        self._sent.append((self.next_seq - 1, time.perf_counter()))

    def close(self) -> None:
        """Start the closing handshake (close 1000); the server ends the TCP connection."""
        if self.transport is not None and not self.closed:
            self.transport.write(b"\x88\x82" + _ZERO_MASK + b"\x03\xe8")


async def close_players(players: Sequence[LeanPlayer], timeout: float = 5.0) -> None:
    """Close cleanly (the servers see a closing handshake, not a reset), then drop stragglers."""
    for player in players:
        player.close()
    deadline = asyncio.get_running_loop().time() + timeout
    while any(not p.closed for p in players) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    for player in players:
        if not player.closed and player.transport is not None:
            player.transport.abort()


async def connect_players(url: str, tokens: Sequence[str]) -> list[LeanPlayer]:
    """Open one lean player per token (50 handshakes at a time)."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    loop = asyncio.get_running_loop()

    async def one(token: str) -> LeanPlayer:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: matchreplay.v1\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        _, player = await loop.create_connection(lambda: LeanPlayer(request), host, port)
        await player.opened
        return player

    players: list[LeanPlayer] = []
    for i in range(0, len(tokens), 50):
        players += await asyncio.gather(*(one(t) for t in tokens[i : i + 50]))
    return players
