"""The leaderboard projection over an event store filled by the offline generator:
chunking, restarts, crashes (SIGKILL of a real child process), rebuilds, definition
changes, periods and read-your-writes. The boards are always the projection's own
SQLite file; the events are in memory, except for the tests whose child processes
(the crashing projection, the CLI) open the event store by its SQLite file."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from games import ARENA, METRICS, open_test_store, store_over
from leaderboard_fixtures import PUBLIC, record_matches
from replay_matches import copy_to_file

from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.projection import LeaderboardProjection
from replay.leaderboards.service import Leaderboards
from replay.store.base import EventStore
from replay.store.memory import MemoryRecorder

HERE = Path(__file__).parent
WEEK = 7 * 24 * 3600


@pytest.fixture(scope="module")
def filled() -> MemoryRecorder:
    """Six interleaved 8-player matches of 30 s (~15k events), created last week and
    this week so the weekly board has two periods: recorded once, into memory."""
    recorder = MemoryRecorder()
    now = time.time()

    async def run() -> None:
        async with store_over(recorder) as store:
            await record_matches(
                store, count=3, seconds=30, seed=1, prefix="old", created_at=now - WEEK
            )
            await record_matches(store, count=3, seconds=30, seed=9, prefix="new", created_at=now)

    asyncio.run(run())
    return recorder


@pytest.fixture
def events(filled: MemoryRecorder) -> MemoryRecorder:
    """This test's own copy of the filled rows."""
    return filled.clone()


@pytest.fixture(scope="module")
def filled_file(filled: MemoryRecorder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The filled rows in an SQLite store file, for child processes that open it."""
    path = tmp_path_factory.mktemp("lb") / "events.db"
    asyncio.run(copy_to_file(filled, path))
    return path


@pytest.fixture
def store_path(filled_file: Path, tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    shutil.copy(filled_file, path)
    return path


def rows(path: Path) -> tuple[list[tuple], int]:
    with sqlite3.connect(path) as db:
        entries = db.execute("SELECT * FROM entries ORDER BY board, period, owner").fetchall()
        (pos,) = db.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()
    return entries, pos


def ranks(p: LeaderboardProjection) -> dict[tuple[str, str], list[tuple]]:
    return {
        (b, period): board.slice(0, len(board))
        for b, periods in p.state.boards.items()
        for period, board in periods.items()
    }


def open_events(events: Path | MemoryRecorder) -> EventStore:
    """The event store (to open) over memory rows or an SQLite file; a file is opened
    read-only, without the writer lock: several readers may be open on one at once."""
    if isinstance(events, Path):
        return open_test_store(str(events), read_only=True)
    return store_over(events)


async def full_build(events: Path | MemoryRecorder, boards: Path, **kw) -> LeaderboardProjection:
    store = open_events(events)
    await store.open()
    kw.setdefault("definitions", ARENA.default_boards())
    p = LeaderboardProjection(store, str(boards), metrics=METRICS, **kw)
    await p.open()
    await p.catch_up()
    return p


async def close(p: LeaderboardProjection) -> None:
    await p.close()
    await p.store.close()


async def test_chunking_and_restarts_do_not_change_the_boards(
    events: MemoryRecorder, tmp_path
) -> None:
    ref = await full_build(events, tmp_path / "ref.sqlite", read_limit=100_000)
    assert ref.position == await ref.store.last_position()
    expected_ranks = ranks(ref)
    await close(ref)
    # Small chunks, closing and reopening every few chunks: the same boards.
    boards = tmp_path / "b.sqlite"
    while True:
        store = store_over(events)
        await store.open()
        p = LeaderboardProjection(
            store, str(boards), ARENA.default_boards(), METRICS, read_limit=37
        )
        await p.open()
        steps = [await p.step() for _ in range(25)]
        done = steps[-1] == 0
        if done:
            assert ranks(p) == expected_ranks
        await close(p)
        if done:
            break
    assert rows(boards) == rows(tmp_path / "ref.sqlite")
    # The boards hold the arena metrics: everyone who played has a rating and kills add up.
    kills = {k: v for k, v in expected_ranks.items() if k[0] == "kills"}
    assert sum(e.value for e in kills["kills", "all"]) == sum(
        e.value for (b, _), es in expected_ranks.items() if b == "kills_weekly" for e in es
    )
    assert len(expected_ranks["rating", "all"]) == 8
    assert {e.subscore for e in expected_ranks["rating", "all"]} == {6}  # six rated matches


def test_killed_projection_resumes_exactly(store_path: Path, tmp_path: Path) -> None:
    """SIGKILL the projection process at random moments; the boards it finally writes
    equal a full rebuild from position 0 (entries, ranks and position)."""
    boards = tmp_path / "crash.sqlite"
    child = [
        sys.executable,
        str(HERE / "leaderboard_projection_child.py"),
        str(store_path),
        str(boards),
        "15",  # stored batches (ticks) per transaction: a few hundred transactions in all
    ]
    env = os.environ | {"PYTHONPATH": str(HERE.parent)}
    rng = random.Random(7)
    kills, last_seen = 0, 0
    while True:
        proc = subprocess.Popen(child, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        start = int(proc.stdout.readline().split()[1])
        assert start >= last_seen  # a reported (committed) checkpoint is never lost
        target = rng.randint(1, 60) if kills < 8 else None
        for seen, line in enumerate(proc.stdout, 1):
            word, pos = line.split()
            last_seen = int(pos)
            if word == "done":
                break
            if target is not None and seen >= target:
                time.sleep(rng.uniform(0, 0.01))  # land anywhere in the next chunk
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
        proc.wait(timeout=60)
        if target is None or word == "done":
            assert proc.returncode == 0
            break
    assert kills == 8

    async def compare() -> None:
        ref = await full_build(store_path, tmp_path / "ref.sqlite")
        try:
            assert rows(boards) == rows(tmp_path / "ref.sqlite")
            crashed = await full_build(store_path, boards)
            assert ranks(crashed) == ranks(ref)
            assert crashed.position == ref.position == await ref.store.last_position()
            await close(crashed)
        finally:
            await close(ref)

    asyncio.run(compare())


async def test_rebuild_builds_aside_while_queries_answer(events: MemoryRecorder, tmp_path) -> None:
    p = await full_build(events, tmp_path / "b.sqlite", read_limit=200)
    svc = Leaderboards(p)
    before = svc.top("kills", limit=1000)
    expected = ranks(p)
    # Damage the in-memory boards the way a bug would; rebuild must restore them.
    p.state.boards["kills"]["all"].apply(
        {"bot-001": p.state.boards["kills"]["all"].get("bot-001")._replace(value=10_000)}
    )
    assert svc.top("kills", limit=1)["entries"][0]["owner"] == "bot-001"
    answers = []

    async def query() -> None:
        # Paced so that the rebuild's own awaits are not starved by a busy-looping reader.
        while not done.is_set():
            answers.append(svc.top("kills", limit=1000))
            await asyncio.sleep(0.002)

    done = asyncio.Event()
    q = asyncio.create_task(query())
    read = await p.rebuild(["kills"])
    done.set()
    await q
    assert read == p.position
    assert len(answers) > 1  # queries were answered during the rebuild
    assert all(a["count"] == before["count"] for a in answers)  # never a half-built board
    assert svc.top("kills", limit=1000) == before
    assert ranks(p) == expected
    await close(p)
    assert rows(tmp_path / "b.sqlite")[0] == rows(tmp_path / "b.sqlite")[0]
    ref = await full_build(events, tmp_path / "ref.sqlite")
    assert rows(tmp_path / "b.sqlite") == rows(tmp_path / "ref.sqlite")
    await close(ref)


async def test_changed_definitions_are_rebuilt_on_open(events: MemoryRecorder, tmp_path) -> None:
    boards = tmp_path / "b.sqlite"
    await close(await full_build(events, boards))
    deaths = BoardDefinition("deaths", "deaths", "incr", order="asc")
    changed = [*ARENA.default_boards()[:1], BoardDefinition("wins", "wins", "decr"), deaths]
    p = await full_build(events, boards, definitions=changed)
    ref = await full_build(events, tmp_path / "ref.sqlite", definitions=changed)
    assert ranks(p) == ranks(ref)
    assert rows(boards) == rows(tmp_path / "ref.sqlite")
    assert {b for b, *_ in rows(boards)[0]} == {"kills", "wins", "deaths"}
    assert all(e.value < 0 for e in ranks(p)["wins", "all"])
    await close(p)
    await close(ref)


async def test_periods_and_queries(events: MemoryRecorder, tmp_path) -> None:
    p = await full_build(events, tmp_path / "b.sqlite")
    svc = Leaderboards(p)
    periods = svc.periods("kills_weekly")
    assert len(periods["periods"]) == 2 and periods["current"] == periods["periods"][0]
    cur = svc.top("kills_weekly", limit=1000)
    prev = svc.top("kills_weekly", period="previous", limit=1000)
    assert prev["period"] == periods["periods"][1]
    assert svc.top("kills_weekly", period=prev["period"])["entries"] == prev["entries"][:100]
    total = {e["owner"]: e["value"] for e in svc.top("kills", limit=1000)["entries"]}
    both: dict[str, int] = {}
    for page in (cur, prev):
        for e in page["entries"]:
            both[e["owner"]] = both.get(e["owner"], 0) + e["value"]
    assert both == total
    # Paging with a cursor visits every entry once, in rank order.
    seen, cursor = [], None
    while True:
        page = svc.top("kills", limit=3, cursor=cursor)
        seen += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["rank"] for e in seen] == list(range(1, len(total) + 1))
    me = svc.entry("rating", "bot-004")
    around = svc.around("rating", "bot-004", limit=3)
    assert me["entry"] in around["entries"]
    assert all(a["position"] == p.position for a in (me, around, cur, prev))
    await close(p)


async def test_wait_for_a_position_gives_read_your_writes(events: MemoryRecorder, tmp_path) -> None:
    p = await full_build(events, tmp_path / "b.sqlite")  # it appends
    svc = Leaderboards(p)
    runner = asyncio.create_task(p.run(poll_interval=0.05))
    start = p.position
    assert await svc.wait(start + 1, 0.05) is False  # nothing appended: times out
    await record_matches(p.store, 1, players=4, seconds=5, seed=42, prefix="late")
    last = await p.store.last_position()
    assert await svc.wait(last, 10.0) is True
    assert svc.count("wins")["position"] >= last
    entry = svc.entry("rating", "bot-001")["entry"]
    assert entry["reached_at"] > start  # the late match moved bot-001's rating
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await close(p)


async def test_read_all_batches_matches_read_all(events: MemoryRecorder) -> None:
    """The store's batch read (added for the projection) yields exactly read_all's
    events, from any position, including one inside a stored batch; so does the
    interface's default built on read_all (what other backends get)."""
    store = store_over(events)
    await store.open()
    try:
        last = await store.last_position()
        codes = LeaderboardProjection(store, "", ARENA.default_boards(), METRICS).state.codes
        for after in (0, 1, 2, 3, last // 2, last - 1, last):
            want = await store.read_all(after, 100_000)
            for read in (
                store.read_all_batches,
                lambda a, n: EventStore.read_all_batches(store, a, n),
            ):
                batches = await read(after, 400)
                got = [e for b in batches for e in b.recorded()]
                assert got == want[: len(got)]
                assert len(got) >= min(400, last - after)
                assert all(e.position > after for e in got)
            # The scan by type: the backend's equals the interface's default, and holds
            # exactly the wanted events (the others None).
            scanned = await store.scan(after, 400, codes)
            assert scanned == await EventStore.scan(store, after, 400, codes)
            seen = [e for b in scanned[0] for e in b.events]
            assert all(e is None or e[0] in codes for e in seen)
            assert any(seen) == any(e.type in codes for e in want[: len(got)])
    finally:
        await store.close()


def test_cli_rebuild_and_show(store_path: Path, tmp_path: Path) -> None:
    boards = tmp_path / "cli.sqlite"
    cli = [sys.executable, "-m", "server.cli", "leaderboards"]
    env = os.environ | {"PYTHONPATH": str(HERE.parent)}
    common = ["--db", str(store_path), "--boards-db", str(boards)]
    done = subprocess.run(
        [*cli, "rebuild", "kills", *common], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "rebuilt kills" in done.stdout
    shown = subprocess.run(
        [*cli, "show", "kills", "--limit", "3", *common], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 5  # title, header, 3
    bad = subprocess.run(
        [*cli, "rebuild", "nope", *common], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and bad.stderr.rstrip().endswith("[unknown_board]")

    async def compare() -> None:
        ref = await full_build(store_path, tmp_path / "ref.sqlite")
        assert rows(boards) == rows(tmp_path / "ref.sqlite")
        await close(ref)

    asyncio.run(compare())


def test_cli_rebuild_is_handed_to_a_running_projection(store_path: Path, tmp_path: Path) -> None:
    """With a server's projection holding the read model (a child process following the
    store), the CLI hands the rebuild over; it is built aside and swapped in there."""
    boards = tmp_path / "served.sqlite"
    env = os.environ | {"PYTHONPATH": str(HERE.parent)}
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "leaderboard_projection_child.py"),
            str(store_path),
            str(boards),
            "2000",
            "follow",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("done"):
                break
        # Damage the stored rows behind the server's back: only a rebuild rewrites them.
        with sqlite3.connect(boards) as db:
            db.execute("UPDATE entries SET value = 999 WHERE board = 'kills'")
        cli = [sys.executable, "-m", "server.cli", "leaderboards"]
        common = ["--db", str(store_path), "--boards-db", str(boards), "--no-progress"]
        done = subprocess.run(
            [*cli, "rebuild", "kills", *common],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "in the running server" in done.stdout
        bad = subprocess.run(
            [*cli, "rebuild", "nope", *common], capture_output=True, text=True, env=env, timeout=120
        )
        assert bad.returncode == 2 and bad.stderr.rstrip().endswith("[unknown_board]"), bad.stderr
        show = subprocess.run(
            [*cli, "show", "kills", *common[:4]],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        # show only reads: it answers beside the server, from the file the server keeps.
        assert show.returncode == 0, show.stderr
        assert show.stdout.startswith("kills (all) at position "), show.stdout
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)

    async def compare() -> None:
        ref = await full_build(store_path, tmp_path / "ref.sqlite")
        assert rows(boards) == rows(tmp_path / "ref.sqlite")
        await close(ref)

    asyncio.run(compare())


async def play_cut_short(store, match_id: str, ticks: int, seed: int) -> None:
    """A 4-bot match of which only the first ``ticks`` ticks are stored: no match_ended,
    as when the server stops it (it then marks the record interrupted)."""
    from replay.offline import simulate
    from replay.store.base import MatchRecord

    rules = ARENA
    settings = ARENA.bot_match_settings(4, 60.0, 30)
    record = MatchRecord(
        match_id,
        "arena",
        rules.version,
        30,
        settings=settings,
        seed=seed,
        status="running",
        options=PUBLIC,
    )
    await store.create_match(record)
    version = 0
    for out in simulate(ARENA, 4, settings, seed, max_ticks=ticks):
        if out.events:
            await store.append(match_id, out.events, version)
            version += len(out.events)


def stored_tallies(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {m for (m,) in db.execute("SELECT match_id FROM tallies")}


async def stored_tallies_once(path: Path, want: set[str]) -> set[str]:
    """The stored tallies once they are ``want`` (else as they are after about 4 s): a
    running projection writes its file after it wakes its waiters."""
    for _ in range(200):
        if (stored := stored_tallies(path)) == want:
            return stored
        await asyncio.sleep(0.02)
    return stored_tallies(path)


async def test_interrupted_matches_leave_no_tally(tmp_path: Path) -> None:
    """A match interrupted without match_ended: its tally is dropped once the store's
    record is read-only, all its events are folded and it went quiet (at open, on the
    periodic check of run(), after a rebuild), never earlier; the boards stay those of
    a rebuild."""
    events, boards = MemoryRecorder(), tmp_path / "b.sqlite"
    store = store_over(events)
    await store.open()
    p = LeaderboardProjection(store, str(boards), ARENA.default_boards(), METRICS, read_limit=20)
    runner: asyncio.Task[None] | None = None
    try:
        await record_matches(store, 1, players=4, seconds=5, seed=3, prefix="done")
        for i in range(2):
            await play_cut_short(store, f"cut{i}", 90, seed=10 + i)
        await p.open()
        await p.catch_up()
        assert set(p.state.tallies) == stored_tallies(boards) == {"cut0", "cut1"}

        await store.update_match("cut0", status="interrupted")
        # A check passes over matches that had events folded since the previous check
        # (they may be running): only the matches that went quiet are looked up.
        assert await p.retire_finished() == 0
        assert await p.retire_finished() == 1
        assert set(p.state.tallies) == stored_tallies(boards) == {"cut1"}  # cut1 still runs

        # Interrupted, but not all of its events folded yet: the tally stays until they are.
        await play_cut_short(store, "cut2", 120, seed=12)
        await p.step()
        assert "cut2" in p.state.tallies and p.position < await store.last_position()
        await store.update_match("cut2", status="interrupted")
        assert await p.retire_finished() == 0  # events since the last check
        assert await p.retire_finished() == 0  # quiet, but its last events are not folded
        await p.catch_up()
        assert await p.retire_finished() == 0  # its last events were just folded
        assert await p.retire_finished() == 1
        assert set(p.state.tallies) == stored_tallies(boards) == {"cut1"}

        # Interrupted while no projection ran (a crash, then the server's recovery): at open.
        await p.close()
        await store.update_match("cut1", status="interrupted")
        p = LeaderboardProjection(store, str(boards), ARENA.default_boards(), METRICS)
        await p.open()
        assert p.state.tallies == {} and stored_tallies(boards) == set()

        # The running projection checks periodically; a full rebuild leaves no tally either.
        await play_cut_short(store, "cut3", 60, seed=13)
        runner = asyncio.create_task(p.run(poll_interval=0.02, retire_interval=0.05))
        assert await p.wait_for(await store.last_position(), 10.0)
        assert "cut3" in p.state.tallies
        assert await stored_tallies_once(boards, {"cut3"}) == {"cut3"}
        await store.update_match("cut3", status="interrupted")
        assert await stored_tallies_once(boards, set()) == set()
        assert p.state.tallies == {}
        runner.cancel()
        await p.rebuild()
        assert p.state.tallies == {} and stored_tallies(boards) == set()
    finally:
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await p.close()
        await store.close()

    ref = await full_build(events, tmp_path / "ref.sqlite")
    assert rows(boards) == rows(tmp_path / "ref.sqlite")
    await close(ref)
