"""Reconnect and resume: the seat is kept, nothing is applied twice, nothing is lost."""

from __future__ import annotations

import asyncio
import math

import numpy as np
from server_helpers import FAST_SETTINGS, running_app, token, url
from websockets.asyncio.connection import broadcast

import replay.games.arena.events as ev
from client_sdk import GameClient
from replay import protocol as p
from replay.events import SYSTEM_FIRST, SYSTEM_SESSION

N = 30


def aim_of(seq: int) -> float:
    return seq * 0.1


def units(rad: float) -> int:
    return round(rad * 4096 / (2 * math.pi)) % 4096


async def until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def drain(client: GameClient) -> None:
    async for _ in client:
        pass


async def test_resume_applies_each_input_once(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=2
        )
        subject = GameClient(url(app), token("subject"), backoff=(0.02, 0.2))
        other = GameClient(url(app), token("other"), track_state=False)
        for c in (subject, other):
            await c.connect()
            await c.join(match.match_id)
        readers = [asyncio.create_task(drain(c)) for c in (subject, other)]
        await until(lambda: subject.state.alive[subject.slot])
        slot = subject.slot

        for seq in range(1, N + 1):
            await until(lambda: subject.slot is not None)
            assert subject.send_input([0.0, 0.0, aim_of(seq), False]) == seq
            if seq == 20:
                # Drop with input 20 unacknowledged: the SDK resends it after resuming.
                subject.ws.transport.abort()
            await until(lambda seq=seq: subject.acked_seq >= seq)
            if seq == 10:
                subject.ws.transport.abort()
                await until(lambda: subject.reconnects == 1 and subject.slot is not None)
                assert subject.joined.resumed and subject.slot == slot
                assert subject.joined.acked_seq == 10
                # A careless client resends an input that was applied long ago: applying
                # it again would turn the aim back, which the stored events would show.
                broadcast([subject.ws], p.encode_inputs([(5, [0.0, 0.0, aim_of(5), False])]))
                await asyncio.sleep(5 / 30)  # leave it ticks of its own to take effect in
        assert subject.reconnects == 2
        assert not subject.unacked and subject.acked_seq == N
        # The other player's connection never noticed.
        assert other.reconnects == 0 and not readers[1].done()

        await match.stop("ended", "test over")
        aims = []
        for e in await app.store.read(match.match_id):
            if e.type == ev.AIMED:
                slots = np.frombuffer(e.data[0], np.uint8)
                values = np.frombuffer(e.data[1], "<u2")
                aims += values[slots == slot].tolist()
        # Every input took effect exactly once, in order: no duplicate, none lost.
        assert aims == [units(aim_of(s)) for s in range(1, N + 1)]
        for c in (subject, other):
            await c.close()
        for r in readers:
            r.cancel()


async def test_grace_period_expiry_frees_the_seat(tmp_path):
    async with running_app(tmp_path, grace_period=0.3) as app:
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=8
        )
        c = GameClient(url(app), token("leaver"), reconnect=False)
        await c.connect()
        await c.join(match.match_id)
        assert "leaver" in match.seats
        c.ws.transport.abort()
        await until(lambda: "leaver" not in match.seats)
        assert match.state.slot_of == {}
        await match.stop()
        stored = await app.store.read(match.match_id)
        assert [e.type for e in stored if e.type < SYSTEM_FIRST] == [ev.JOINED, ev.LEFT]
        # The audit trail's sessions: the connection went away, then the seat timed out.
        sessions = [e.data[:2] for e in stored if e.type == SYSTEM_SESSION]
        assert sessions == [("leaver", "disconnect"), ("leaver", "timeout")]
