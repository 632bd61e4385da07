"""Spectator fan-out: one live 10-player bot match watched by 1,000 spectators.

    .venv/bin/python benchmarks/fanout.py [--spectators 1000] [--seconds 15] [--stall-seconds 60]

Processes: the matchreplay server (a child), the 10 bots (a child), and the
spectators spread over ``--loaders`` child processes on loopback. Printed:

1. delivered FRAMEs/s and server CPU seconds per 1,000 delivered frames
   (utime+stime of the server from /proc/<pid>/stat over the window);
2. the baseline, in the same run: a bare websockets server pushing frames of
   the same size at the same rate with ``websockets.broadcast()`` to the same
   number of clients; the ratio baseline CPU/frame over ours (target >= 0.7);
3. 100 stalled spectators (tiny receive buffers, never read) for
   ``--stall-seconds``: the server's peak RSS and its growth after the first 5 s
   (target: none).

The machine is shared (2 cores): figures are as measured here, ratios are what
to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay import protocol as p

SECRET = "fanout-benchmark-secret-0123456789abcdef"
TICK_RATE = 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- children --------------------------------------------------------------------------------


def server_main(db: str, out: mp.Queue) -> None:
    from server.app import run
    from server.config import Settings

    settings = Settings(
        host="127.0.0.1", port=0, db=db, secret=SECRET, synchronous="NORMAL", max_connections=5000
    )

    async def ready(app) -> None:  # type: ignore[no-untyped-def]
        match = await app.lobby.create(
            "arena",
            {"tick_rate": TICK_RATE, "time_limit_s": 0, "min_players": 10, "max_players": 10},
            start_players=10,
        )
        out.put((app.port, match.match_id))

    asyncio.run(run(settings, ready))


def bots_main(url: str, match_id: str) -> None:
    from client_sdk.bots import run_bots
    from server import auth

    tokens = [auth.issue(SECRET, f"bot{i}", "player") for i in range(10)]
    asyncio.run(run_bots(url, match_id, tokens))


def baseline_main(size: int, rate: float, out: mp.Queue) -> None:
    from websockets.asyncio.server import broadcast, serve

    async def main() -> None:
        conns: set = set()

        async def handler(ws) -> None:  # type: ignore[no-untyped-def]
            conns.add(ws)
            try:
                await ws.wait_closed()
            finally:
                conns.discard(ws)

        async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=16) as server:
            out.put(server.sockets[0].getsockname()[1])
            frame = p.frame(1, os.urandom(max(1, size - 8)))
            period = 1.0 / rate
            next_at = time.monotonic()
            while True:
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if conns:
                    broadcast(conns, frame)

    asyncio.run(main())


def loader_main(
    url: str, match_id: str | None, n: int, start: float, end: float, out: mp.Queue
) -> None:
    from websockets.asyncio.client import connect

    from server import auth

    async def one(counts: list[int]) -> None:
        tok = auth.issue(SECRET, "viewer", "spectator")
        async with connect(
            f"{url}?token={tok}",
            subprotocols=["matchreplay.v1"],  # type: ignore[list-item]
            compression=None,
            open_timeout=60,
            max_size=1 << 24,
        ) as ws:
            if match_id is not None:
                await ws.send(p.encode_watch(match_id, "live"))
            async for msg in ws:
                now = time.time()
                if now >= end:
                    return
                if now >= start and msg[1:2] == b"\x43":  # [67, ...]: a FRAME
                    counts[0] += 1
                    counts[1] += len(msg)

    async def main() -> None:
        counts = [0, 0]
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(counts)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        await asyncio.gather(*tasks, return_exceptions=True)
        out.put(tuple(counts))

    asyncio.run(main())


# -- phases ------------------------------------------------------------------------------------


def measure(
    pid: int,
    url: str,
    match_id: str | None,
    spectators: int,
    loaders: int,
    warmup: float,
    seconds: float,
) -> tuple[float, float, int]:
    """(frames/s, CPU seconds per 1,000 frames, mean frame bytes) over the window."""
    out: mp.Queue = mp.Queue()
    start = time.time() + warmup
    end = start + seconds
    procs = [
        mp.Process(target=loader_main, args=(url, match_id, spectators // loaders, start, end, out))
        for _ in range(loaders)
    ]
    for pr in procs:
        pr.start()
    time.sleep(max(0.0, start - time.time()))
    cpu0 = cpu_seconds(pid)
    time.sleep(max(0.0, end - time.time()))
    cpu = cpu_seconds(pid) - cpu0
    frames = nbytes = 0
    for _ in procs:
        f, b = out.get(timeout=120)
        frames += f
        nbytes += b
    for pr in procs:
        pr.join(30)
    return frames / seconds, cpu / max(frames, 1) * 1000, nbytes // max(frames, 1)


async def stalled_clients(port: int, match_id: str, n: int) -> list[socket.socket]:
    from server import auth

    loop = asyncio.get_running_loop()
    socks = []
    tok = auth.issue(SECRET, "stalled", "spectator")
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET /ws?token={tok} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: matchreplay.v1\r\n\r\n"
            ).encode(),
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1024)
        payload = p.encode_watch(match_id, "live")
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await loop.sock_sendall(sock, bytes([0x82, 0x80 | len(payload)]) + mask + body)
        socks.append(sock)
    return socks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spectators", type=int, default=1000)
    ap.add_argument("--loaders", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--stall-seconds", type=float, default=60.0)
    args = ap.parse_args()
    ctx_out: mp.Queue = mp.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        server = mp.Process(target=server_main, args=(os.path.join(tmp, "fanout.db"), ctx_out))
        server.start()
        port, match_id = ctx_out.get(timeout=60)
        url = f"ws://127.0.0.1:{port}/ws"
        bots = mp.Process(target=bots_main, args=(url, match_id))
        bots.start()
        time.sleep(2.0)
        # The match alone (ticks, bots' inputs, appends): subtracted to get the fan-out's cost.
        cpu0 = cpu_seconds(server.pid)
        time.sleep(args.seconds / 3)
        match_cpu_s = (cpu_seconds(server.pid) - cpu0) / (args.seconds / 3)
        warmup = 5.0 + args.spectators / 250
        fps, cpu_k, size = measure(
            server.pid, url, match_id, args.spectators, args.loaders, warmup, args.seconds
        )
        print(
            f"matchreplay: {args.spectators} spectators, {fps:,.0f} frames/s delivered, "
            f"{cpu_k:.4f} server CPU s per 1,000 frames, {size} bytes/frame"
        )

        bout: mp.Queue = mp.Queue()
        base = mp.Process(target=baseline_main, args=(size, TICK_RATE, bout))
        base.start()
        bport = bout.get(timeout=30)
        bfps, bcpu_k, _ = measure(
            base.pid,
            f"ws://127.0.0.1:{bport}/ws",
            None,
            args.spectators,
            args.loaders,
            warmup,
            args.seconds,
        )
        base.terminate()
        base.join()
        net_k = max(1e-9, cpu_k - match_cpu_s / max(fps, 1) * 1000)
        print(
            f"  of which the match itself (no spectators: {match_cpu_s:.3f} CPU s/s): "
            f"fan-out alone {net_k:.4f} CPU s per 1,000 frames"
        )
        ratio = bcpu_k / net_k
        print(
            f"baseline websockets.broadcast(): {bfps:,.0f} frames/s, "
            f"{bcpu_k:.4f} CPU s per 1,000 frames"
        )
        print(f"ratio (baseline CPU per frame / our fan-out's): {ratio:.2f} (target >= 0.7)")

        async def stall() -> None:
            socks = await stalled_clients(port, match_id, 100)
            samples: list[tuple[float, int]] = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.stall_seconds:
                samples.append((time.monotonic() - t0, rss_bytes(server.pid)))
                await asyncio.sleep(0.5)
            for s in socks:
                s.close()
            peak = max(r for _, r in samples)
            early = max((r for t, r in samples if t <= 5.0), default=peak)
            print(
                f"100 stalled spectators for {args.stall_seconds:g} s: peak RSS "
                f"{peak / 2**20:.1f} MiB, growth after the first 5 s "
                f"{(peak - early) / 2**20:+.1f} MiB"
            )

        asyncio.run(stall())
        bots.terminate()
        server.terminate()  # SIGTERM: graceful shutdown
        server.join(30)
        bots.join(10)
    print("(2 shared cores: absolute figures are noisy; compare the ratio)")


if __name__ == "__main__":
    main()
