"""A cluster of 3 nodes on one PostgreSQL, on this machine: failover, cost and spread.

Printed, in one run:

(a) failover: a 4-player match (SDK players that know every node) on a node that is
    SIGKILLed, ``--kills`` times (the node restarts between kills): the time from the
    SIGKILL to the first input acknowledged by the new owner, p50 and max, with the
    lease length used. Target: max <= 3 s.
(b) cost: CPU (the nodes plus every PostgreSQL process) per player-second at
    ``--players`` players in matches of 10 spread over the 3 nodes, against one SQLite
    node (synchronous=FULL) under the same load in the same run. Target: <= 1.5x.
(c) spread: 1.5 times what one node holds (its ``--max-seated-players`` budget,
    ``--spread-budget``) offered through one node: placement puts the matches on the
    others; input-to-ack p50/p99 of every admitted player. Target: p99 <= 100 ms.
    All three nodes share this machine's cores: the budget must leave the machine
    room for 1.5 times it, or the figure measures the machine, not the placement.

The load players are benchmarks/loadgen.py's lean clients in other processes (as in
benchmarks/ingest.py), each connected to the node its match runs on.

    .venv/bin/python benchmarks/cluster.py
    .venv/bin/python benchmarks/cluster.py --kills 10 --players 300 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ingest import (  # noqa: E402
    RATE,
    SECRET,
    UNTHROTTLED,
    cpu_seconds,
    create_matches,
    remove_unless_errors,
    spawn_load,
    start_ours,
)
from server import auth  # noqa: E402
from server.local_pg import PgCluster, pg_bindir  # noqa: E402
from server.node_process import NodeProcess  # noqa: E402

LEASE_TTL = 1.5


class Node(NodeProcess):
    """A benchmark node: admission by measured load off, budgets out of the way."""

    def __init__(self, name: str, store: str, data: Path, *flags: str) -> None:
        super().__init__(
            name,
            store,
            data / name,
            [
                "--lease-ttl",
                str(LEASE_TTL),
                *UNTHROTTLED,
                "--max-cpu",
                "0",
                "--max-tick-lateness-ms",
                "0",
                *flags,
            ],
            env=os.environ | {"MATCHREPLAY_SECRET": SECRET, "PYTHONPATH": str(ROOT)},
        )


def http(base: str, method: str, path: str, token: str) -> Any:
    req = urllib.request.Request(
        base + path, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.load(answer)


def fresh_database(pg: PgCluster, name: str) -> str:
    """A new empty database on ``pg`` (the same server, so its CPU is measured alike)."""
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(pg.url)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(create())
    return pg.url.rsplit("/", 1)[0] + "/" + name


def pg_cpu(pg: PgCluster) -> float:
    """CPU seconds of every process of the PostgreSQL cluster so far (postmaster and
    backends: children included via cutime/cstime for the ones that ended)."""
    pid = int(Path(pg.data, "postmaster.pid").read_text().split()[0])
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(proc.name) == pid or int(fields[1]) == pid:
            tck = os.sysconf("SC_CLK_TCK")
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tck
    return total


def measure(
    nodes: list[Node],
    admin: str,
    players: int,
    per_match: int,
    seconds: float,
    warmup: float,
    procs: int,
    pg: PgCluster | None,
    entry: Node,
) -> dict:
    """``players`` in matches of ``per_match`` created through ``entry`` (placed by load);
    each player connects to its match's node."""
    settings = quote(
        json.dumps(
            {
                "max_players": per_match,
                "min_players": 1,
                "tick_rate": RATE,
                "time_limit_s": 0,
                "score_limit": 0,
            }
        )
    )
    by_name = {n.name: n for n in nodes}
    jobs_by_node: dict[str, list[tuple[str, str]]] = {}
    n_matches = -(-players // per_match)
    refused_matches = 0
    placed: dict[str, str] = {}
    for _ in range(n_matches):
        try:
            info = http(
                entry.base,
                "POST",
                f"/api/matches?game=arena&settings={settings}&start_players=1",
                admin,
            )
        except urllib.error.HTTPError:
            refused_matches += 1
            continue
        placed[info["match_id"]] = info.get("node", entry.name)
        # let the heartbeat carry the new load before the next placement
        time.sleep(0.02)
    ids = list(placed)
    for i in range(players):
        if not ids:
            break
        mid = ids[i % len(ids)]
        jobs_by_node.setdefault(placed[mid], []).append(
            (auth.issue(SECRET, f"p{i}", "player"), mid)
        )
    collectors = []
    start_at = None
    for name, jobs in jobs_by_node.items():
        start_at, collect = spawn_load(
            by_name[name].url, jobs, max(1, procs // len(jobs_by_node)), warmup, seconds
        )
        collectors.append(collect)
    assert start_at is not None
    time.sleep(max(0.0, start_at + warmup - time.time()))
    pids = [n.pid for n in nodes if n.alive]
    c0 = sum(cpu_seconds(p) for p in pids) + (pg_cpu(pg) if pg else 0.0)
    w0 = time.monotonic()
    time.sleep(seconds * 0.9)
    cpu = sum(cpu_seconds(p) for p in pids) + (pg_cpu(pg) if pg else 0.0) - c0
    wall = time.monotonic() - w0
    results = [c() for c in collectors]
    lat_p99 = max(r["p99"] for r in results)
    admitted = sum(r["admitted"] for r in results)
    return {
        "cpu": cpu,
        "wall": wall,
        "admitted": admitted,
        "refused": sum(len(r["refused"]) for r in results) + refused_matches * per_match,
        "codes": sorted({c for r in results for c in r["refused"]})
        + (["match refused (503)"] if refused_matches else []),
        "p50": max(r["p50"] for r in results),
        "p99": lat_p99,
        "per_node": {name: len(jobs) for name, jobs in jobs_by_node.items()},
    }


async def failover(nodes: list[Node], admin: str, kills: int) -> list[float]:
    from client_sdk.game_client import GameClient

    by_name = {n.name: n for n in nodes}
    settings = quote(
        json.dumps({"tick_rate": RATE, "time_limit_s": 3600, "min_players": 2, "max_players": 8})
    )
    info = http(
        nodes[0].base, "POST", f"/api/matches?game=arena&settings={settings}&node=n1", admin
    )
    match_id = info["match_id"]
    clients = []
    for i in range(4):
        c = GameClient(
            nodes[1].url,
            auth.issue(SECRET, f"f{i}", "player", match_id),
            nodes=[n.url for n in nodes],
            keep_messages=False,
            max_attempts=60,
        )
        await c.connect()
        await c.join(match_id)
        clients.append(c)
    stop = asyncio.Event()

    async def play() -> None:
        k = 0
        while not stop.is_set():
            for c in clients:
                c.send_input([k % 3 - 1, 0, 0, 0])
            k += 1
            await asyncio.sleep(1 / RATE)

    pump = asyncio.create_task(play())
    times = []
    for _ in range(kills):
        await asyncio.sleep(1.5)
        owner = (
            await asyncio.to_thread(http, nodes[2].base, "GET", f"/api/matches/{match_id}", admin)
        )["node"]
        victim = by_name[owner]
        before = [c.acked_seq for c in clients]
        t0 = time.monotonic()
        await asyncio.to_thread(victim.kill)
        # The first acknowledgement of an input sent after the kill, by the new owner;
        # then every player's (each must be back, or the run fails).
        floor = [c.next_seq for c in clients]
        first = None
        while not all(c.acked_seq >= f for c, f in zip(clients, floor, strict=True)):
            if first is None and any(c.acked_seq >= f for c, f in zip(clients, floor, strict=True)):
                first = time.monotonic() - t0
            await asyncio.sleep(0.005)
            if time.monotonic() - t0 > 30:
                stuck = [
                    (c.acked_seq, c.url, c._closed, c.reconnects, c.redirects, c.slot)
                    for c in clients
                ]
                raise RuntimeError(f"no failover within 30 s (acked {before} -> {stuck})")
        times.append((first or time.monotonic() - t0, time.monotonic() - t0))
        await asyncio.to_thread(victim.start)
    stop.set()
    await pump
    for c in clients:
        await c.close()
    return times


def main() -> None:
    if os.environ.get("CLUSTER_BENCH_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, filename="/tmp/cluster_client.log")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--players", type=int, default=300)
    ap.add_argument("--per-match", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument(
        "--spread-budget",
        type=int,
        default=100,
        help="(c): the players one node holds (its --max-seated-players); 1.5x are offered",
    )
    args = ap.parse_args()
    bindir = pg_bindir()
    if bindir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    print(
        f"cluster: 3 nodes + PostgreSQL on {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.2f} before the run"
    )
    tmp = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    admin = auth.issue(SECRET, "bench", "admin")
    pg = PgCluster(bindir)
    pg.init()
    pg.start()
    try:
        # (a) failover
        # A database per part: a part's leftovers (matches whose lease lapsed when its
        # nodes stopped) would be taken over by the next part's nodes.
        store = fresh_database(pg, "failover")
        nodes = [Node(f"n{k}", store, tmp).start() for k in (1, 2, 3)]
        time.sleep(LEASE_TTL)
        try:
            times = asyncio.run(failover(nodes, admin, args.kills))
        finally:
            for n in nodes:
                n.stop()
        firsts = sorted(t for t, _ in times)
        alls = sorted(t for _, t in times)
        print(
            f"(a) failover, {len(times)} SIGKILLs of the owner, lease {LEASE_TTL:g} s:"
            " SIGKILL to the"
            f" first input acknowledged by the new owner p50 {firsts[len(firsts) // 2]:.2f} s,"
            f" max {firsts[-1]:.2f} s (target: max <= 3 s); to every player's"
            f" p50 {alls[len(alls) // 2]:.2f} s, max {alls[-1]:.2f} s"
        )
        # (b) cost against one SQLite node
        single, port, _ = start_ours(
            tmp / "single.db", "--max-cpu", "0", "--max-tick-lateness-ms", "0"
        )
        try:
            ids = create_matches(port, admin, -(-args.players // args.per_match), args.per_match)
            jobs = [
                (auth.issue(SECRET, f"s{i}", "player"), ids[i % len(ids)])
                for i in range(args.players)
            ]
            start_at, collect = spawn_load(
                f"ws://127.0.0.1:{port}/ws", jobs, args.procs, args.warmup, args.seconds
            )
            time.sleep(max(0.0, start_at + args.warmup - time.time()))
            c0, w0 = cpu_seconds(single.pid), time.monotonic()
            time.sleep(args.seconds * 0.9)
            sq_cpu, sq_wall = cpu_seconds(single.pid) - c0, time.monotonic() - w0
            sq = collect()
        finally:
            single.send_signal(signal.SIGTERM)
            single.wait(timeout=60)
        sq_cost = sq_cpu / sq_wall / args.players
        store = fresh_database(pg, "cost")
        nodes = [Node(f"c{k}", store, tmp).start() for k in (1, 2, 3)]
        time.sleep(LEASE_TTL)
        try:
            cl = measure(
                nodes,
                admin,
                args.players,
                args.per_match,
                args.seconds,
                args.warmup,
                args.procs,
                pg,
                nodes[0],
            )
        finally:
            for n in nodes:
                n.stop()
        cl_cost = cl["cpu"] / cl["wall"] / args.players
        print(
            f"(b) cost, {args.players} players in matches of {args.per_match}: one SQLite node"
            f" {sq_cost * 1e6:,.0f} us CPU per player-second (p99 {sq['p99']:.1f} ms); 3 nodes +"
            f" PostgreSQL {cl_cost * 1e6:,.0f} us (p99 {cl['p99']:.1f} ms, players per node"
            f" {cl['per_node']}): {cl_cost / sq_cost:.2f}x (target <= 1.5x)"
        )
        # (c) spread: 1.5x what one node holds, offered through one node
        budget = args.spread_budget
        spread_store = fresh_database(pg, "spread")
        offered = round(budget * 1.5)
        nodes = [
            Node(f"s{k}", spread_store, tmp, "--max-seated-players", str(budget)).start()
            for k in (1, 2, 3)
        ]
        time.sleep(LEASE_TTL)
        try:
            sp = measure(
                nodes,
                admin,
                offered,
                args.per_match,
                args.seconds,
                args.warmup,
                args.procs,
                None,
                nodes[0],
            )
        finally:
            for n in nodes:
                n.stop()
        print(
            f"(c) spread: {offered} players offered through one node whose budget is {budget}:"
            f" admitted {sp['admitted']}, refused {sp['refused']} {sp['codes']},"
            f" players per node {sp['per_node']};"
            f" input-to-ack p50 {sp['p50']:.1f} ms p99 {sp['p99']:.1f} ms (target p99 <= 100 ms)"
        )
    finally:
        pg.remove()
        remove_unless_errors(tmp)
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
