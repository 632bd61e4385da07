"""A client written from docs/protocol.md alone: plain websockets + msgpack, no SDK,
no replay/ imports. It plays a whole match and checks what the document promises."""

from __future__ import annotations

import asyncio
import math

import msgpack
from server_helpers import FAST_SETTINGS, running_app, token
from websockets.asyncio.client import connect

JOIN, INPUT, COMMAND = 1, 2, 3
WELCOME, JOINED, CATCHUP, UPDATE, ERROR, OK, ENDED = 16, 17, 18, 19, 20, 21, 22


class RawPlayer:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.slot = None
        self.next_seq = 1
        self.sent: dict[int, float] = {}
        self.acked = 0
        self.last_seq = 0
        self.events: list[list] = []  # [type, version, tick, *data] with absolute ticks
        self.ended = None

    async def send(self, value) -> None:
        await self.ws.send(msgpack.packb(value))

    async def recv(self) -> list:
        return msgpack.unpackb(await self.ws.recv(), raw=False, strict_map_key=False)

    def add_events(self, blob: bytes, base_tick: int, first_seq: int) -> None:
        for i, event in enumerate(msgpack.unpackb(blob, raw=False)):
            if first_seq + i > self.last_seq:  # skip events already held (catch-up overlap)
                self.events.append([event[0], event[1], base_tick + event[2], *event[3:]])
                self.last_seq = first_seq + i

    async def play(self, match_id: str) -> None:
        welcome = await self.recv()
        assert welcome[0] == WELCOME and welcome[1] == 1
        await self.send([JOIN, match_id, 0])
        while True:
            msg = await self.recv()
            if msg[0] == JOINED:
                self.slot = msg[2]
                break
        while self.ended is None:
            msg = await self.recv()
            kind = msg[0]
            if kind == CATCHUP:
                _, first_seq, base_tick, blob = msg
                self.add_events(blob, base_tick, first_seq)
            elif kind == UPDATE:
                _, tick, last_seq, blob, acks = msg
                if blob is not None:
                    n = len(msgpack.unpackb(blob, raw=False))
                    self.add_events(blob, tick, last_seq - n + 1)
                for i in range(0, len(acks), 2):
                    if acks[i] == self.slot:
                        assert acks[i + 1] >= self.acked  # cumulative
                        self.acked = acks[i + 1]
                seq = self.next_seq
                self.next_seq += 1
                await self.send(
                    [
                        INPUT,
                        [[seq, math.cos(tick / 9), math.sin(tick / 9), tick / 20, tick % 5 == 0]],
                    ]
                )
            elif kind == ENDED:
                self.ended = msg
            elif kind == ERROR:
                assert msg[1] == "rejected", msg  # e.g. not_alive while waiting to respawn


async def test_raw_client_plays_a_match(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS, start_players=2)
        url = f"ws://127.0.0.1:{app.port}/ws"
        conns = [
            await connect(
                url,
                subprotocols=["matchreplay.v1"],
                additional_headers={"Authorization": f"Bearer {token(f'raw{i}')}"},
            )
            for i in range(2)
        ]
        players = [RawPlayer(ws) for ws in conns]
        async with asyncio.timeout(30):
            await asyncio.gather(*(pl.play(match.match_id) for pl in players))
        stored = await app.store.read(match.match_id)
        for pl in players:
            status, reason, _tick, scoreboard = pl.ended[1:]
            assert (status, reason) == ("ended", "time_limit")
            assert {row["player"] for row in scoreboard} == {"raw0", "raw1"}
            # The raw client saw exactly the stored events, in order.
            assert pl.last_seq == len(stored)
            assert [[e.type, e.version, e.tick, *e.data] for e in stored] == pl.events
            assert 0 < pl.acked < pl.next_seq
        for ws in conns:
            await ws.close()
