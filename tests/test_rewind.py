"""Rewinding a match (replay/machine.py, replay/fold.py): the machine, the stream and the
engine, on bot matches recorded into memory stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from games import ARENA, GAMES, TUG_SPEC, open_test_store  # noqa: F401
from rewind_driver import Driver, create

from replay.engine import ReplayEngine
from replay.events import SYSTEM_INPUTS, SYSTEM_REWOUND
from replay.machine import RewindError
from replay.replay_file import ReplayFileReader, export_match, import_replay
from replay.system import InputLedger
from replay.timeline import Timeline, abandoned_ranges

PLAYERS = 8


async def _rewound_match() -> Driver:
    """Play to 300, rewind to 120 (B = 301), play to 450, rewind to 250 (a tick of the
    abandoned branch, B = 451), play to 600."""
    store = open_test_store("memory:")
    await store.open()
    rules, settings = await create(store, "m", players=PLAYERS, seconds=60)
    driver = Driver(store, "m", rules, settings, seed=5)
    driver.join_all(PLAYERS)
    await driver.play(300)
    await driver.rewind(120)
    await driver.play(450)
    await driver.rewind(250)
    await driver.play(600)
    return driver


@pytest.fixture
async def rewound():
    driver = await _rewound_match()
    yield driver
    await driver.store.close()


async def test_rewind_tick_holds_the_exact_state_of_t_reclocked(rewound: Driver) -> None:
    played, engine = rewound.played, ReplayEngine(rewound.store, GAMES)
    for boundary, to_tick in ((301, 120), (451, 250)):
        state = await engine.state_at("m", boundary)
        assert ARENA.state_tick(state) == boundary
        # Re-clocked back to T it is the state of T, hash for hash (T is stream tick T).
        back = ARENA.rebase(ARENA.copy_state(state), to_tick)
        assert ARENA.state_hash(back) == played.hashes[to_tick]
        t_state = await engine.state_at("m", to_tick)
        assert ARENA.state_hash(ARENA.rebase(t_state, boundary)) == played.hashes[boundary]


async def test_every_tick_seeks_to_the_live_hash_with_and_without_keyframes(
    rewound: Driver,
) -> None:
    played = rewound.played
    engine = ReplayEngine(rewound.store, GAMES)
    for tick in range(1, 601):
        assert ARENA.state_hash(await engine.state_at("m", tick)) == played.hashes[tick], tick
    await rewound.store.delete_keyframes("m")
    cold = ReplayEngine(rewound.store, GAMES, cache_bytes=0)
    for tick in (119, 120, 300, 301, 302, 450, 451, 452, 600):
        assert ARENA.state_hash(await cold.fold_from_start("m", tick)) == played.hashes[tick]
        assert ARENA.state_hash(await cold.state_at("m", tick)) == played.hashes[tick]


async def test_stream_stays_monotonic_and_keeps_the_abandoned_ticks(rewound: Driver) -> None:
    events = await rewound.store.read("m")
    ticks = [e.tick for e in events]
    assert ticks == sorted(ticks)
    rewinds = [e for e in events if e.type == SYSTEM_REWOUND]
    assert [(e.tick, e.data[:4]) for e in rewinds] == [
        (301, (300, 120, "ref", "bug")),
        (451, (450, 250, "ref", "bug")),
    ]
    # The rewind tick holds nothing but the rewind and the input audit.
    assert {e.type for e in events if e.tick in (301, 451)} <= {SYSTEM_REWOUND, SYSTEM_INPUTS}
    # The abandoned ticks 121..300 are still stored.
    assert any(e.tick == 200 and e.type < SYSTEM_INPUTS for e in events)


async def test_inputs_for_abandoned_ticks_are_acked_not_applied_and_stay_duplicates() -> None:
    async with open_test_store("memory:") as store:
        rules, settings = await create(store, "m", players=4, seconds=30)
        driver = Driver(store, "m", rules, settings, seed=3)
        driver.join_all(4)
        await driver.play(100)
        # Received before the rewind tick: sent for the abandoned timeline.
        sent = driver.send_inputs()
        assert sent
        out = await driver.rewind(40)
        acks = dict(zip(out.acks[::2], out.acks[1::2], strict=True))
        seat_of = {p: rules.seat_of(driver.machine.state, p) for p in sent}
        assert acks == {seat_of[p]: seq for p, seq in sent.items()}
        # Nothing applied at the rewind tick; the audit says so.
        ledger = InputLedger()
        applied = []
        for e in await store.read("m"):
            if e.type == SYSTEM_INPUTS:
                applied += [a for a in ledger.apply(e.tick, e.data) if a.tick == out.tick]
        assert {a.seat: a.applied for a in applied} == dict.fromkeys(acks, 0)
        # A resent input of the abandoned timeline is a duplicate: never applied again.
        player = next(iter(sent))
        driver.machine.submit_inputs(player, [(sent[player], [1.0, 0.0, 0.0, True])])
        after = await driver.step()
        assert seat_of[player] not in after.acks[::2]


async def test_refused_rewinds_have_codes() -> None:
    async with open_test_store("memory:") as store:
        rules, settings = await create(store, "m", players=2, seconds=30)
        driver = Driver(store, "m", rules, settings, seed=3)
        driver.join_all(2)
        await driver.play(50)
        state = await driver.engine.state_at("m", 10)
        driver.machine.rewind(state, actor="a", reason="r", at_ms=0)
        with pytest.raises(RewindError) as pending:
            driver.machine.rewind(state, actor="a", reason="r", at_ms=0)
        assert pending.value.code == "rewind_pending"
        await driver.step()
        ahead = rules.rebase(rules.copy_state(state), 500)
        with pytest.raises(RewindError) as too_far:
            driver.machine.rewind(ahead, actor="a", reason="r", at_ms=0)
        assert too_far.value.code == "rewind_ahead"


def test_tug_rebase_is_invertible() -> None:
    tug = GAMES["tug"]
    state = tug.initial_state({}, 1)
    state.tick = 40
    digest = tug.state_hash(state)
    assert tug.state_hash(tug.rebase(tug.rebase(tug.copy_state(state), 90), 40)) == digest


async def test_timeline_flags_abandoned_markers_and_marks_rewinds(rewound: Driver) -> None:
    timeline = Timeline(ReplayEngine(rewound.store, GAMES))
    every = await timeline.markers("m", abandoned=True)
    surviving = await timeline.markers("m")
    rewinds = [m for m in surviving if m.kind == "rewound"]
    assert [(m.tick, m.data["to_tick"]) for m in rewinds] == [(451, 250)]  # 301 is abandoned
    # Played 0..300, rewound at 301 to 120, rewound at 451 to 250 (a tick of the first
    # abandoned branch): the surviving lineage is 0..250 then 451.., so 251..450 is
    # abandoned and the first branch lives again up to 250.
    assert abandoned_ranges([(301, 120), (451, 250)], 600) == [(250, 451)]
    for m in every:
        assert m.abandoned == (250 < m.tick < 451), m
    assert [m for m in every if not m.abandoned] == surviving
    assert any(m.abandoned and m.kind != "rewound" for m in every)


async def test_export_and_import_round_trip_a_rewound_match(
    rewound: Driver, tmp_path: Path
) -> None:
    await rewound.store.update_match("m", status="ended", ended_at=1.0)
    path = tmp_path / "m.mrp"
    await export_match(rewound.store, "m", path)
    played = rewound.played
    with ReplayFileReader(path, GAMES.catalogs()) as reader:
        from_file = ReplayEngine(reader, GAMES)
        for tick in (120, 250, 300, 301, 451, 600):
            assert ARENA.state_hash(await from_file.state_at("m", tick)) == played.hashes[tick]
    async with open_test_store("memory:") as other:
        await import_replay(path, other)
        imported = ReplayEngine(other, GAMES)
        for tick in (119, 301, 302, 450, 451, 599):
            assert ARENA.state_hash(await imported.state_at("m", tick)) == played.hashes[tick]
        rewinds = [e.tick for e in await other.read("m") if e.type == SYSTEM_REWOUND]
        assert rewinds == [301, 451]


async def test_kill_clips_carry_the_abandoned_flag_and_never_cross_a_rewind(
    rewound: Driver,
) -> None:
    timeline = Timeline(ReplayEngine(rewound.store, GAMES))
    kills = ("killed", "multi_kill")
    every = await timeline.markers("m", kinds=kills, abandoned=True)
    surviving = await timeline.markers("m", kinds=kills)
    assert any(m.abandoned for m in every) and any(m.tick > 451 for m in surviving)
    assert surviving == [m for m in every if not m.abandoned]  # left out by default
    for kill in every:
        clip = await timeline.kill_clip("m", kill, seconds=60)  # 1,800 ticks: back to 0
        assert clip.abandoned == kill.abandoned
        # It starts at the last rewind tick before its kill: the stream ticks before it
        # are another branch (for a kill at 460, 301..450 is not its history).
        assert clip.from_tick == max(b for b in (0, 301, 451) if b <= kill.tick), kill
        assert clip.to_tick == kill.tick
