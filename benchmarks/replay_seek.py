"""Replay seeks, playback and storage sizes on a generated arena match.

Generates (once, cached under ./data/bench/ by parameters) a bot match with the
offline generator, records it into a SQLite store and builds its keyframes, then
prints, in one run:

* p50/p99 latency of random ``state_at`` seeks (one engine, default cache);
* for a sample of the same ticks, the naive fold from tick 0 and the speedup;
* playback throughput (ticks/s and x real time), with and without states;
* bytes per event and per match-minute in the store, the JSON-lines size of
  the same events (one object per line, with names: ``catalog.as_dict``,
  packed byte arrays as base64) and the ratio;
* the export file's size and its ratio to the store.

Timings on a shared machine are noisy; ratios are measured in the same run.

    .venv/bin/python benchmarks/replay_seek.py              # 30 min, 64 players, 30 Hz
    .venv/bin/python benchmarks/replay_seek.py --minutes 2  # a quick run
    .venv/bin/python benchmarks/replay_seek.py --interval-sweep 1 2 3 5 10 30

``--interval-sweep`` instead measures, for each keyframe interval (seconds), cold
seeks (no state cache; wall time, and CPU time of the process, which other jobs
on a shared machine disturb less) and the keyframes' share of the store: the data
behind the default interval in docs/replay.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.engine import ReplayEngine  # noqa: E402
from replay.games import builtin_games  # noqa: E402
from replay.keyframes import rebuild_keyframes  # noqa: E402
from replay.offline import bot_ids, simulate  # noqa: E402
from replay.playback import Playback  # noqa: E402
from replay.replay_file import export_match  # noqa: E402
from replay.store import open_store  # noqa: E402
from replay.store.base import EventStore, MatchRecord  # noqa: E402

GAMES = builtin_games()

MATCH = "bench"
WAVE = 300  # ticks appended concurrently: the store group-commits them


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def generate(store: EventStore, players: int, minutes: float, rate: int, seed: int) -> None:
    rules = GAMES["arena"]
    settings = GAMES["arena"].bot_match_settings(players, minutes * 60, rate)
    await store.create_match(
        MatchRecord(
            MATCH, "arena", rules.version, rate, tuple(bot_ids(players)), settings, seed
        ).with_changes(status="running")
    )
    version, wave = 0, []
    for out in simulate(GAMES["arena"], players, settings, seed):
        if out.events:
            wave.append(asyncio.ensure_future(store.append(MATCH, out.events, version)))
            version += len(out.events)
        if len(wave) >= WAVE:
            await asyncio.gather(*wave)
            wave = []
    await asyncio.gather(*wave)
    await store.update_match(MATCH, status="ended", ended_at=time.time())


async def json_lines_bytes(store: EventStore, last_tick: int) -> tuple[int, int]:
    """(events, bytes) of the match as JSON lines, the way a naive system stores it."""
    catalog = GAMES["arena"].stream_catalog

    def default(o: object) -> str:
        if isinstance(o, bytes):
            return base64.b64encode(o).decode()
        raise TypeError(type(o))

    events = size = 0
    for start in range(0, last_tick + 1, 3000):
        for e in await store.read_ticks(MATCH, start, min(last_tick, start + 2999)):
            size += len(json.dumps(catalog.as_dict(e), default=default)) + 1
            events += 1
    return events, size


async def interval_sweep(db: Path, intervals: list[float], seeks: int, seed: int) -> None:
    """Cold seek latency and keyframe bytes per keyframe interval, on a copy of the match."""
    copy = db.with_suffix(".sweep.db")
    shutil.copy(db, copy)
    try:
        async with open_store(str(copy), synchronous="NORMAL", catalogs=GAMES.catalogs()) as store:
            record = await store.get_match(MATCH)
            ticks = [random.Random(seed).randint(0, record.last_tick) for _ in range(seeks)]
            print(f"interval sweep: {seeks} cold seeks each (no state cache)")
            for seconds in intervals:
                await rebuild_keyframes(store, GAMES, MATCH, seconds=seconds)
                engine = ReplayEngine(store, GAMES, cache_bytes=0)
                ms, cpu = [], []
                for tick in ticks:
                    t, c = time.perf_counter(), time.process_time()
                    await engine.state_at(MATCH, tick)
                    ms.append((time.perf_counter() - t) * 1000)
                    cpu.append((time.process_time() - c) * 1000)
                with sqlite3.connect(copy) as conn:
                    (kf,) = conn.execute("SELECT sum(length(data)) FROM keyframes").fetchone()
                    (ev,) = conn.execute("SELECT sum(length(blob)) FROM batches").fetchone()
                print(
                    f"  every {seconds:>4g} s: wall p50 {pct(ms, 50):5.2f} ms,"
                    f" p99 {pct(ms, 99):5.2f} ms; CPU (all threads) mean"
                    f" {statistics.mean(cpu):5.2f} ms, p99 {pct(cpu, 99):5.2f} ms;"
                    f" keyframes {kf / 1e6:5.2f} MB = {kf / ev:5.1%} of the event bytes"
                )
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)


async def main(args: argparse.Namespace) -> None:
    bench_dir = ROOT / "data" / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    name = f"replay_seek-p{args.players}-m{args.minutes:g}-r{args.tick_rate}-s{args.seed}"
    db = bench_dir / f"{name}.db"
    rules = GAMES["arena"]
    print(f"match: {args.players} players, {args.minutes:g} min, {args.tick_rate} Hz ({db})")
    if not db.exists():
        tmp = bench_dir / f"{name}.tmp.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        t0 = time.perf_counter()
        async with open_store(str(tmp), synchronous="NORMAL", catalogs=GAMES.catalogs()) as store:
            await generate(store, args.players, args.minutes, args.tick_rate, args.seed)
            t1 = time.perf_counter()
            n = await rebuild_keyframes(store, GAMES, MATCH)
        t2 = time.perf_counter()
        with sqlite3.connect(tmp) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.replace(tmp, db)
        print(f"generated in {t1 - t0:.1f} s, {n} keyframes rebuilt in {t2 - t1:.1f} s (cached)")
    else:
        print("generated match loaded from cache")
    if args.interval_sweep:
        await interval_sweep(db, args.interval_sweep, args.seeks, args.seed)
        return

    async with open_store(str(db), catalogs=GAMES.catalogs()) as store:
        record = await store.get_match(MATCH)
        last = record.last_tick
        kf_ticks = await store.keyframe_ticks(MATCH)
        print(f"ticks 0..{last}, {record.version} events, {len(kf_ticks)} keyframes")

        # -- random seeks ----------------------------------------------------------
        rng = random.Random(args.seed)
        ticks = [rng.randint(0, last) for _ in range(args.seeks)]
        engine = ReplayEngine(store, GAMES)
        latencies: dict[int, float] = {}
        t_all = time.perf_counter()
        for tick in ticks:
            t = time.perf_counter()
            await engine.state_at(MATCH, tick)
            latencies[tick] = time.perf_counter() - t
        t_all = time.perf_counter() - t_all
        ms = [v * 1000 for v in latencies.values()]
        print(
            f"state_at, {args.seeks} random seeks: p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f}"
            f" ms, max {max(ms):.2f} ms ({args.seeks / t_all:.0f} seeks/s; target p99 <= 10 ms)"
        )

        # -- naive fold from tick 0 on a sample of the same ticks --------------------
        third = [t for t in ticks if t >= 2 * last // 3]
        sample = rng.sample(third, min(len(third), args.naive_sample))
        speedups = []
        for tick in sample:
            t = time.perf_counter()
            naive = await engine.fold_from_start(MATCH, tick)
            naive_s = time.perf_counter() - t
            cold = ReplayEngine(store, GAMES)  # the seek again, without cached states
            t = time.perf_counter()
            fast = await cold.state_at(MATCH, tick)
            seek_s = time.perf_counter() - t
            assert rules.state_hash(fast) == rules.state_hash(naive), tick
            speedups.append(naive_s / seek_s)
            print(
                f"  tick {tick}: naive fold {naive_s * 1000:.0f} ms, cold seek"
                f" {seek_s * 1000:.2f} ms, x{naive_s / seek_s:.0f}"
            )
        print(
            f"speedup over the naive fold, last third ({len(sample)} ticks): median"
            f" x{statistics.median(speedups):.0f}, min x{min(speedups):.0f} (target >= 100x)"
        )

        # -- playback ------------------------------------------------------------------
        span = min(last, args.playback_ticks)
        for with_state in (False, True):
            start = rng.randint(0, last - span)
            pb = Playback(engine, MATCH, start=start, end=start + span - 1, speed=None,
                          with_state=with_state)  # fmt: skip
            t = time.perf_counter()
            frames = 0
            async for _ in pb:
                frames += 1
            rate = frames / (time.perf_counter() - t)
            print(
                f"playback {'with' if with_state else 'without'} states: {rate:,.0f} ticks/s,"
                f" x{rate / record.tick_rate:,.0f} real time (target >= 100x)"
            )

        # -- sizes -------------------------------------------------------------------------
        store_bytes = db.stat().st_size
        minutes = (last + 1) / record.tick_rate / 60
        events, jl = await json_lines_bytes(store, last)
        print(
            f"store: {store_bytes:,} bytes (file, incl. indexes and keyframes),"
            f" {store_bytes / events:.1f} bytes/event, {store_bytes / minutes / 1e6:.2f} MB per"
            f" match-minute"
        )
        print(
            f"JSON lines: {jl:,} bytes, {jl / events:.1f} bytes/event;"
            f" store / JSON lines = {store_bytes / jl:.3f} (target <= 0.25)"
        )
        with sqlite3.connect(db) as conn:  # pages per table and index (SQLite's dbstat)
            pages = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        ev_bytes = sum(v for k, v in pages.items() if k.startswith("batches"))
        print(
            f"  of which events (batch rows + their indexes): {ev_bytes:,} bytes,"
            f" {ev_bytes / events:.1f} bytes/event, {ev_bytes / jl:.3f} of JSON lines;"
            f" keyframes: {pages.get('keyframes', 0):,} bytes"
        )
        out = bench_dir / f"{name}.mrp"
        t = time.perf_counter()
        await export_match(store, MATCH, out)
        size = out.stat().st_size
        print(
            f"export: {size:,} bytes in {time.perf_counter() - t:.1f} s,"
            f" {size / events:.1f} bytes/event; export / store = {size / store_bytes:.3f}"
            f" (target <= 0.5)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--tick-rate", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeks", type=int, default=1000)
    parser.add_argument("--naive-sample", type=int, default=10)
    parser.add_argument("--playback-ticks", type=int, default=6000)
    parser.add_argument("--interval-sweep", type=float, nargs="+", metavar="SECONDS")
    asyncio.run(main(parser.parse_args()))
