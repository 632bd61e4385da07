"""SIGTERM during a busy match, then a restart: the server is a real child process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from games import GAMES, open_test_store
from server_helpers import FAST_SETTINGS, SECRET, token, upgrade_request

from client_sdk import GameClient
from replay import protocol as p
from replay.engine import ReplayEngine

ROOT = Path(__file__).resolve().parent.parent


async def start_server(
    db: Path, *flags: str, stderr: int = asyncio.subprocess.DEVNULL
) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "serve", "--port", "0", "--db", str(db),
        "--grace-period", "2", *flags,
        cwd=ROOT,
        env=os.environ | {"MATCHREPLAY_SECRET": SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "the server exited before it was ready"
            m = re.search(r"ws://[\d.]+:(\d+)/", line)
            if m:
                return proc, int(m.group(1))


async def http(port: int, method: str, path: str, tok: str | None = None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth_header = f"Authorization: Bearer {tok}\r\n" if tok else ""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth_header}\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.slow
async def test_sigterm_flushes_marks_interrupted_and_restart_replays(tmp_path):
    db = tmp_path / "shutdown.db"
    proc, port = await start_server(db)
    admin = token("root", "admin")
    settings = quote(json.dumps(FAST_SETTINGS | {"time_limit_s": 0}))
    match_ids = []
    for _ in range(2):
        status, created = await http(
            port, "POST", f"/api/matches?settings={settings}&start_players=3", admin
        )
        assert status == 201
        match_ids.append(created["match_id"])
    clients = [
        GameClient(f"ws://127.0.0.1:{port}/ws", token(f"p{i}"), backoff=(0.05, 0.1), max_attempts=2)
        for i in range(6)
    ]
    for i, c in enumerate(clients):
        await c.connect()
        await c.join(match_ids[i % 2])

    async def play(c: GameClient) -> list:
        seen = []
        async for m in c:
            seen.append(m)
            if isinstance(m, p.Update) and c.state.alive[c.slot]:
                c.send_input([np.cos(c.tick), np.sin(c.tick), c.tick / 10, c.tick % 7 == 0])
        return seen

    tasks = [asyncio.create_task(play(c)) for c in clients]
    async with asyncio.timeout(10):
        while min(c.acked_seq for c in clients) < 20:
            await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await proc.wait() == 0
        seen = await asyncio.gather(*tasks)
    for c, messages in zip(clients, seen, strict=True):
        assert isinstance(messages[-1], p.Ended) and messages[-1].status == "interrupted"
        assert c.ws.close_code == p.CLOSE_GOING_AWAY

    # Every acknowledged input is durable: the store has every tick a client saw acked.
    async with open_test_store(str(db)) as store:
        for c in clients:
            record = await store.get_match(c.match_id)
            assert record.status == "interrupted"
            assert c.acked_tick <= record.last_tick
            assert c.last_seq == record.version  # the clients saw every stored event

    # After a restart the matches are listed as interrupted, and their replays work.
    proc, port = await start_server(db)
    try:
        status, listed = await http(port, "GET", "/api/matches", admin)
        assert status == 200
        assert {m["match_id"]: m["status"] for m in listed} == dict.fromkeys(
            match_ids, "interrupted"
        )
        status, body = await http(port, "POST", f"/api/matches/{match_ids[0]}/start", admin)
        assert status == 409 and body["error"]["code"] == "match_over"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    async with open_test_store(str(db)) as store:
        engine = ReplayEngine(store, GAMES)
        for c in clients[:2]:
            record = await store.get_match(c.match_id)
            replayed = await engine.state_at(c.match_id, record.last_tick)
            assert np.array_equal(replayed.x, c.state.x) and np.array_equal(replayed.y, c.state.y)
            assert c.rules.scoreboard(replayed) == c.rules.scoreboard(c.state)


async def test_a_stuck_shutdown_ends_at_the_deadline_and_says_what_it_waited_for(tmp_path):
    # A peer that never answers the close frame holds the graceful shutdown (websockets
    # waits out its close timeout): the deadline ends it, with status 1 and a report.
    db = tmp_path / "stuck.db"
    proc, port = await start_server(db, "--shutdown-timeout", "1", stderr=asyncio.subprocess.PIPE)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(port, token("mute")))
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    proc.send_signal(signal.SIGTERM)  # then never read again: the close frame stays unread
    async with asyncio.timeout(20):
        assert await proc.wait() == 1
        log = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
    assert "graceful shutdown unfinished after 1 s" in log
    writer.close()
    proc, port = await start_server(db)  # the store is intact: it opens and serves
    status, health = await http(port, "GET", "/healthz")
    assert status == 200, health
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
