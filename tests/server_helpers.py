"""Shared helpers for the server tests: a real server on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from server import auth
from server.app import App
from server.config import Settings

SECRET = "test-secret-not-for-production-0123456789"

# Small and fast: 30 Hz, short matches, a short grace period.
FAST_SETTINGS = {"tick_rate": 30, "time_limit_s": 3.0, "min_players": 2, "max_players": 8}


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=0,
        db=str(tmp_path / "server.db"),
        data_dir=str(tmp_path),
        secret=SECRET,
        grace_period=5.0,
        ping_interval=5.0,
        ping_timeout=5.0,
        # Admission by measured load is off: a busy test machine must not refuse players
        # at random (test_server_admission turns it on where it is the subject).
        max_cpu=0.0,
        max_tick_lateness_ms=0.0,
    )
    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_app(tmp_path: Path, **overrides: object) -> AsyncIterator[App]:
    app = App(settings_for(tmp_path, **overrides))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def url(app: App) -> str:
    return f"ws://127.0.0.1:{app.port}/ws"


def token(player: str, role: str = "player", match: str = "*", ttl: float = 600) -> str:
    return auth.issue(SECRET, player, role, match, ttl)


async def raw_connect(app: App, tok: str | None, **kwargs: object):
    """A plain websockets client (no SDK); returns (connection, decoded WELCOME or None)."""
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    ws = await connect(
        url(app), subprotocols=["matchreplay.v1"], additional_headers=headers, **kwargs
    )
    return ws


def unpack(frame: bytes) -> list:
    import msgpack

    return msgpack.unpackb(frame, raw=False, strict_map_key=False)


# -- raw websocket clients (hand-built frames: for what the SDK would never send) -------


def client_frame(payload: bytes, opcode: int = 2, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame, masked with a random key (``masked=False`` breaks the protocol)."""
    import os
    import struct

    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def upgrade_request(port: int, tok: str | None) -> bytes:
    """The HTTP upgrade to ``/ws`` with the matchreplay subprotocol and a bearer token."""
    import base64
    import os

    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {tok}\r\n" if tok else ""
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: matchreplay.v1\r\n{auth}\r\n"
    ).encode()


async def stalled_client(port: int, tok: str, first: bytes):
    """A client that upgrades, sends the message ``first`` (WATCH, JOIN...), then never
    reads again, with a tiny receive buffer: the server's writes to it back up at once."""
    import asyncio
    import socket

    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request(port, tok))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)  # byte by byte: nothing after the head is read
    assert head.startswith(b"HTTP/1.1 101"), head
    await loop.sock_sendall(sock, client_frame(first))
    return sock


def http(app: App, method: str, path: str, tok: str | None = None) -> tuple[int, dict | list | str]:
    req = urllib.request.Request(f"http://127.0.0.1:{app.port}{path}", method=method)
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
            status = resp.status
            ctype = resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        body, status, ctype = exc.read().decode(), exc.code, exc.headers["Content-Type"]
    return status, json.loads(body) if ctype == "application/json" else body


async def call(app: App, method: str, path: str, tok: str | None = None):
    return await asyncio.to_thread(http, app, method, path, tok)


async def start_bots(app: App, match_id: str, n: int = 3) -> asyncio.Task:
    """``n`` SDK bots playing ``match_id`` in the background, once the match started."""
    from client_sdk.bots import run_bots

    tokens = [token(f"b{i}") for i in range(n)]
    task = asyncio.create_task(run_bots(url(app), match_id, tokens))
    while app.lobby.live[match_id].status == "created":
        await asyncio.sleep(0.02)
    return task
