"""Ingest capacity of the match server, against a bare websockets baseline.

The server runs as its own process (SQLite, synchronous=FULL: acknowledged means
durable); players run in other processes (benchmarks/loadgen.py: lean protocol
clients, so the load takes as little of the shared cores as it can), each player
sending 30 inputs/s. Printed, per server:

(a) capacity: server CPU seconds per player-second of play, as "players per fully
    used core"; p50/p99 input-to-ack latency; tick overruns; durable events/s.
    The baseline is a bare ``websockets`` server in the same run that receives
    the same inputs and answers each player once per tick with its last input
    seq, awaiting one send per player. Ratio = ours / baseline. Then the floor
    (benchmarks/floor_server.py): a raw protocol doing only that, the least any
    Python server can spend per player here.
(b) overload: --overload times the players offered to a server whose budget is
    --players seated players: admitted and refused (with their codes), and the
    admitted players' latency and tick overruns.
(c) burst: 50 connections sending as fast as the acks allow (a window of one
    64-input frame): acknowledged (durable) inputs/s.

The CPU figure is the server process's own utime+stime (from /proc), so it holds
even when the load generators share the cores; latency does not: on a small
machine the load generators compete with the server, which the output says. Each
run also prints the share of the cores the hypervisor stole meanwhile (/proc/stat):
on a shared virtual machine that, more than anything the servers do, moves one
run's figures from the next. Whatever our server logged at ERROR is printed too.

    .venv/bin/python benchmarks/ingest.py                  # 600 players, 10 s
    .venv/bin/python benchmarks/ingest.py --players 200 --seconds 5
    .venv/bin/python benchmarks/ingest.py --find-capacity 2,10,64   # docs/operations.md
    .venv/bin/python benchmarks/ingest.py --rounds 3       # (a) and (b) 3 times, medians
                                                           # of all and of the quiet rounds
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "ingest-benchmark-secret-0123456789abcdef"
RATE = 30  # inputs per second per player, and the tick rate
LOAD_GROUPS = 6  # clients of a process send in 6 staggered groups per period


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the servers ------------------------------------------------------------------------


UNTHROTTLED = (
    *("--input-rate", "100000", "--input-burst", "100000"),
    *("--max-connections", "100000", "--ping-interval", "60", "--ping-timeout", "60"),
)
"""``serve`` flags that keep per-connection budgets and pings out of a load's way."""


def start_ours(db: Path, *flags: str) -> tuple[subprocess.Popen, int, str]:
    """The server process, its port and the event loop it reports (uvloop where installed).
    Its log goes beside ``db`` (:func:`say_server_errors` reads it)."""
    with open(db.with_suffix(".log"), "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "serve",
                "--port",
                "0",
                "--db",
                str(db),
                *UNTHROTTLED,
                *flags,
            ],
            cwd=ROOT,
            env=os.environ | {"MATCHREPLAY_SECRET": SECRET},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"ws://[\d.]+:(\d+)/", line)
        if m:
            loop = re.search(r"(\w+) event loop", line)
            return proc, int(m.group(1)), loop.group(1) if loop else "asyncio"
    raise RuntimeError(f"server did not start (its log: {db.with_suffix('.log')})")


def server_errors(log: Path) -> list[str]:
    """What a server logged at ERROR or above, and its tracebacks' first lines."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [
        line
        for line in text.splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


def say_server_errors(db: Path, indent: str) -> None:
    """Print what the server of ``db`` logged at ERROR or above, if anything: a run in
    which the server failed (an append error interrupts every match) must say so, not
    pass for a slow machine."""
    log = db.with_suffix(".log")
    if errors := server_errors(log):
        print(
            f"{indent}NOTE: the server logged {len(errors)} errors, the first: {errors[0][:160]}"
            f" (its log: {log})"
        )


def remove_unless_errors(tmp: Path) -> None:
    """The run's databases and logs go, unless a server logged errors (kept to be read)."""
    if any(server_errors(log) for log in tmp.rglob("*.log")):
        print(f"kept {tmp}: a server logged errors there")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


try:  # the floor server needs uvloop (a dependency on Linux and macOS)
    import uvloop  # noqa: F401

    from benchmarks.floor_server import floor_main
except ImportError:
    floor_main = None  # type: ignore[assignment]


def _baseline_main(port_out: mp.Queue, received: Any) -> None:  # type: ignore[type-arg]
    """A bare websockets server: last seq per player, one awaited send per player per tick."""
    import msgpack
    from websockets.asyncio.server import serve

    async def main() -> None:
        last: dict[object, int] = {}

        async def handler(ws) -> None:
            await ws.send(msgpack.packb([16, 1, "p", "player", {}]))
            last[ws] = 0
            try:
                async for frame in ws:
                    msg = msgpack.unpackb(frame)
                    if msg[0] == 2:
                        last[ws] = msg[1][-1][0]
                        received.value += len(msg[1])
                    elif msg[0] == 1:
                        await ws.send(
                            msgpack.packb(
                                [17, msg[1], 0, "arena", RATE, {}, 0, "running", 0, 0, 0, False]
                            )
                        )
            finally:
                del last[ws]

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            tick, next_at = 0, loop.time()
            while True:
                next_at += 1 / RATE
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                tick += 1
                for ws, seq in list(last.items()):
                    with contextlib.suppress(Exception):
                        await ws.send(msgpack.packb([19, tick, 0, None, [0, seq]]))

        async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=60) as server:
            port_out.put(server.sockets[0].getsockname()[1])
            await ticker()

    asyncio.run(main())


# -- the load ------------------------------------------------------------------------------


def _load_main(
    url: str,
    jobs: list[tuple[str, str]],
    start_at: float,
    warmup: float,
    seconds: float,
    burst: bool,
    out: mp.Queue,
) -> None:  # type: ignore[type-arg]
    out.put(asyncio.run(_load(url, jobs, start_at, warmup, seconds, burst)))


async def _load(
    url: str,
    jobs: list[tuple[str, str]],
    start_at: float,
    warmup: float,
    seconds: float,
    burst: bool,
) -> dict:
    from benchmarks.loadgen import JoinRefused, close_players, connect_players

    everyone = await connect_players(url, [tok for tok, _ in jobs])
    outcomes = await asyncio.gather(
        *(c.join(m) for c, (_, m) in zip(everyone, jobs, strict=True)), return_exceptions=True
    )
    clients = [c for c, r in zip(everyone, outcomes, strict=True) if not isinstance(r, Exception)]
    refused = [
        r.args[0] if isinstance(r, JoinRefused) else repr(r)
        for r in outcomes
        if isinstance(r, Exception)
    ]

    await asyncio.sleep(max(0.0, start_at - time.time()))
    loop = asyncio.get_running_loop()
    raws = [[math.cos(k / 5), math.sin(k / 5), k / 7, k % 10 == 0] for k in range(40)]
    t0 = loop.time()
    measure_from, end = t0 + warmup, t0 + warmup + seconds
    sent = acked0 = 0
    lag = cpu0 = 0.0
    measuring = False
    if burst:
        frame = (raws * 2)[:64]
        while (now := loop.time()) < end:
            if not measuring and now >= measure_from:
                measuring, acked0 = True, sum(c.acked_seq for c in clients)
                cpu0 = time.process_time()
            for c in clients:
                if c.acked_seq >= c.next_seq - 1:  # window: one frame in flight
                    c.send_inputs(frame)
            await asyncio.sleep(0.001)
    else:
        period = 1.0 / RATE / LOAD_GROUPS
        groups = [clients[g::LOAD_GROUPS] for g in range(LOAD_GROUPS)]
        n, next_at = 0, t0
        while (now := loop.time()) < end:
            if not measuring and now >= measure_from:
                measuring, cpu0 = True, time.process_time()
                for c in clients:
                    c.latencies.clear()
            raw = raws[(n // LOAD_GROUPS) % len(raws)]  # circling: moves and aims every tick
            for c in groups[n % LOAD_GROUPS]:
                c.send_inputs((raw,))
            if measuring:
                sent += len(groups[n % LOAD_GROUPS])
            n += 1
            next_at += period
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
    acked = sum(c.acked_seq for c in clients) - acked0
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0.3)  # let the last acks arrive
    latencies = [x for c in clients for x in c.latencies]
    await close_players(everyone)
    return {
        "sent": sent,
        "acked": acked,
        "latencies": latencies,
        "lag": lag,
        "cpu": cpu,
        "admitted": len(clients),
        "refused": refused,
    }


def spawn_load(
    url: str,
    jobs: list[tuple[str, str]],
    procs: int,
    warmup: float,
    seconds: float,
    burst: bool = False,
) -> tuple[float, Callable[[], dict]]:
    """Start the load processes; returns when they will start sending and a collector."""
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 3.0 + len(jobs) / 200  # after every client connected and joined
    workers = [
        mp.Process(
            target=_load_main, args=(url, jobs[i::procs], start_at, warmup, seconds, burst, out)
        )
        for i in range(procs)
    ]
    for w in workers:
        w.start()

    def collect() -> dict:
        results = [out.get(timeout=120 + warmup + seconds) for _ in workers]
        for w in workers:
            w.join()
        lat = sorted(x for r in results for x in r["latencies"])
        return {
            "admitted": sum(r["admitted"] for r in results),
            "refused": [code for r in results for code in r["refused"]],
            "sent": sum(r["sent"] for r in results),
            "acked": sum(r["acked"] for r in results),
            "lag": max(r["lag"] for r in results),
            "load_cpu": sum(r["cpu"] for r in results) / seconds,
            "p50": lat[len(lat) // 2] * 1000 if lat else float("nan"),
            "p99": lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan"),
        }

    return start_at, collect


def stolen_seconds() -> float:
    """CPU time the hypervisor gave to other machines (all cores; /proc/stat's steal)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def window(
    pid: int, start_at: float, warmup: float, seconds: float, counters: Callable[[], dict]
) -> dict:
    """Server CPU seconds and counter deltas over the measured window, and the share of
    the machine's cores stolen by its hypervisor meanwhile (on a shared virtual machine
    that is what makes one run's latency differ from the next)."""
    time.sleep(max(0.0, start_at + warmup - time.time()))
    m0, c0, s0, w0 = counters(), cpu_seconds(pid), stolen_seconds(), time.monotonic()
    time.sleep(seconds * 0.9)
    m1, cpu, wall = counters(), cpu_seconds(pid) - c0, time.monotonic() - w0
    stolen = (stolen_seconds() - s0) / (wall * (os.cpu_count() or 1))
    return {"cpu": cpu, "wall": wall, "stolen": stolen} | {k: m1[k] - m0[k] for k in m0}


def our_counters(port: int) -> Callable[[], dict]:
    def read() -> dict:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        values = {}
        for line in body.decode().splitlines():
            if line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            values[name] = float(value or 0)
        return {
            # received = accepted + refused (e.g. inputs of players waiting to respawn)
            "inputs": values.get("matchreplay_inputs_total", 0.0)
            + sum(
                v for k, v in values.items() if k.startswith("matchreplay_rejected_inputs_total")
            ),
            "events": values.get("matchreplay_events_appended_total", 0.0),
            "overruns": values.get("matchreplay_tick_overruns_total", 0.0),
        }

    return read


def create_matches(
    port: int, admin: str, n: int, per_match: int, public: bool = False
) -> list[str]:
    """``n`` arena matches that run until stopped; ``public``: watchable by anyone, so
    their results reach the leaderboards while they run (docs/leaderboards.md)."""
    settings = {"max_players": per_match, "min_players": 1, "tick_rate": RATE}
    settings |= {"time_limit_s": 0, "score_limit": 0, "public_spectating": public}
    settings = quote(json.dumps(settings))
    ids = []
    for _ in range(n):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/matches?game=arena&settings={settings}&start_players=1",
            method="POST",
            headers={"Authorization": f"Bearer {admin}"},
        )
        ids.append(json.loads(urllib.request.urlopen(req, timeout=10).read())["match_id"])
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--players", type=int, default=300)
    ap.add_argument(
        "--players-per-match",
        default="10,50",
        help="match sizes to measure, comma-separated (each at --players in total)",
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=max(2, (os.cpu_count() or 2)))
    ap.add_argument("--burst-connections", type=int, default=50)
    ap.add_argument(
        "--overload",
        type=float,
        default=1.5,
        help="the overload run offers this many times --players to a server whose budget is"
        " --players (0: skip)",
    )
    ap.add_argument(
        "--find-capacity",
        metavar="SIZES",
        help="instead of the runs above: for each match size (comma-separated, e.g. 2,10,64)"
        " raise the players along --capacity-steps until input-to-ack p99 passes"
        " --capacity-p99-ms or a tick overruns, and print what one process holds",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run (a) and (b) this many times in turn and print the medians too (the figures"
        " of a shared machine move by tens of percent from one run to the next)",
    )
    ap.add_argument("--capacity-steps", default="50,100,150,300,450,600,750")
    ap.add_argument("--capacity-p99-ms", type=float, default=100.0)
    args = ap.parse_args()
    shapes = [int(x) for x in args.players_per_match.split(",")]
    from server import auth

    print(
        f"ingest: {args.players} players x {RATE} inputs/s in matches of"
        f" {', '.join(map(str, shapes))}, {args.seconds:g} s measured after"
        f" {args.warmup:g} s warm-up, {args.procs} load processes, {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.2f} before the run"
    )
    tmp = Path(tempfile.mkdtemp(prefix="ingest-"))
    atexit.register(remove_unless_errors, tmp)
    admin = auth.issue(SECRET, "bench", "admin")
    target = args.players * RATE

    run_numbers = itertools.count(1)

    def measure_ours(players: int, per_match: int, *flags: str) -> tuple[dict, str]:
        # A new database (and log) per run: a round must not start on the last one's store.
        db = tmp / f"ingest-{next(run_numbers)}-{per_match}-{players}.db"
        proc, port, server_loop = start_ours(db, *flags)
        try:
            n_matches = -(-players // per_match)
            ids = create_matches(port, admin, n_matches, per_match)
            # Players fill the matches one after another, as a matchmaker seats them: with
            # more offered than admitted (the overload run), those refused are the last
            # ones, and the process runs full matches (round-robin seating would spread
            # the admitted players over every match created and add per-match cost).
            jobs = [
                (auth.issue(SECRET, f"p{i}", "player"), ids[i // per_match]) for i in range(players)
            ]
            start_at, collect = spawn_load(
                f"ws://127.0.0.1:{port}/ws", jobs, args.procs, args.warmup, args.seconds
            )
            result = window(proc.pid, start_at, args.warmup, args.seconds, our_counters(port))
            result |= collect()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        return result | {"db": db}, server_loop

    def measure_process(target: Callable[..., None], players: int, *extra: Any) -> dict:
        port_q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        received = mp.Value("q", 0, lock=False)
        server = mp.Process(target=target, args=(port_q, received, *extra), daemon=True)
        server.start()
        port = port_q.get(timeout=20)
        jobs = [(auth.issue(SECRET, f"p{i}", "player"), "m") for i in range(players)]
        start_at, collect = spawn_load(
            f"ws://127.0.0.1:{port}/", jobs, args.procs, args.warmup, args.seconds
        )
        result = window(
            server.pid, start_at, args.warmup, args.seconds, lambda: {"inputs": received.value}
        )
        result |= collect()
        server.terminate()
        return result

    def report(name: str, r: dict) -> float:
        # CPU per input the server actually received, so a server that falls behind is
        # not flattered by the inputs still waiting in its socket buffers.
        inputs_per_s = r["inputs"] / r["wall"]
        per_player_s = r["cpu"] / max(1.0, r["inputs"]) * RATE
        per_core = 1.0 / per_player_s
        print(
            f"  {name:<16} {per_player_s * 1e6:7.0f} us CPU per player-second"
            f" -> {per_core:6.0f} players per core"
            f" | input-to-ack p50 {r['p50']:6.1f} ms p99 {r['p99']:7.1f} ms"
            f" | server CPU {r['cpu'] / r['wall'] * 100:3.0f}% of a core"
            f" | inputs received {inputs_per_s / target * 100:3.0f}% of {target:,}/s"
            f" | load processes {r['load_cpu'] * 100:3.0f}% of a core"
            f" | stolen {r['stolen'] * 100:2.0f}% of the cores"
        )
        if "db" in r:
            say_server_errors(r["db"], " " * 19)
        if r["lag"] > 0.1 or inputs_per_s < 0.9 * target:
            print(
                "                   NOTE: the machine was saturated (load generators and server"
                f" share {os.cpu_count()} cores; load-generator lag up to"
                f" {r['lag'] * 1000:.0f} ms): latency is not the server's alone"
            )
        return per_player_s

    if args.find_capacity:
        find_capacity(args, measure_ours)
        return

    # -- (a) capacity per match size, each beside the bare baseline and the floor ----------
    # Per round, per server: its run (the summary of several rounds takes medians, the
    # ratio per round: the baseline and ours of one round met the same machine).
    rounds: list[dict[str, _Run]] = []
    server_loop = "asyncio"
    for n in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {n} of {args.rounds}")
        runs: dict[str, _Run] = {}
        rounds.append(runs)
        base = measure_process(_baseline_main, args.players)
        floor = measure_process(floor_main, args.players, RATE) if floor_main is not None else None
        print(
            f"(a) capacity, {args.players} players, 30 inputs/s each, 30 Hz ticks,"
            " SQLite synchronous=FULL:"
        )
        base_cost = report("baseline", base)
        runs["baseline"] = _Run(base_cost, base["p99"], 1.0, 0.0, base["stolen"])
        print(
            "                   (a bare websockets server on asyncio's loop: receives the inputs,"
            " answers each player once per tick with its last seq)"
        )
        if floor is not None:
            floor_cost = report("floor", floor)
            runs["floor"] = _Run(
                floor_cost, floor["p99"], floor_cost / base_cost, 0.0, floor["stolen"]
            )
            print(
                "                   (benchmarks/floor_server.py: a raw uvloop protocol that only"
                " unmasks, decodes and acks; the bound no server goes below here)"
            )
        for per_match in shapes:
            # Admission by measured load off: this run measures what the players cost.
            ours, server_loop = measure_ours(
                args.players, per_match, "--max-cpu", "0", "--max-tick-lateness-ms", "0"
            )
            cost = report(f"matchreplay/{per_match}", ours)
            runs[f"matchreplay/{per_match}"] = _Run(
                cost, ours["p99"], cost / base_cost, ours["overruns"], ours["stolen"]
            )
            print(
                f"                   {-(-args.players // per_match)} matches of {per_match}:"
                f" tick overruns in the window {ours['overruns']:.0f};"
                f" durable events/s {ours['events'] / ours['wall']:,.0f};"
                f" CPU per player-second / baseline's {cost / base_cost:.2f}"
            )
        print(f"  (our server ran on {server_loop})")

        # -- (b) overload: more players than the process's budget ---------------------------
        if args.overload:
            offered = round(args.players * args.overload)
            per_match = shapes[0]
            ours, _ = measure_ours(
                offered, per_match, "--max-seated-players", str(args.players), "--max-cpu", "0"
            )
            refused = ours["refused"]
            codes = ", ".join(f"{c} x{refused.count(c)}" for c in sorted(set(refused))) or "none"
            print(
                f"(b) overload: {offered} players offered in matches of {per_match} to a server"
                f" whose budget is {args.players} seated players:"
            )
            print(
                f"  admitted {ours['admitted']}, refused {len(refused)} ({codes});"
                f" admitted players' input-to-ack p50 {ours['p50']:.1f} ms"
                f" p99 {ours['p99']:.1f} ms; tick overruns in the window {ours['overruns']:.0f};"
                f" stolen {ours['stolen'] * 100:.0f}% of the cores"
            )
            print("  (target: p99 <= 100 ms, no overrun, every refused player got server_full)")
            say_server_errors(ours["db"], "  ")
            runs["overload"] = _Run(
                math.nan, ours["p99"], math.nan, ours["overruns"], ours["stolen"]
            )

    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds (each round's runs one after another):")
        print_medians(rounds)
        clean = [r for r in rounds if all(run.stolen < CLEAN_STOLEN for run in r.values())]
        print(
            f"medians of the {len(clean)} rounds in which the hypervisor stole less than"
            f" {CLEAN_STOLEN:.0%} of the cores in every run (a quiet machine):"
        )
        print_medians(clean)

    # -- (c) burst ---------------------------------------------------------------------------
    if args.burst_connections:  # --burst-connections 0 skips it
        proc, port, _ = start_ours(
            tmp / "burst.db", "--max-cpu", "0", "--max-tick-lateness-ms", "0"
        )
        try:
            n = args.burst_connections
            bids = create_matches(port, admin, -(-n // 50), 50)
            bjobs = [(auth.issue(SECRET, f"b{i}", "player"), bids[i % len(bids)]) for i in range(n)]
            start_at, collect = spawn_load(
                f"ws://127.0.0.1:{port}/ws", bjobs, min(2, args.procs), 1.0, args.seconds / 2, True
            )
            bwin = window(proc.pid, start_at, 1.0, args.seconds / 2, our_counters(port))
            burst = collect()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        print(
            f"(c) burst, {n} connections each with one 64-input frame in flight:"
            f" {burst['acked'] / (args.seconds / 2):,.0f} acknowledged (durable) inputs/s;"
            f" {bwin['events'] / bwin['wall']:,.0f} events/s stored;"
            f" server CPU {bwin['cpu'] / bwin['wall'] * 100:.0f}% of a core"
        )
        say_server_errors(tmp / "burst.db", "  ")
    print(f"load average after the run: {os.getloadavg()[0]:.2f} (a shared machine: noisy figures)")


CLEAN_STOLEN = 0.02
"""A round is quiet when the hypervisor stole less than this share of the cores in each
of its runs: on a shared virtual machine a stolen share of 15-40% came with tick
overruns and doubled latencies for every server, the floor's included."""


class _Run(NamedTuple):
    """One server's figures in one round (``cost`` in CPU seconds per player-second)."""

    cost: float
    p99: float
    ratio: float
    """``cost`` / the same round's baseline's."""
    overruns: float
    stolen: float


def print_medians(rounds: list[dict[str, _Run]]) -> None:
    """Per server, the median of each figure over ``rounds``, with every round's beside it."""
    for name in dict.fromkeys(name for r in rounds for name in r):
        runs = [r[name] for r in rounds if name in r]
        cost, p99, ratio, overruns, _ = (statistics.median(col) for col in zip(*runs, strict=True))
        if name == "overload":
            print(
                f"  overload, admitted players' p99 {p99:.1f} ms"
                f" (rounds {', '.join(f'{r.p99:.1f}' for r in runs)}) | overruns {overruns:.0f}"
            )
            continue
        print(
            f"  {name:<16} {cost * 1e6:7.0f} us CPU per player-second"
            f" (rounds {', '.join(f'{r.cost * 1e6:.0f}' for r in runs)})"
            f" | p99 {p99:6.1f} ms (rounds {', '.join(f'{r.p99:.1f}' for r in runs)})"
            + (
                f" | / baseline's {ratio:.2f} (rounds {', '.join(f'{r.ratio:.2f}' for r in runs)})"
                f" | overruns {overruns:.0f}"
                if name != "baseline"
                else ""
            )
        )


def find_capacity(args: argparse.Namespace, measure: Callable[..., tuple[dict, str]]) -> None:
    """What one process holds per match size: the most players (of --capacity-steps) whose
    input-to-ack p99 stays within --capacity-p99-ms with no tick overrun and every input
    received (a failing step gets a second try). Admission by measured load is off, as
    in the capacity runs."""
    sizes = [int(x) for x in args.find_capacity.split(",")]
    steps = [int(x) for x in args.capacity_steps.split(",")]
    print(
        f"capacity: matches of {', '.join(map(str, sizes))}; players {steps}; passing:"
        f" p99 <= {args.capacity_p99_ms:g} ms, no tick overrun, >= 98% of inputs received;"
        f" {args.seconds:g} s measured after {args.warmup:g} s warm-up"
    )
    print(
        "| players per match | players | matches | CPU us per player-second | p50 ms | p99 ms"
        " | overruns | inputs received | load average | cores stolen | passes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    held: dict[int, tuple[int, dict]] = {}
    for size in sizes:
        for players in steps:
            # A failing step is measured once more: on a shared machine a neighbour's
            # burst, not the server, may have failed it.
            for attempt in (1, 2):
                load = os.getloadavg()[0]
                r, _ = measure(players, size, "--max-cpu", "0", "--max-tick-lateness-ms", "0")
                received = r["inputs"] / r["wall"] / (players * RATE)
                cost = r["cpu"] / max(1.0, r["inputs"]) * RATE
                passes = r["p99"] <= args.capacity_p99_ms and not r["overruns"] and received >= 0.98
                print(
                    f"| {size} | {players} | {-(-players // size)} | {cost * 1e6:,.0f}"
                    f" | {r['p50']:.1f} | {r['p99']:.1f} | {r['overruns']:.0f}"
                    f" | {received * 100:.0f}% | {load:.2f} | {r['stolen'] * 100:.0f}%"
                    f" | {'yes' if passes else 'no'}"
                    f"{' (again)' if attempt == 2 else ''} |",
                    flush=True,
                )
                if passes:
                    break
            if not passes:
                break
            held[size] = (players, r | {"cost": cost})
    for size in sizes:
        if size in held:
            players, r = held[size]
            print(
                f"matches of {size}: one process holds {players} players"
                f" ({-(-players // size)} matches), p99 {r['p99']:.1f} ms,"
                f" {r['cost'] * 1e6:,.0f} us CPU per player-second"
            )
        else:
            print(f"matches of {size}: not even {steps[0]} players passed")


if __name__ == "__main__":
    main()
