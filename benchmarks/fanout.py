"""Spectator fan-out: one live 10-player bot match watched by 1,000 spectators.

    .venv/bin/python benchmarks/fanout.py [--spectators 1000] [--seconds 15] [--stall-seconds 60]

(``--stall-seconds 0`` skips the stall phase; the server pid is printed on stderr, for py-spy.)

Processes: the matchreplay server (a child), the 10 bots (a child), and the
spectators spread over ``--loaders`` child processes on loopback. Printed:

1. delivered FRAMEs/s and server CPU seconds per 1,000 delivered frames
   (utime+stime of the whole server process from /proc/<pid>/stat over the
   window: the match, its bots' inputs and appends included), and the CPU share
   of the server and of the load generators (a note when the cores were saturated);
2. the baseline, in the same run: a bare websockets server pushing frames of
   the same size at the tick rate with ``websockets.broadcast()`` to the same
   number of clients (the same client code); the raw ratio baseline CPU/frame over
   our whole server's (target >= 0.7, the verdict), and for information the ratio
   with the match's own CPU (measured before the spectators came) subtracted;
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
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay import protocol as p

SECRET = "fanout-benchmark-secret-0123456789abcdef"
TICK_RATE = 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


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
    """``n`` spectators in one process, as light as a websocket client gets: websockets'
    sans-I/O ClientProtocol on a bare asyncio BufferedProtocol (no reader task, no
    message queue). It answers pings and counts FRAME messages between ``start`` and ``end``.
    The same code watches our server and the baseline, so both are measured alike."""
    from websockets.client import ClientProtocol
    from websockets.frames import Opcode
    from websockets.http11 import Response
    from websockets.uri import parse_uri

    from server import auth

    tok = auth.issue(SECRET, "viewer", "spectator")
    uri = parse_uri(f"{url}?token={tok}")
    watch = p.encode_watch(match_id, "live") if match_id is not None else None
    counts = [0, 0]
    counting = [False]

    # A BufferedProtocol reads with recv_into() this one buffer; a plain Protocol is read
    # with recv(256 KiB), whose allocation costs more than the parsing (server/connection.py).
    read_buffer = memoryview(bytearray(64 * 1024))

    class Viewer(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.ws = ClientProtocol(uri, subprotocols=[p.SUBPROTOCOL], max_size=None)  # type: ignore[list-item]
            self.transport: asyncio.Transport | None = None
            self.closed = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            self.ws.send_request(self.ws.connect())
            self.flush()

        def get_buffer(self, sizehint: int) -> memoryview:
            return read_buffer

        def buffer_updated(self, nbytes: int) -> None:
            ws = self.ws
            ws.receive_data(bytes(read_buffer[:nbytes]))
            for ev in ws.events_received():
                if isinstance(ev, Response):
                    if watch is not None:
                        ws.send_binary(watch)
                elif ev.opcode is Opcode.BINARY and counting[0] and ev.data[1:2] == b"\x43":
                    counts[0] += 1  # [67, ...]: a FRAME
                    counts[1] += len(ev.data)
            self.flush()

        def flush(self) -> None:
            for data in self.ws.data_to_send():
                if data:
                    self.transport.write(data)  # type: ignore[union-attr]

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.closed.done():
                self.closed.set_result(None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        viewers = []
        for i in range(n):
            _, v = await loop.create_connection(Viewer, uri.host, uri.port)
            viewers.append(v)
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu0 = cpu_seconds(os.getpid())
        counting[0] = True
        await asyncio.sleep(max(0.0, end - time.time()))
        counting[0] = False
        cpu = cpu_seconds(os.getpid()) - cpu0
        out.put((counts[0], counts[1], cpu))
        for v in viewers:
            v.transport.close()

    asyncio.run(main())


# -- phases ------------------------------------------------------------------------------------


class Window(NamedTuple):
    fps: float
    """FRAMEs delivered per second (counted by the spectators)."""
    cpu_k: float
    """Server CPU seconds per 1,000 delivered frames."""
    size: int
    """Mean FRAME bytes."""
    server_share: float
    """The server's CPU over the window, in cores."""
    load_share: float
    """The load processes' CPU over the window, in cores."""


def measure(
    pid: int,
    url: str,
    match_id: str | None,
    spectators: int,
    loaders: int,
    warmup: float,
    seconds: float,
) -> Window:
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
    load_cpu = 0.0
    for _ in procs:
        f, b, c = out.get(timeout=120)
        frames += f
        nbytes += b
        load_cpu += c
    for pr in procs:
        pr.join(30)
    return Window(
        frames / seconds,
        cpu / max(frames, 1) * 1000,
        nbytes // max(frames, 1),
        cpu / seconds,
        load_cpu / seconds,
    )


def describe(name: str, w: Window, spectators: int) -> str:
    line = (
        f"{name}: {w.fps:,.0f} frames/s delivered ({w.fps / spectators:.1f}/s per spectator at"
        f" {TICK_RATE} ticks/s), {w.cpu_k:.4f} server CPU s per 1,000 frames, {w.size} bytes/frame;"
        f" CPU in cores: server {w.server_share:.2f}, load generators {w.load_share:.2f}"
    )
    if w.server_share + w.load_share > 0.9 * CORES:
        line += "\n  (the cores were saturated: frames/s is limited by the machine, not the server)"
    return line


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
    ap.add_argument("--loaders", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--stall-seconds", type=float, default=60.0)
    args = ap.parse_args()
    ctx_out: mp.Queue = mp.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        server = mp.Process(target=server_main, args=(os.path.join(tmp, "fanout.db"), ctx_out))
        server.start()
        port, match_id = ctx_out.get(timeout=60)
        print(f"(server pid {server.pid})", file=sys.stderr)
        url = f"ws://127.0.0.1:{port}/ws"
        bots = mp.Process(target=bots_main, args=(url, match_id))
        bots.start()
        time.sleep(2.0)
        # The match alone (ticks, bots' inputs, appends): subtracted to get the fan-out's cost.
        cpu0 = cpu_seconds(server.pid)
        time.sleep(args.seconds / 3)
        match_cpu_s = (cpu_seconds(server.pid) - cpu0) / (args.seconds / 3)
        warmup = 5.0 + args.spectators / 250
        ours = measure(
            server.pid, url, match_id, args.spectators, args.loaders, warmup, args.seconds
        )
        print(describe(f"matchreplay, {args.spectators} spectators", ours, args.spectators))
        # The same frames pushed by websockets.broadcast() from a bare server, same clients.
        bout: mp.Queue = mp.Queue()
        base = mp.Process(target=baseline_main, args=(ours.size, TICK_RATE, bout))
        base.start()
        bport = bout.get(timeout=30)
        baseline = measure(
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
        print(describe("baseline websockets.broadcast()", baseline, args.spectators))
        alone_k = max(1e-9, ours.cpu_k - match_cpu_s / max(ours.fps, 1) * 1000)
        raw = baseline.cpu_k / ours.cpu_k
        print(
            f"  fan-out alone (ours minus the match without spectators, {match_cpu_s:.3f} CPU s/s):"
            f" {alone_k:.4f} CPU s per 1,000 frames, ratio {baseline.cpu_k / alone_k:.2f}"
        )
        print(
            f"ratio, raw (baseline server CPU per frame / our whole server's, match included): "
            f"{raw:.2f} (target >= 0.7: {'met' if raw >= 0.7 else 'NOT met'})"
        )

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

        if args.stall_seconds > 0:
            asyncio.run(stall())
        bots.terminate()
        server.terminate()  # SIGTERM: graceful shutdown
        server.join(30)
        bots.join(10)
    print("(2 shared cores: absolute figures are noisy; compare the ratio)")


if __name__ == "__main__":
    main()
