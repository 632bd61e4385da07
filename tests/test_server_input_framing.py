"""The input fast path (server/connection.py) splits frames exactly as websockets would.

A raw TCP client writes hand-built websocket frames, in awkward chunkings, mixed
with other messages and control frames; every input is applied once, every other
message is answered, and every protocol violation still gets websockets' close code.
"""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest
from server_helpers import FAST_SETTINGS, client_frame, running_app, token, upgrade_request
from websockets.protocol import Protocol

from replay import protocol as p
from server.connection import GameConnection

ENDLESS = FAST_SETTINGS | {"time_limit_s": 0, "min_players": 1}


def inputs(first: int, count: int = 1) -> bytes:
    items = [[first + k, 0.5, 0.0, 1.0, False] for k in range(count)]
    return client_frame(msgpack.packb([p.INPUT, items]))


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.acked = 0
        self.slot: int | None = None

    @classmethod
    async def connect(cls, port: int, player: str) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(port, token(player)))
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        return cls(reader, writer)

    async def read(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; UPDATE acks are recorded."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        payload = await self.reader.readexactly(n)
        if b0 & 0x0F == 2:
            msg = msgpack.unpackb(payload)
            if msg[0] == p.UPDATE:
                acks = msg[4]
                for i in range(0, len(acks), 2):
                    if acks[i] == self.slot:
                        self.acked = acks[i + 1]
            elif msg[0] == p.JOINED:
                self.slot = msg[2]
        return b0 & 0x0F, payload

    async def until(self, test, timeout: float = 10.0) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            while True:
                got = await self.read()
                if test(*got):
                    return got

    async def close_code(self) -> int:
        _, payload = await self.until(lambda op, _: op == 8)
        self.writer.close()  # the server's close frame is the last thing it sends
        return struct.unpack("!H", payload[:2])[0]

    async def write_in_pieces(self, data: bytes, sizes: list[int]) -> None:
        i = k = 0
        while i < len(data):
            n = sizes[k % len(sizes)]
            self.writer.write(data[i : i + n])
            await self.writer.drain()
            await asyncio.sleep(0.002)  # separate reads on the server, most of the time
            i, k = i + n, k + 1


def is_msg(kind: int):
    return lambda op, payload: op == 2 and msgpack.unpackb(payload)[0] == kind


async def seated(app, match_id: str, player: str) -> RawClient:
    c = await RawClient.connect(app.port, player)
    await c.until(is_msg(p.WELCOME))
    c.writer.write(client_frame(msgpack.packb([p.JOIN, match_id, None])))
    await c.until(is_msg(p.JOINED))
    return c


async def test_inputs_in_any_chunking_are_applied_once_and_other_frames_still_work(
    tmp_path, monkeypatch
):
    handed_to_websockets: list[bytes] = []
    original = Protocol.receive_data

    def spy(self, data):  # counts what reaches websockets' own parser
        handed_to_websockets.append(bytes(data))
        return original(self, data)

    monkeypatch.setattr(Protocol, "receive_data", spy)
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", ENDLESS, start_players=1)
        c = await seated(app, match.match_id, "ada")
        seat = match.seats["ada"]
        conn = next(s.conn for s in match.feed.subscribers)
        assert isinstance(conn, GameConnection) and conn._between_frames()

        # 1. Forty single-input frames in one write: all taken by the fast path.
        handed_to_websockets.clear()
        c.writer.write(b"".join(inputs(seq) for seq in range(1, 41)))
        await c.until(lambda *_: c.acked >= 40)
        assert match.machine.highest_seq(seat.player) == 40
        assert not handed_to_websockets

        # 2. Frames cut at every awkward place (inside headers, keys and payloads),
        #    with a 16-bit-length frame, a COMMAND, a ping and more inputs interleaved.
        stream = (
            inputs(41)
            + inputs(42, 5)  # one frame, five inputs
            + client_frame(msgpack.packb([p.COMMAND, 7, "chat", {"text": "hi"}]))
            + client_frame(b"are you there", opcode=9)  # ping
            + inputs(47, 30)  # > 125 bytes: the 16-bit length form
            + inputs(77)
        )
        await c.write_in_pieces(stream, [1, 3, 7, 2, 11, 5])
        got = {"pong": False, "ok": False}

        def done(op: int, payload: bytes) -> bool:
            if op == 10:
                got["pong"] = payload == b"are you there"
            elif op == 2 and msgpack.unpackb(payload)[0] == p.OK:
                got["ok"] = msgpack.unpackb(payload)[1] == 7
            return c.acked >= 77 and all(got.values())

        await c.until(done)
        assert match.machine.highest_seq(seat.player) == 77
        assert conn._between_frames()  # websockets was left at a frame boundary

        # 3. Duplicates (resent seqs) stay duplicates on the fast path.
        c.writer.write(inputs(70) + inputs(78))
        await c.until(lambda *_: c.acked >= 78)
        assert match.machine.highest_seq(seat.player) == 78

        # 4. An INPUT frame inside a fragmented message is a protocol error (1002),
        #    exactly as websockets rules it: the fast path must not take it.
        #    The fragment and the INPUT frame arrive in separate reads.
        c.writer.write(client_frame(b"\x92", fin=False))
        await c.writer.drain()
        await asyncio.sleep(0.05)
        c.writer.write(inputs(79))
        assert await c.close_code() == 1002
        assert match.machine.highest_seq(seat.player) == 78


async def test_protocol_violations_keep_websockets_close_codes(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", ENDLESS, start_players=1)

        unmasked = await seated(app, match.match_id, "u")
        payload = msgpack.packb([p.INPUT, [[1, 0.5, 0.0, 1.0, False]]])
        unmasked.writer.write(client_frame(payload, masked=False))
        assert await unmasked.close_code() == 1002
        assert match.machine.highest_seq("u") == 0

        reserved = await seated(app, match.match_id, "r")
        bad = bytearray(inputs(1))
        bad[0] |= 0x40  # RSV1 without a negotiated extension
        reserved.writer.write(bytes(bad))
        assert await reserved.close_code() == 1002

        big = await seated(app, match.match_id, "b")
        many = [[k, 0.5, 0.0, 1.0, False] for k in range(1, 20_000)]
        big.writer.write(client_frame(msgpack.packb([p.INPUT, many])))
        assert await big.close_code() == p.CLOSE_MESSAGE_TOO_BIG
        assert match.machine.highest_seq("b") == 0

        # The match played on for a well-behaved player throughout.
        good = await seated(app, match.match_id, "g")
        good.writer.write(inputs(1) + inputs(2))
        await good.until(lambda *_: good.acked >= 2)
        assert not match.read_only
        good.writer.close()


def test_the_same_on_uvloop(tmp_path, monkeypatch):
    # `matchreplay serve` runs on uvloop (server/app.py): its transports must feed the
    # fast path (BufferedProtocol reads) exactly as asyncio's do.
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(
            test_inputs_in_any_chunking_are_applied_once_and_other_frames_still_work(
                tmp_path / "a", monkeypatch
            )
        )
        runner.run(test_protocol_violations_keep_websockets_close_codes(tmp_path / "b"))
