"""Shared helpers for the server tests: a real server on a free loopback port."""

from __future__ import annotations

import contextlib
import dataclasses
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
