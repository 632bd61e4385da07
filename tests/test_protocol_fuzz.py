"""Protocol fuzzing against a real server process (issue 18): random and mutated frames
from several connections of every kind, bounded in time and seeded (the seed is printed
on failure). Asserted: no traceback in the server's log, only documented ERROR and close
codes, and a well-behaved player's acks still flowing."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import time
from pathlib import Path

import msgpack
from server_helpers import token
from test_server_shutdown import http, start_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from client_sdk import GameClient
from replay import protocol as p

ROOT = Path(__file__).resolve().parent.parent
FUZZ_SECONDS = 12.0
SEED = 18_2026
FUZZERS = 4

_DOCS = (ROOT / "docs" / "protocol.md").read_text() + (
    ROOT / "docs" / "leaderboards.md"
).read_text()
DOCUMENTED_ERRORS = frozenset(re.findall(r"`([a-z_]+)`", _DOCS))
"""Every code written as `code` in the protocol and leaderboard docs: an ERROR code a
client can meet is documented there (the protocol's own are p.ERROR_CODES)."""
DOCUMENTED_CLOSES = p.CLOSE_CODES | {1006}  # 1006: the client saw the TCP connection drop


def test_every_protocol_code_is_documented():
    assert p.ERROR_CODES <= DOCUMENTED_ERRORS
    table = (ROOT / "docs" / "protocol.md").read_text()
    for code in p.CLOSE_CODES:
        assert re.search(rf"^\| {code} \|", table, re.M), f"close code {code} not in the table"


def _value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 1:
        return rng.randint(-5, 100)
    if kind == 2:
        return rng.choice([0.5, -1.0, 1e309, float("nan"), 3.0])
    if kind == 3:
        return rng.choice(["", "live", "finished", "chat", "start", "end", "kills", "x" * 70])
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return rng.randbytes(rng.randrange(8))
    if kind == 6:
        return "".join(rng.choice("aé\x00/%[") for _ in range(rng.randrange(6)))
    if kind in (7, 8):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(["board", "text", "wait", "limit", "cursor", "k"]): _value(rng, depth + 1)}


def _frame(rng: random.Random, match_id: str, valid: list[bytes]) -> bytes | str:
    roll = rng.random()
    if roll < 0.3:  # a valid frame, mutated: flipped bytes, cut, or extended
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data)) :]
            else:
                data += rng.randbytes(rng.randrange(1, 6))
        return bytes(data)
    if roll < 0.4:
        return rng.choice(valid)
    if roll < 0.42:
        return "[1, 2]"  # a text frame
    if roll < 0.44:
        depth = rng.choice([20, 200, 1000])
        return b"\x94\x30\x01\xa3top\x81\xa5board" + b"\x91" * depth + b"\xc0"
    code = rng.choice([*p.CLIENT_TYPES, 0, 5, 99, -1])
    fields = [_value(rng) for _ in range(rng.randrange(5))]
    if rng.random() < 0.3 and fields:
        fields[0] = match_id
    return msgpack.packb([code, *fields], use_bin_type=True)


async def _fuzzer(
    port: int, n: int, match_id: str, stop_at: float, seen: dict[str, set], rng: random.Random
) -> None:
    role = ["player", "spectator", "admin", None][n % 4]
    tok = token(f"fuzz{n}", role) if role else None
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    valid = [
        p.encode_join(match_id, None),
        p.encode_join(match_id, 0),
        p.encode_inputs([(1, [0.1, 0.2, 0.3, False])]),
        p.encode_command(1, "chat", {"text": "hi"}),
        p.encode_leaderboard(2, "top", {"board": "kills"}),
        p.encode_list(3),
        p.encode_watch(match_id, 0),
        p.encode_seek(5),
        p.encode_leave(),
    ]
    while time.monotonic() < stop_at:
        try:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws",
                subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers=headers,
                max_size=None,
            )
        except InvalidStatus:
            await asyncio.sleep(0.05)
            continue

        async def read(ws=ws) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for frame in ws:
                    msg = msgpack.unpackb(frame, raw=False, strict_map_key=False)
                    if msg[0] == p.ERROR:
                        seen["errors"].add(msg[1])

        reader = asyncio.create_task(read())
        with contextlib.suppress(ConnectionClosed):
            for _ in range(rng.randrange(20, 400)):
                if time.monotonic() >= stop_at:
                    break
                await ws.send(_frame(rng, match_id, valid))
                if rng.random() < 0.1:
                    await asyncio.sleep(0.01)
            await ws.close()
        await reader
        if ws.close_code is not None:
            seen["closes"].add(ws.close_code)
        else:
            seen["closes"].add(1006)


async def test_fuzzed_frames_from_many_connections(tmp_path):
    rng = random.Random(SEED)
    proc, port = await start_server(
        tmp_path / "fuzz.db", "--max-cpu", "0", "--max-tick-lateness-ms", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    log_task = asyncio.create_task(proc.stderr.read())  # type: ignore[union-attr]
    try:
        admin = token("root", "admin")
        settings = '{"time_limit_s":0,"tick_rate":30}'
        status, match = await http(
            port, "POST", f"/api/matches?settings={settings}&start_players=2", admin
        )
        assert status == 201, match
        url = f"ws://127.0.0.1:{port}/ws"
        players = [GameClient(url, token(name)) for name in ("good", "mate")]
        for c in players:
            await c.connect()
            await c.join(match["match_id"])
        acks: list[tuple[float, int]] = []

        async def play(c: GameClient) -> None:
            async for message in c:
                if isinstance(message, p.Update) and c.slot is not None:
                    if c.state.alive[c.slot]:
                        c.send_input([0.3, 0.1, 0.2, False])
                    if c is players[0]:
                        acks.append((time.monotonic(), c.acked_seq))

        plays = [asyncio.create_task(play(c)) for c in players]
        seen: dict[str, set] = {"errors": set(), "closes": set()}
        stop_at = time.monotonic() + FUZZ_SECONDS
        await asyncio.gather(
            *(
                _fuzzer(port, n, match["match_id"], stop_at, seen, random.Random(rng.random()))
                for n in range(FUZZERS)
            )
        )
        # The well-behaved player's acks still advance after the fuzzing.
        mark = acks[-1][1] if acks else 0
        async with asyncio.timeout(10):
            while not acks or acks[-1][1] <= mark:
                await asyncio.sleep(0.05)
        assert len(seen["errors"]) > 3, seen  # the fuzzer reached the decoders
        assert seen["errors"] <= DOCUMENTED_ERRORS, (SEED, seen["errors"] - DOCUMENTED_ERRORS)
        assert seen["closes"] <= DOCUMENTED_CLOSES, (SEED, seen["closes"])
        for c in players:
            await c.close()
        for t in plays:
            t.cancel()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
        log = (await log_task).decode()
    assert "Traceback" not in log, f"seed {SEED}:\n{log[-3000:]}"
    assert " ERROR " not in log, f"seed {SEED}:\n{log[-3000:]}"
