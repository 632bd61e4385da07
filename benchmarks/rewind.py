"""Rewind and fork latency on a generated arena match (docs/replay.md "Rewinds and forks").

Generates (once, cached under ./data/bench/) a bot match with ``matchreplay simulate``
(the offline generator, replay/offline.py; keyframes included), copies it to a scratch
store, then measures, over random target ticks:

* rewind: from the command (the state of T read from the store by the replay engine,
  as ``Match.rewind`` does) to the first tick played from T: the machine's rewind tick
  B appended durably, then tick B + 1 stepped. A live server adds the wait for the
  next tick boundary (at most one tick period) to this;
* fork: from the command (``server.forking.prepare_fork``: a fresh engine reads the
  parent's state of T) through the fork's record, its ``forked`` event and keyframe,
  to its first tick stepped and appended.

Prints p50/p99 of each (target p99 <= 50 ms). Timings on a shared machine are noisy.

    .venv/bin/python benchmarks/rewind.py                 # 30 min, 64 players, 30 Hz
    .venv/bin/python benchmarks/rewind.py --minutes 3     # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.engine import ReplayEngine  # noqa: E402
from replay.games import builtin_games  # noqa: E402
from replay.keyframes import keyframe_interval_ticks  # noqa: E402
from replay.machine import MatchMachine  # noqa: E402
from replay.store import open_store  # noqa: E402
from server.forking import prepare_fork  # noqa: E402
from server.match import REWIND_HORIZON_S  # noqa: E402

GAMES = builtin_games()
MATCH = "bench"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def generated(args: argparse.Namespace) -> Path:
    bench_dir = ROOT / "data" / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    db = bench_dir / f"rewind-p{args.players}-m{args.minutes:g}-r{args.tick_rate}-s{args.seed}.db"
    if db.exists():
        print(f"generated match loaded from cache ({db})")
        return db
    tmp = db.with_suffix(".tmp.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable, "-m", "server.cli", "simulate", "--db", str(tmp),
            "--players", str(args.players), "--minutes", str(args.minutes),
            "--tick-rate", str(args.tick_rate), "--seed", str(args.seed), "--match-id", MATCH,
        ],
        check=True,
        cwd=ROOT,
    )  # fmt: skip
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    tmp.replace(db)
    print(f"generated with matchreplay simulate in {time.perf_counter() - t0:.1f} s")
    return db


async def measure(db: Path, args: argparse.Namespace) -> None:
    rules = GAMES["arena"]
    rng = random.Random(args.seed)
    async with open_store(str(db), catalogs=GAMES.catalogs()) as store:
        record = await store.get_match(MATCH)
        last = record.last_tick
        print(f"match: {args.players} players, ticks 0..{last}, {record.version} events")
        engine = ReplayEngine(store, GAMES)
        # The "live" match: the generated one at its second-to-last tick, carried on by a
        # machine whose ticks go to a scratch stream of the same store.
        live = record.with_changes(match_id="live", status="running")
        await store.create_match(live)
        machine = MatchMachine(
            rules,
            await engine.state_at(MATCH, last - 1),
            keyframe_every=keyframe_interval_ticks(record.tick_rate),
        )
        version = 0
        horizon = round(REWIND_HORIZON_S * record.tick_rate)
        rewinds: list[float] = []
        rewind_cpu: list[float] = []
        seeks: list[float] = []
        for i in range(args.rewinds):
            to_tick = rng.randint(max(0, last - 1 - horizon), last - 1)
            c0, t0 = time.process_time(), time.perf_counter()
            state = await engine.state_at(MATCH, to_tick)
            seeks.append(time.perf_counter() - t0)
            machine.rewind(state, actor="bench", reason=f"rewind {i}", at_ms=0)
            boundary = machine.step()
            await store.append("live", boundary.events, version)
            version += len(boundary.events)
            first = machine.step()  # the first tick played from T
            rewinds.append(time.perf_counter() - t0)
            rewind_cpu.append(time.process_time() - c0)
            if first.events:
                await store.append("live", first.events, version)
                version += len(first.events)
        forks: list[float] = []
        fork_cpu: list[float] = []
        fork_reads: list[float] = []
        for i in range(args.forks):
            at_tick = rng.randint(1, last - 1)
            c0, t0 = time.process_time(), time.perf_counter()
            start = await prepare_fork(store, GAMES, MATCH, at_tick)
            fork_reads.append(time.perf_counter() - t0)
            fork = await store.create_match(
                record.with_changes(match_id=f"fork-{i}", status="created")
            )
            await start.record_origin(store, fork)
            fork_machine = MatchMachine(
                rules, start.state, keyframe_every=keyframe_interval_ticks(record.tick_rate)
            )
            out = fork_machine.step()
            if out.events:
                await store.append(fork.match_id, out.events, 1)
            forks.append(time.perf_counter() - t0)
            fork_cpu.append(time.process_time() - c0)
    ms = 1000.0
    print(
        f"rewind (command -> first tick played from T), {len(rewinds)} random T within"
        f" {REWIND_HORIZON_S:g} s: p50 {pct(rewinds, 50) * ms:.1f} ms,"
        f" p99 {pct(rewinds, 99) * ms:.1f} ms, max {max(rewinds) * ms:.1f} ms"
    )
    print(
        f"fork (command -> the fork's first tick), {len(forks)} random T:"
        f" p50 {pct(forks, 50) * ms:.1f} ms, p99 {pct(forks, 99) * ms:.1f} ms,"
        f" max {max(forks) * ms:.1f} ms"
    )
    print(
        f"  of which reading the state of T: rewind p50 {pct(seeks, 50) * ms:.1f} ms,"
        f" p99 {pct(seeks, 99) * ms:.1f} ms; fork p50 {pct(fork_reads, 50) * ms:.1f} ms,"
        f" p99 {pct(fork_reads, 99) * ms:.1f} ms (the rest: encoding, the machine's ticks"
        f" and the durable appends)"
    )
    print(
        f"  CPU time of this process (less disturbed by other jobs on a shared machine):"
        f" rewind p50 {pct(rewind_cpu, 50) * ms:.1f} ms, p99 {pct(rewind_cpu, 99) * ms:.1f} ms;"
        f" fork p50 {pct(fork_cpu, 50) * ms:.1f} ms, p99 {pct(fork_cpu, 99) * ms:.1f} ms"
    )
    print(f"  load average while measuring: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    target = 0.050
    print(f"target p99 <= 50 ms: rewind {'met' if pct(rewinds, 99) <= target else 'MISSED'},"
          f" fork {'met' if pct(forks, 99) <= target else 'MISSED'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--tick-rate", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rewinds", type=int, default=200)
    parser.add_argument("--forks", type=int, default=100)
    args = parser.parse_args()
    cached = generated(args)
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "rewind.db"
        shutil.copy(cached, db)
        asyncio.run(measure(db, args))


if __name__ == "__main__":
    main()
