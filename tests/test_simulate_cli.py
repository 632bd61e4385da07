"""``matchreplay simulate`` as a real child process writing a real SQLite store; the
stored match folds to the same state the generator had live."""

from __future__ import annotations

import subprocess
import sys

from games import ARENA, open_test_store

from replay.offline import simulate


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_simulate_writes_a_replayable_match(tmp_path):
    db = str(tmp_path / "sim.db")
    done = cli(
        "--players",
        "6",
        "--minutes",
        "0.5",
        "--tick-rate",
        "10",
        "--seed",
        "5",
        "--db",
        db,
        "--batch-ticks",
        "7",
    )
    assert done.returncode == 0, done.stderr
    assert "match sim-5-6p" in done.stdout and "301 ticks" in done.stdout
    assert "tick" in done.stderr  # the progress bar

    rules = ARENA
    settings = ARENA.bot_match_settings(6, 30.0, 10)
    live = list(simulate(ARENA, 6, settings, 5, hash_ticks={301}))
    async with open_test_store(db) as store:
        record = await store.get_match("sim-5-6p")
        assert (record.game, record.status, record.tick_rate, record.seed) == (
            "arena",
            "ended",
            10,
            5,
        )
        assert record.rules_version == rules.version and len(record.players) == 6
        assert record.settings == settings and record.ended_at is not None
        batches = await store.read_batches("sim-5-6p")
    assert record.last_tick == 301
    assert sum(len(b.events) for b in batches) == sum(len(o.events) for o in live)
    state = rules.initial_state(record.settings, record.seed)
    for batch in batches:
        ticks = [e[2] for e in batch.events]
        assert ticks == sorted(ticks) and ticks[-1] - ticks[0] < 7
        rules.evolve(state, batch.events, ticks[-1])
    rules.evolve(state, [], 301)
    assert rules.state_hash(state) == live[-1].state_hash
    assert rules.is_over(state) and state.end_reason == "time_limit"
    kinds = {rules.catalog[e[0]].name for b in batches for e in b.events if e[0] in rules.catalog}
    assert {"moved", "aimed", "fired", "hit", "killed", "respawned"} <= kinds


def test_simulate_reports_errors(tmp_path):
    db = str(tmp_path / "sim.db")
    assert cli("--players", "2", "--minutes", "0.05", "--db", db).returncode == 0
    again = cli("--players", "2", "--minutes", "0.05", "--db", db)
    assert again.returncode == 1 and "match_exists" in again.stderr
    bad = cli("--players", "300", "--db", db)
    assert bad.returncode == 2 and "max_players" in bad.stderr
