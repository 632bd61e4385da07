"""Issue 18, "Abuse" and "Wrong answers": every message type has a budget, anonymous
connections cannot fill the server, decoders have depth and size limits, every error is
a documented code, and a careless operator's shutdown is neither slow nor doubled.
Real servers on loopback, real sockets, real processes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import urllib.parse

import msgpack
import pytest
from server_helpers import (
    FAST_SETTINGS,
    raw_connect,
    running_app,
    token,
    unpack,
    upgrade_request,
    url,
)
from test_server_abuse import closed_with, recv_until
from test_server_shutdown import http, start_server
from websockets.exceptions import ConnectionClosed

from client_sdk import GameClient
from replay import protocol as p


async def playing_witness(
    app, match_id: str, name: str = "witness"
) -> tuple[GameClient, list[int], asyncio.Task]:
    """A well-behaved player: one input per UPDATE; ``acks`` grows while its acks flow."""
    witness = GameClient(url(app), token(name))
    await witness.connect()
    await witness.join(match_id)
    acks: list[int] = []

    async def play() -> None:
        async for message in witness:
            if isinstance(message, p.Update):
                if witness.state.alive[witness.slot]:
                    witness.send_input([0.3, 0.1, 0.2, False])
                acks.append(witness.acked_seq)

    return witness, acks, asyncio.create_task(play())


async def acks_still_flow(acks: list[int]) -> None:
    before = len(acks), max(acks, default=0)
    async with asyncio.timeout(5):
        while len(acks) <= before[0] + 5 or max(acks) <= before[1]:
            await asyncio.sleep(0.02)


async def drain_codes(ws) -> tuple[list[str], int | None]:
    """ERROR codes received until the server closes the connection, and its close code."""
    codes: list[str] = []
    with pytest.raises(Exception):  # noqa: B017 - ConnectionClosed, of either kind
        async with asyncio.timeout(10):
            while True:
                msg = unpack(await ws.recv())
                if msg[0] == p.ERROR:
                    codes.append(msg[1])
    return codes, ws.close_code


async def send_all(ws, frames: list[bytes]) -> None:
    """Send ``frames`` back to back until the server closes the connection."""
    with contextlib.suppress(ConnectionClosed):
        for frame in frames:
            await ws.send(frame)


# -- budgets --------------------------------------------------------------------------------


async def test_a_leaderboard_query_flood_is_closed_with_4008_and_the_player_plays_on(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=2
        )
        witness, acks, play = await playing_witness(app, match.match_id)
        buddy, _, buddy_play = await playing_witness(app, match.match_id, "buddy")
        await acks_still_flow(acks)

        flooder = await raw_connect(app, token("flooder", "spectator"))
        assert unpack(await flooder.recv())[0] == p.WELCOME
        query = p.encode_leaderboard(1, "top", {"board": "kills", "limit": 1000})
        sender = asyncio.create_task(send_all(flooder, [query] * 5000))
        codes, close = await drain_codes(flooder)
        await sender
        assert close == p.CLOSE_RATE_LIMITED
        assert p.E_RATE_LIMITED in codes  # first dropped with an ERROR, then closed
        assert set(codes) <= {p.E_RATE_LIMITED}
        assert b"rate_limited" in app.metrics.render()
        await acks_still_flow(acks)  # the well-behaved player was never held up
        await match.stop("ended", "test over")
        await asyncio.gather(play, buddy_play)
        await witness.close()
        await buddy.close()


async def test_chat_has_a_rate_and_a_size_limit_and_errors_echo_the_ref(tmp_path):
    async with running_app(tmp_path, command_rate=2.0, command_burst=20) as app:
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=2
        )
        ws = await raw_connect(app, token("chatty"))
        await ws.recv()
        await ws.send(p.encode_join(match.match_id, None))
        await recv_until(ws, p.JOINED)
        # Args over MAX_COMMAND_ARGS_BYTES: too_large, with the ref.
        big = msgpack.packb([p.COMMAND, 7, "chat", {"text": "x" * (p.MAX_COMMAND_ARGS_BYTES + 1)}])
        await ws.send(big)
        msg = await recv_until(ws, p.ERROR)
        assert msg[1:2] == [p.E_TOO_LARGE] and msg[3] == 7
        # A kind that is empty or over 64 characters: invalid_field, with the ref.
        for ref, kind in ((8, ""), (9, "k" * (p.MAX_ID_CHARS + 1))):
            await ws.send(msgpack.packb([p.COMMAND, ref, kind, {}]))
            msg = await recv_until(ws, p.ERROR)
            assert msg[1] == p.E_INVALID_FIELD and msg[3] == ref, msg
        # 32 chats at once: the burst is taken (OK), the rest dropped with rate_limited
        # (a whole burst beyond the budget would close the connection with 4008).
        for ref in range(100, 132):
            await ws.send(p.encode_command(ref, "chat", {"text": "spam"}))
        answers: dict[int, str] = {}
        async with asyncio.timeout(10):
            while len(answers) < 32:
                msg = unpack(await ws.recv())
                if msg[0] == p.OK:
                    answers[msg[1]] = "ok"
                elif msg[0] == p.ERROR:
                    answers[msg[3]] = msg[1]
        assert list(answers.values()).count(p.E_RATE_LIMITED) >= 8
        assert list(answers.values()).count("ok") >= 15
        await ws.close()

        # The SDK refuses such a kind itself, and never waits forever for an answer.
        client = GameClient(url(app), token("sdk"))
        await client.connect()
        await client.join(match.match_id)
        with pytest.raises(p.ProtocolError) as refused:
            await client.command("")
        assert refused.value.code == p.E_INVALID_FIELD
        assert (await client.command("chat", {"text": "hello"}, timeout=10)).ref > 0
        await client.close()
        await match.stop("ended", "test over")


async def test_a_flood_of_one_input_frames_is_closed_with_4008_not_4002(tmp_path):
    async with running_app(tmp_path, input_rate=30.0, input_burst=30) as app:
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 0}, start_players=2
        )
        ws = await raw_connect(app, token("flood"))
        await ws.recv()
        await ws.send(p.encode_join(match.match_id, None))
        await recv_until(ws, p.JOINED)
        frames = [p.encode_inputs([(seq, [0.0, 0.0, 0.0, False])]) for seq in range(1, 2000)]
        sender = asyncio.create_task(send_all(ws, frames))
        codes, close = await drain_codes(ws)
        await sender
        assert close == p.CLOSE_RATE_LIMITED, (close, codes[:5])
        assert p.E_RATE_LIMITED in codes
        await match.stop("ended", "test over")


async def test_seeks_coalesce_and_each_still_gets_its_playback(tmp_path):
    async with running_app(tmp_path, control_rate=1000.0, control_burst=1000) as app:
        match = await app.lobby.create(
            "arena", FAST_SETTINGS | {"time_limit_s": 2.0}, start_players=2
        )
        players = [GameClient(url(app), token(name)) for name in ("a", "b")]
        for c in players:
            await c.connect()
            await c.join(match.match_id)
        async with asyncio.timeout(15):
            while not match.read_only:
                await asyncio.sleep(0.05)
        for c in players:
            await c.close()
        last = (await app.store.get_match(match.match_id)).last_tick
        assert last > 30
        ws = await raw_connect(app, token("scrubber", "admin"))
        await ws.recv()
        await ws.send(p.encode_watch(match.match_id, 0))
        await recv_until(ws, p.PLAYBACK)
        seeks = 300
        for i in range(seeks):
            await ws.send(p.encode_seek((i * 7) % last))
        await ws.send(p.encode_seek(last))
        states = playbacks = 0
        async with asyncio.timeout(15):
            while playbacks < seeks + 1:
                msg = unpack(await ws.recv())
                states += msg[0] == p.STATE
                playbacks += msg[0] == p.PLAYBACK
        assert msg[0] == p.PLAYBACK and msg[3] == last  # the newest seek was served last
        # Seeks that arrived meanwhile were replaced, not all served; each still got its
        # PLAYBACK, so a client matching PLAYBACKs to its controls stays in step.
        assert states < seeks
        await ws.close()


# -- anonymous connections ----------------------------------------------------------------------


async def test_an_anonymous_list_only_connection_is_timed_out(tmp_path):
    async with running_app(tmp_path, anonymous_timeout=0.5, join_timeout=30.0) as app:
        anon = await raw_connect(app, None)
        await anon.recv()
        await anon.send(p.encode_list(1))
        assert (await recv_until(anon, p.MATCHES))[1] == 1
        await anon.send(p.encode_leaderboard(2, "boards"))  # queries do not extend it
        assert await closed_with(anon, timeout=10) == p.CLOSE_JOIN_TIMEOUT
        # A spectator with a token that LISTs is not on that short budget.
        known = await raw_connect(app, token("viewer", "spectator"))
        await known.recv()
        await known.send(p.encode_list(1))
        await recv_until(known, p.MATCHES)
        await asyncio.sleep(1.0)
        await known.send(p.encode_list(2))
        assert (await recv_until(known, p.MATCHES))[1] == 2
        await known.close()


async def test_anonymous_connections_never_take_the_reserved_seats(tmp_path):
    async with running_app(
        tmp_path, max_connections=10, authenticated_reserve=0.2, anonymous_timeout=60.0
    ) as app:
        anonymous = []
        for _ in range(8):
            ws = await raw_connect(app, None)
            assert unpack(await ws.recv())[0] == p.WELCOME
            anonymous.append(ws)
        refused = await raw_connect(app, None)
        assert await closed_with(refused) == p.CLOSE_TOO_MANY_CONNECTIONS
        player = await raw_connect(app, token("real-player"))
        assert unpack(await player.recv())[0] == p.WELCOME  # a seat was kept for it
        for ws in [*anonymous, player]:
            await ws.close()


# -- decoders ------------------------------------------------------------------------------------


async def test_nesting_and_overflow_get_documented_codes(tmp_path):
    async with running_app(tmp_path) as app:
        ws = await raw_connect(app, token("nester", "spectator"))
        await ws.recv()
        # A LEADERBOARD whose board is nested 1,000 deep (built by hand: msgpack-python
        # refuses to pack it).
        deep = b"\x94\x30\x05\xa3top\x81\xa5board" + b"\x91" * 1000 + b"\xc0"
        await ws.send(deep)
        msg = await recv_until(ws, p.ERROR)
        assert msg[1] == p.E_TOO_LARGE and msg[3] == 5, msg
        # A cursor that is base64 of 1,500 nested "[": bad_cursor, over both transports.
        cursor = base64.urlsafe_b64encode(b"[" * 1500).decode().rstrip("=")
        await ws.send(p.encode_leaderboard(6, "top", {"board": "kills", "cursor": cursor}))
        msg = await recv_until(ws, p.ERROR)
        assert msg[1] == "bad_cursor" and msg[3] == 6, msg
        short = base64.urlsafe_b64encode(b"[" * 300).decode().rstrip("=")  # under the length cap
        await ws.send(p.encode_leaderboard(7, "top", {"board": "kills", "cursor": short}))
        msg = await recv_until(ws, p.ERROR)
        assert msg[1] == "bad_cursor" and msg[3] == 7, msg
        await ws.send(msgpack.packb([p.LEADERBOARD, 8, "top", {"board": "kills"}]))
        assert (await recv_until(ws, p.LEADERBOARD_REPLY))[1] == 8  # still served
        await ws.close()

        for c in (cursor, short):
            status, body = await http(app.port, "GET", f"/api/leaderboards/kills?cursor={c}")
            assert status == 400 and body["error"]["code"] == "bad_cursor", body
        admin = token("root", "admin")
        settings = urllib.parse.quote("[" * 1500 + "]" * 1500, safe="[]")
        status, body = await http(app.port, "POST", f"/api/matches?settings={settings}", admin)
        assert status == 400 and body["error"]["code"] == p.E_TOO_LARGE, body
        settings = urllib.parse.quote(json.dumps({"a": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}))
        status, body = await http(app.port, "POST", f"/api/matches?settings={settings}", admin)
        assert status == 400 and body["error"]["code"] == p.E_TOO_LARGE, body
        for ttl in ("inf", "nan", "1e400", "-1", "x"):
            status, body = await http(app.port, "POST", f"/api/tokens?player=a&ttl={ttl}", admin)
            assert status == 400 and body["error"]["code"] == p.E_INVALID_FIELD, (ttl, body)
        status, body = await http(app.port, "POST", "/api/tokens?player=a&ttl=60", admin)
        assert status == 201 and body["token"]


async def test_oversized_headers_and_request_lines_get_the_json_error(tmp_path):
    async with running_app(tmp_path) as app:
        for path, headers, status, code in (
            ("/ws", "Authorization: Bearer " + "a" * 20_000 + "\r\n", 431, "headers_too_large"),
            ("/ws?token=" + "a" * 20_000, "", 414, "request_line_too_long"),
            ("/healthz", "X-Big: " + "b" * 20_000 + "\r\n", 431, "headers_too_large"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
            async with asyncio.timeout(5):
                raw = await reader.read()
            writer.close()
            head, _, body = raw.partition(b"\r\n\r\n")
            assert int(head.split()[1]) == status, head
            assert b"application/json" in head
            assert json.loads(body)["error"]["code"] == code


# -- shutdown and signals (real processes) ----------------------------------------------------


async def test_a_client_that_stops_reading_does_not_hold_up_a_graceful_shutdown(tmp_path):
    # The peer never answers the close frame. Within the 5 s shutdown deadline the close
    # timeout (0.5 s) drops it, so the shutdown completes (exit 0, not the deadline's 1).
    proc, port = await start_server(
        tmp_path / "s.db", "--shutdown-timeout", "5", "--close-timeout", "0.5"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port, token("mute")))
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await proc.wait() == 0
    writer.close()


async def test_a_signal_repeated_at_once_is_one_stop_request(tmp_path):
    # GNU timeout signals the command, then its process group: the same request twice.
    proc, port = await start_server(tmp_path / "t.db", stderr=asyncio.subprocess.PIPE)
    for _ in range(2):
        assert (await http(port, "GET", "/healthz"))[0] == 200
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await proc.wait() == 0
        log = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "unfinished" not in log and "stopped" in log


async def test_a_later_second_signal_still_means_stop_now(tmp_path):
    # A shutdown held up by a peer that never answers the close (close timeout 60 s):
    # a second SIGTERM after the repeat window ends it at once, with status 1.
    proc, port = await start_server(
        tmp_path / "u.db", "--close-timeout", "60", stderr=asyncio.subprocess.PIPE
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port, token("mute")))
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.5)  # past the repeat window (server.app.SIGNAL_REPEAT_WINDOW_S)
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await proc.wait() == 1
        log = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "graceful shutdown unfinished after a second signal" in log
    writer.close()
