"""Bad input and abuse: an ERROR when the connection can go on, a close code when it
cannot; never a crash, never a lost event, never a disturbed neighbour."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from server_helpers import FAST_SETTINGS, raw_connect, running_app, token, unpack, url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from client_sdk import GameClient
from replay import protocol as p


async def recv_until(ws, kind: int, timeout: float = 5.0) -> list:
    """Frames until one of type ``kind`` (UPDATEs in between are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = unpack(await ws.recv())
            if msg[0] == kind:
                return msg


async def closed_with(ws, timeout: float = 5.0) -> int | None:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


async def expect_error(ws, frame: bytes | str, code: str) -> list:
    await ws.send(frame)
    msg = await recv_until(ws, p.ERROR)
    assert msg[1] == code, msg
    return msg


async def test_bad_frames_get_errors_and_neighbours_are_undisturbed(tmp_path):
    async with running_app(tmp_path, input_rate=60.0, input_burst=64) as app:
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=2
        )
        witness = GameClient(url(app), token("witness"))
        await witness.connect()
        await witness.join(match.match_id)
        acks: list[int] = []

        async def keep_playing() -> None:
            async for message in witness:
                if isinstance(message, p.Update):
                    if witness.state.alive[witness.slot]:
                        witness.send_input([0.3, 0.1, 0.2, False])
                    acks.append(witness.acked_seq)

        play = asyncio.create_task(keep_playing())

        ws = await raw_connect(app, token("mallory"))
        assert unpack(await ws.recv())[0] == p.WELCOME
        await expect_error(ws, b"\xc1\x00", p.E_MALFORMED)  # not msgpack
        await expect_error(ws, msgpack.packb({"type": 1}), p.E_MALFORMED)  # not an array
        await expect_error(ws, "[1, 2]", p.E_TEXT_FRAME)
        await expect_error(ws, msgpack.packb([99, 1]), p.E_UNKNOWN_TYPE)
        await expect_error(ws, msgpack.packb([p.INPUT, [[1, 0, 0, 0, 0]]]), p.E_NOT_JOINED)
        await expect_error(ws, msgpack.packb([p.COMMAND, 1, "chat", {}]), p.E_NOT_JOINED)
        await expect_error(ws, msgpack.packb([p.JOIN, 42, 0]), p.E_INVALID_FIELD)
        await expect_error(ws, msgpack.packb([p.JOIN, "x" * 65, 0]), p.E_INVALID_FIELD)
        await expect_error(ws, msgpack.packb([p.JOIN, "nope", -1]), p.E_INVALID_FIELD)
        await expect_error(ws, msgpack.packb([p.JOIN, "nope", 0]), p.E_UNKNOWN_MATCH)
        # Still usable: a correct JOIN now succeeds.
        await ws.send(msgpack.packb([p.JOIN, match.match_id, None]))
        joined = await recv_until(ws, p.JOINED)
        assert joined[1] == match.match_id
        await expect_error(ws, msgpack.packb([p.JOIN, match.match_id, None]), p.E_ALREADY_JOINED)
        await expect_error(ws, msgpack.packb([p.INPUT, []]), p.E_INVALID_FIELD)
        await expect_error(ws, msgpack.packb([p.INPUT, [["1", 0, 0, 0, 0]]]), p.E_INVALID_FIELD)
        await expect_error(ws, msgpack.packb([p.INPUT, [[3, 0], [2, 0]]]), p.E_INVALID_FIELD)
        too_many = [[i, 0, 0, 0, False] for i in range(1, p.MAX_INPUTS_PER_FRAME + 2)]
        await expect_error(ws, msgpack.packb([p.INPUT, too_many]), p.E_INVALID_FIELD)
        # Game-level validation (values the rules refuse): typed rejections.
        await until_alive(match, "mallory")
        msg = await expect_error(ws, msgpack.packb([p.INPUT, [[1, "a", 0, 0, 0]]]), p.E_REJECTED)
        assert "bad_input" in msg[2]
        msg = await expect_error(ws, msgpack.packb([p.INPUT, [[2, 1e309, 0, 0, 0]]]), p.E_REJECTED)
        assert "not_finite" in msg[2]
        await expect_error(ws, msgpack.packb([p.COMMAND, 7, "start", {}]), p.E_FORBIDDEN)
        msg = await expect_error(
            ws, msgpack.packb([p.COMMAND, 8, "chat", {"text": ""}]), p.E_REJECTED
        )
        assert msg[3] == 8 and "bad_chat" in msg[2]
        await ws.send(msgpack.packb([p.COMMAND, 9, "chat", {"text": "hi"}]))
        ok = await recv_until(ws, p.OK)
        assert ok[1] == 9 and ok[2] > 0

        # A flood: first ERRORs (rate_limited), then the connection is closed with 4008.
        frame = msgpack.packb([p.INPUT, [[1000 + i, 0, 0, 0, False] for i in range(64)]])
        for _ in range(3):
            await ws.send(frame)
        assert (await recv_until(ws, p.ERROR))[1] == p.E_RATE_LIMITED
        with pytest.raises(ConnectionClosed):
            for _ in range(50):
                await ws.send(frame)
                await asyncio.sleep(0)
        assert await closed_with(ws) == p.CLOSE_RATE_LIMITED

        # An oversized frame closes with 1009 (message too big).
        big = await raw_connect(app, token("big"))
        await big.recv()
        await big.send(b"\x00" * (p.MAX_FRAME_BYTES + 1))
        assert await closed_with(big) == p.CLOSE_MESSAGE_TOO_BIG

        # Errors in a row without a good frame: closed with 4002.
        noisy = await raw_connect(app, token("noisy"))
        await noisy.recv()
        for _ in range(30):
            try:
                await noisy.send(b"\xc1")
            except ConnectionClosed:
                break
        assert await closed_with(noisy) == p.CLOSE_PROTOCOL_ERROR

        # The witness played on throughout, its acks kept coming, the match is healthy.
        before = len(acks)
        await asyncio.sleep(0.2)
        assert len(acks) > before and acks[-1] > 0
        assert not play.done() and not match.read_only
        await match.stop("ended", "test over")
        await play
        # Every acknowledged input's tick is in the store.
        record = await app.store.get_match(match.match_id)
        assert witness.acked_tick <= record.last_tick
        await witness.close()


async def until_alive(match, player: str) -> None:
    async with asyncio.timeout(5):
        while (
            player not in match.state.slot_of or not match.state.alive[match.state.slot_of[player]]
        ):
            await asyncio.sleep(0.01)


async def test_handshake_join_timeouts_and_connection_cap(tmp_path):
    async with running_app(tmp_path, open_timeout=0.3, join_timeout=0.3, max_connections=2) as app:
        # A TCP connection that never sends its handshake is dropped.
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        # A websocket that never JOINs is closed with 4004.
        ws = await raw_connect(app, token("idle"))
        assert await closed_with(ws) == p.CLOSE_JOIN_TIMEOUT
        # The cap: the third concurrent connection is closed with 4009.
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=8
        )
        first = await raw_connect(app, token("a"))
        second = await raw_connect(app, token("b"))
        for c in (first, second):
            await c.recv()
            await c.send(msgpack.packb([p.JOIN, match.match_id, None]))
            await recv_until(c, p.JOINED)
        third = await raw_connect(app, token("c"))
        assert await closed_with(third) == p.CLOSE_TOO_MANY_CONNECTIONS
        for c in (first, second):
            await c.close()


async def test_unknown_protocol_version_is_refused_with_a_reason(tmp_path):
    async with running_app(tmp_path) as app:
        for offered in (["matchreplay.v2"], None):
            with pytest.raises(InvalidStatus) as info:
                await connect(
                    url(app),
                    subprotocols=offered,
                    additional_headers={"Authorization": f"Bearer {token('x')}"},
                )
            assert info.value.response.status_code == 400
            assert b"this server speaks matchreplay.v1" in info.value.response.body
