"""The fan-out's wire and its edges: prepared frames (server/prepared.py) are the bytes
``websockets.broadcast()`` writes, fall back to it when they cannot be; stalled readers
are dropped at once (server/closing.py); the Spectator SDK reconnects and comes back
where it was. Real loopback sockets, a real server, real SQLite."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import zlib

from games import GAMES
from server_helpers import FAST_SETTINGS, running_app, stalled_client, start_bots, token, url
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader

from client_sdk.game_client import ClientClosed
from client_sdk.spectator import Spectator
from replay import protocol as p
from replay.engine import ReplayEngine
from server.prepared import Prepared

SIZES = [0, 1, 125, 126, 65535, 65536, 70000]
"""Payload lengths around the header's length encodings (7-bit, 16-bit, 64-bit)."""


async def _raw_client(port: int, extensions: str | None = None) -> socket.socket:
    """A websocket client on a bare socket: the test reads the server's exact bytes."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)  # byte by byte: frames may follow at once
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def _read(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(20):
        while len(data) < n:
            chunk = await loop.sock_recv(sock, n - len(data))
            assert chunk, "connection closed"
            data += chunk
    return data


def _frames(wire: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(wire)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("truncated frame")
    return frames


def _by_peer(conns: list[ServerConnection], sock: socket.socket) -> ServerConnection:
    return next(c for c in conns if c.remote_address == sock.getsockname())


async def test_prepared_frames_are_the_bytes_broadcast_writes_and_fall_back_to_it():
    conns: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        conns.append(ws)
        await ws.wait_closed()

    messages = [os.urandom(n) for n in SIZES]
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        a, b = await _raw_client(port), await _raw_client(port)
        while len(conns) < 2:
            await asyncio.sleep(0.01)
        ca, cb = _by_peer(conns, a), _by_peer(conns, b)
        for m in messages:
            Prepared(m).write(ca)
            broadcast([cb], m)
        total = sum(len(Prepared(m)) for m in messages)
        wire_a, wire_b = await _read(a, total), await _read(b, total)
        assert wire_a == wire_b
        frames = _frames(wire_a)
        assert [(f.opcode, f.fin, f.data) for f in frames] == [
            (Opcode.BINARY, True, m) for m in messages
        ]

        # Fallback 1: a fragmented message is being sent. Like broadcast(), nothing
        # may land between its fragments: the prepared frame is skipped there.
        release = asyncio.Event()

        async def fragments():
            yield b"part1"
            await release.wait()
            yield b"part2"

        sending = asyncio.create_task(ca.send(fragments()))
        while ca.send_in_progress is None:
            await asyncio.sleep(0)
        Prepared(b"intruder").write(ca)
        release.set()
        await sending
        Prepared(b"after").write(ca)
        got = _frames(await _read(a, 4 * 2 + 5 + 5 + 5))
        assert [(f.opcode, f.fin, f.data) for f in got] == [
            (Opcode.BINARY, False, b"part1"),
            (Opcode.CONT, False, b"part2"),
            (Opcode.CONT, True, b""),  # websockets ends a fragmented message so
            (Opcode.BINARY, True, b"after"),
        ]
        for s in (a, b):
            s.close()

    # Fallback 2: an extension was negotiated (permessage-deflate): broadcast() frames
    # it per connection, compressed, which the prepared (uncompressed) bytes are not.
    conns.clear()
    async with serve(handler, "127.0.0.1", 0, compression="deflate") as server:
        port = server.sockets[0].getsockname()[1]
        c = await _raw_client(port, "permessage-deflate")
        while not conns:
            await asyncio.sleep(0.01)
        assert conns[0].protocol.extensions
        message = b"spectators " * 200
        Prepared(message).write(conns[0])
        head = await _read(c, 2)
        assert head[0] == 0xC2  # FIN, RSV1 (compressed), BINARY
        body = await _read(c, head[1] & 0x7F)
        assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == message
        c.close()


async def test_stalled_spectators_and_players_are_dropped_promptly(tmp_path):
    # Keepalive pings far away, like websockets' close timeout below.
    async with running_app(
        tmp_path,
        spectator_queue_bytes=4096,
        spectator_stall_seconds=0.5,
        send_buffer_bytes=4096,
        ping_interval=120.0,
        ping_timeout=120.0,
    ) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 30.0})
        bots = await start_bots(app, match.match_id, 4)
        watch, join = p.encode_watch(match.match_id, "live"), p.encode_join(match.match_id, None)
        tok = token("stalled", "spectator")
        stalled = [await stalled_client(app.port, tok, watch) for _ in range(3)]
        player = await stalled_client(app.port, tok, join)  # JOINed: the undelayed player feed
        while len(app.server.connections) < 4 + 4:
            await asyncio.sleep(0.01)
        socks = [*stalled, player]
        conns = [_by_peer(list(app.server.connections), s) for s in socks]
        for conn in conns:
            # Kernel buffers are outside our control: shrink the server's side too.
            conn.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 2048
            )
            # websockets' own close timeout (10 s) put out of reach: only the server's
            # slow-consumer handling can end these connections within the test.
            conn.close_timeout = 3600.0
        try:
            async with asyncio.timeout(30):  # generous: the drop itself is immediate
                while any(c.state is not State.CLOSED for c in conns):  # TCP connection gone
                    await asyncio.sleep(0.05)
        except TimeoutError:
            for conn in conns:  # so that the server's shutdown does not wait an hour
                conn.transport.abort()
            raise
        assert all(c.transport.is_closing() for c in conns)
        # Stalled spectators: dropped at once, no close frame queued behind unread data.
        assert all(c.protocol.close_sent is None for c in conns[:3])
        # The player feed's slow consumer got its 4010 frame, then the grace ran out.
        assert conns[3].protocol.close_sent.code == p.CLOSE_SLOW_CONSUMER
        assert all(c.transport.get_write_buffer_size() == 0 for c in conns)  # memory freed
        closed = app.metrics.registry.get_sample_value("matchreplay_slow_consumers_total")
        assert closed >= len(conns)
        assert match.status == "running"  # the match went on
        await match.stop("ended", "test over")
        await bots
        for s in socks:
            s.close()


async def test_spectator_reconnects_where_it_was_and_stops_on_a_final_close(tmp_path):
    admin = token("root", "admin")  # no delay: the live edge is the match's tick
    async with running_app(tmp_path) as app:
        port = app.port
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 30.0})
        bots = await start_bots(app, match.match_id, 2)
        while match.tick < 90:
            await asyncio.sleep(0.02)
        spec = await Spectator.connect(url(app), admin)
        await spec.watch(match.match_id, 0)
        await spec.play(1.0)  # 90 ticks behind the edge, following at 1x: stays in replay
        engine = ReplayEngine(app.store, GAMES)
        async for frame in spec:
            if frame.tick >= 15:
                break
        # The network drops (no close frame): the client sees 1006.
        at = spec.tick
        server_conn = next(
            c for c in app.server.connections if c.remote_address == spec.ws.local_address
        )
        server_conn.transport.abort()
        reset = None
        async for frame in spec:
            if frame.reset:
                reset = frame
            if reset is not None and frame.tick >= reset.tick + 10:
                break
        assert spec.reconnects == 1
        assert reset is not None and reset.tick == at  # WATCHed again at its tick ...
        assert spec.status.mode == "replay" and spec.status.speed == 1.0  # ... and PLAYs
        have, tick = spec.rules.state_hash(spec.state), spec.tick
        assert have == spec.rules.state_hash(await engine.state_at(match.match_id, tick))
        paused = await spec.pause()
        await match.stop("ended", "test over")
        await bots
    # The server restarts on the same database and port: the spectator comes back paused
    # at the same tick, its state the new server's state_at.
    async with running_app(tmp_path, port=port) as app:
        async with asyncio.timeout(30):
            while spec.reconnects < 2:
                await asyncio.sleep(0.05)
        assert spec.tick == paused.tick and spec.status.mode == "paused"
        want = await ReplayEngine(app.store, GAMES).state_at(match.match_id, paused.tick)
        assert spec.rules.state_hash(spec.state) == spec.rules.state_hash(want)
        status = await spec.step(3)  # controls work on the new connection
        assert status.tick == paused.tick + 3 == spec.tick
    # Restarted with another secret: the token is refused (4001), which reconnecting
    # cannot fix: iteration raises instead of trying on.
    async with running_app(tmp_path, port=port, secret="another-secret-for-the-restart-0123456789"):
        closed = None
        try:
            async with asyncio.timeout(30):
                async for _ in spec:
                    pass
        except ClientClosed as exc:
            closed = exc
        assert closed is not None and closed.code == p.CLOSE_UNAUTHORIZED
        try:
            await spec.pause()
            raise AssertionError("a control after the final close")
        except ClientClosed:
            pass
        await spec.close()
