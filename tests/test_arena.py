"""Arena rules: commands, input validation, movement, shooting, respawns, the end."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from games import ARENA
from hypothesis import given, settings
from hypothesis import strategies as st

import replay.games.arena.events as ev
from replay.events import NewEvent
from replay.games.arena.rules import ArenaInput, ArenaRules
from replay.games.arena.state import ARRAYS, SCALARS, ArenaState
from replay.rules import Command, Rejection

rules: ArenaRules = ARENA  # type: ignore[assignment]


def names(events: list[NewEvent]) -> list[str]:
    return [rules.catalog[e.type].name for e in events]


def apply(state, result, tick):
    assert not isinstance(result, Rejection), result
    rules.evolve(state, result, tick)
    return result


def started(players=("a", "b"), **cfg):
    state = rules.initial_state(cfg, 42)
    for p in players:
        apply(state, rules.decide(state, 1, Command("join", p, {"name": p.upper()})), 1)
    apply(state, rules.decide(state, 1, Command("start", "admin")), 1)
    return state


def place(state, slot, x, y, tick=1):
    rules.evolve(state, [NewEvent(ev.SPAWNED, tick, (slot, x, y))], tick)


def step(state, tick, raw_inputs):
    inputs = {}
    for player, raw in raw_inputs.items():
        value = rules.validate_input(state, player, raw)
        assert not isinstance(value, Rejection), value
        inputs[player] = value
    out = rules.tick(state, tick, inputs)
    rules.evolve(state, out, tick)
    return out


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"max_players": 1},
        {"max_players": 257},
        {"tick_rate": 0},
        {"speed_mps": float("nan")},
        {"damage": float("inf")},
        {"late_join": 1},
        {"max_players": True},
        {"max_players": 4.5},
        {"min_players": 9, "max_players": 8},
        {"colour": "red"},
    ],
)
def test_bad_settings_are_rejected_with_a_message(bad):
    with pytest.raises(ValueError, match=r"\S"):
        rules.normalize_settings(bad)


def test_settings_defaults_and_hard_cap():
    s = rules.normalize_settings({})
    assert s["max_players"] == 64 and s["tick_rate"] == 30
    assert rules.normalize_settings({"max_players": 256})["max_players"] == 256


# -- commands --------------------------------------------------------------------------


def test_join_rejections():
    state = rules.initial_state({"max_players": 2, "late_join": False}, 1)
    apply(state, rules.decide(state, 1, Command("join", "a")), 1)
    assert state.names[0] == "a"  # name defaults to the player id
    assert rules.decide(state, 1, Command("join", "a")).code == "already_joined"
    assert rules.decide(state, 1, Command("join", "b", {"name": ""})).code == "bad_name"
    assert rules.decide(state, 1, Command("join", "b", {"name": 5})).code == "bad_name"
    assert rules.decide(state, 1, Command("join", "")).code == "bad_command"
    assert rules.decide(state, 1, Command("start", "a")).code == "not_enough_players"
    apply(state, rules.decide(state, 1, Command("join", "b")), 1)
    assert rules.decide(state, 1, Command("join", "c")).code == "match_full"
    apply(state, rules.decide(state, 2, Command("leave", "b")), 2)
    apply(state, rules.decide(state, 2, Command("join", "c")), 2)  # the freed slot is reused
    assert state.slot_of == {"a": 0, "c": 1}
    apply(state, rules.decide(state, 3, Command("start", "a")), 3)
    assert rules.decide(state, 3, Command("start", "a")).code == "already_started"
    apply(state, rules.decide(state, 4, Command("leave", "c")), 4)
    assert rules.decide(state, 4, Command("join", "d")).code == "late_join_closed"


def test_other_command_rejections():
    state = started()
    assert rules.decide(state, 2, Command("dance", "a")).code == "unknown_command"
    assert rules.decide(state, 2, Command("leave", "zed")).code == "unknown_player"
    assert rules.decide(state, 2, Command("chat", "zed", {"text": "hi"})).code == "unknown_player"
    assert rules.decide(state, 2, Command("chat", "a", {"text": ""})).code == "bad_chat"
    assert rules.decide(state, 2, Command("chat", "a", {"text": "x" * 201})).code == "bad_chat"
    assert rules.decide(state, 2, Command("chat", "a", {"text": 3})).code == "bad_chat"
    assert rules.decide(state, 2, Command("chat", "a", "notamap")).code == "bad_command"
    assert names(rules.decide(state, 2, Command("chat", "a", {"text": "gg"}))) == ["chat"]


def test_start_spawns_everyone_and_late_joiners_spawn_at_once():
    state = started()
    assert state.started_tick == 1 and state.alive[:2].all()
    late = apply(state, rules.decide(state, 5, Command("join", "c")), 5)
    assert names(late) == ["joined", "spawned"] and state.alive[2]


def test_spawn_points_are_seeded_by_seed_tick_and_slot():
    a = [rules.decide(started(), 9, Command("join", "c"))[1].data for _ in range(2)]
    assert a[0] == a[1]
    points = {rules.decide(started(), t, Command("join", "c"))[1].data for t in range(2, 40)}
    assert len(points) > 3


# -- input validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ([0, 0, 0], "bad_input"),
        ([0, 0, 0, 0, 0], "bad_input"),
        ("0,0,0,0", "bad_input"),
        (None, "bad_input"),
        ({"x": 1}, "bad_input"),
        ([True, 0, 0, 0], "bad_input"),
        (["1", 0, 0, 0], "bad_input"),
        ([0, 0, 0, 2], "bad_input"),
        ([0, 0, 0, 0.5], "bad_input"),
        ([float("nan"), 0, 0, 0], "not_finite"),
        ([0, float("inf"), 0, 0], "not_finite"),
        ([0, 0, float("-inf"), 1], "not_finite"),
    ],
)
def test_bad_inputs_are_rejected_with_a_code(raw, code):
    assert rules.validate_input(started(), "a", raw).code == code


def test_inputs_from_unknown_or_dead_players_are_rejected():
    state = started(("a", "b", "c"))
    assert rules.validate_input(state, "zed", [0, 0, 0, 0]).code == "unknown_player"
    state.alive[1] = False  # as a `killed` event would leave it
    assert rules.validate_input(state, "b", [0, 0, 0, 0]).code == "not_alive"
    before = rules.initial_state({}, 0)
    apply(before, rules.decide(before, 1, Command("join", "a")), 1)
    assert rules.validate_input(before, "a", [0, 0, 0, 0]).code == "not_alive"  # not started


def test_inputs_are_clamped_and_normalised():
    state = started()
    v = rules.validate_input(state, "a", [3.0, 4.0, -math.pi / 2, True])
    assert v == ArenaInput(pytest.approx(0.6), pytest.approx(0.8), 3072, True)
    huge = rules.validate_input(state, "a", [1e308, -1e308, 1e300, 0])
    assert math.hypot(huge.move_x, huge.move_y) == pytest.approx(1.0)
    assert 0 <= huge.aim < 4096
    assert rules.validate_input(state, "a", [0, 0, 2 * math.pi, 1]).aim == 0


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.floats(),
            st.integers(-(2**63), 2**64 - 1),
            st.text(max_size=5),
            st.binary(max_size=5),
        ),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=10,
    )
)
def test_validate_input_never_raises(raw):
    result = rules.validate_input(STATE, "a", raw)
    assert isinstance(result, Rejection | ArenaInput)


STATE = started()


# -- movement --------------------------------------------------------------------------


def test_standing_still_emits_nothing_and_moving_emits_one_packed_event():
    state = started()
    place(state, 0, 1000, 2000)
    place(state, 1, 3000, 3500)
    assert step(state, 2, {}) == []
    out = step(state, 3, {"a": [1.0, 0.0, 0.0, 0]})
    assert names(out) == ["moved"]
    slots, x, _ = out[0].data
    assert slots == b"\x00" and np.frombuffer(x, "<u2")[0] == 1020  # 6 m/s at 30 Hz: 20 cm
    assert (int(state.vx[0]), int(state.vy[0]), int(state.move_tick[0])) == (20, 0, 3)


def test_walls_block_and_bounds_clamp():
    state = started()
    place(state, 0, 1300, 1300)  # west of the wall x 1400..1600, y 800..1800
    place(state, 1, 100, 100)
    for t in range(2, 12):
        step(state, t, {"a": [1, 0, 0, 0], "b": [-1, -1, 0, 0]})
    assert int(state.x[0]) == 1400 - 40  # the disc (40 cm) touches the wall
    assert (int(state.x[1]), int(state.y[1])) == (40, 40)
    assert step(state, 12, {"a": [1, 0, 0, 0]}) == []  # pushing against it changes nothing
    out = step(state, 13, {"a": [0.7071, 0.7071, 0, 0]})  # slides along it
    assert int(state.x[0]) == 1360 and int(state.y[0]) > 1300 and names(out) == ["moved"]


def test_aim_is_emitted_only_beyond_the_quantum():
    state = started()
    place(state, 0, 1000, 2000)
    assert names(step(state, 2, {"a": [0, 0, 0.001, 0]})) == []
    out = step(state, 3, {"a": [0, 0, math.pi, 0]})
    assert names(out) == ["aimed"] and int(state.aim[0]) == 2048


# -- shooting, death, respawn, the end ---------------------------------------------------


def duel(**cfg):
    state = started(**cfg)
    place(state, 0, 1000, 2000)
    place(state, 1, 2000, 2000)  # 10 m east of a, nothing between
    return state


def test_hit_cooldown_kill_and_respawn():
    state = duel()
    out = step(state, 10, {"a": [0, 0, 0.0, 1]})
    assert names(out) == ["fired", "hit"] and out[1].data == (0, 1, 25, 75)
    assert int(state.health[1]) == 75
    assert names(step(state, 11, {"a": [0, 0, 0.0, 1]})) == []  # cooldown: no shot, no error
    t = 10
    for _ in range(3):
        t += 8
        out = step(state, t, {"a": [0, 0, 0.0, 1]})
    assert names(out) == ["fired", "hit", "killed"] and out[2].data == (0, 1)
    assert not state.alive[1] and int(state.deaths[1]) == 1 and int(state.score[0]) == 1
    assert rules.validate_input(state, "b", [0, 0, 0, 0]).code == "not_alive"
    assert step(state, t + 89, {}) == []
    out = step(state, t + 90, {})  # 3 s at 30 Hz
    assert names(out) == ["respawned"] and state.alive[1] and int(state.health[1]) == 100
    assert rules.scoreboard(state)[0] == {
        "player": "a",
        "name": "A",
        "slot": 0,
        "score": 1,
        "kills": 1,
        "deaths": 0,
        "alive": True,
    }


def test_walls_stop_shots_and_range_is_limited():
    state = started()
    place(state, 0, 1000, 1300)
    place(state, 1, 2000, 1300)  # the wall x 1400..1600 is between them
    assert names(step(state, 10, {"a": [0, 0, 0.0, 1]})) == ["fired"]
    far = started(weapon_range_m=5.0)
    place(far, 0, 1000, 2000)
    place(far, 1, 2000, 2000)
    assert names(step(far, 10, {"a": [0, 0, 0.0, 1]})) == ["fired"]


def test_simultaneous_shots_resolve_in_slot_order():
    state = duel(damage=100)
    out = step(state, 10, {"a": [0, 0, 0.0, 1], "b": [0, 0, math.pi, 1]})
    assert names(out) == ["aimed", "fired", "hit", "killed", "fired", "hit", "killed"]
    assert not state.alive[:2].any()  # shots of one tick are simultaneous


def test_score_limit_ends_the_match_with_a_winner():
    state = duel(damage=100, score_limit=1)
    out = step(state, 10, {"a": [0, 0, 0.0, 1]})
    assert names(out) == ["fired", "hit", "killed", "match_ended"]
    assert out[-1].data == ("a", "score_limit") and rules.is_over(state)
    assert step(state, 11, {}) == []
    assert rules.decide(state, 11, Command("chat", "a", {"text": "gg"})).code == "match_over"
    assert rules.validate_input(state, "a", [0, 0, 0, 0]).code == "match_over"


def test_time_limit_ends_the_match():
    state = duel(time_limit_s=1.0)
    assert all(step(state, t, {}) == [] for t in range(2, 31))
    out = step(state, 31, {})
    assert out == [NewEvent(ev.MATCH_ENDED, 31, ("a", "time_limit"))]  # tie: lowest slot


# -- state -------------------------------------------------------------------------------


def test_keyframe_round_trip_and_bad_keyframes():
    state = duel()
    step(state, 10, {"a": [1, 0, 0.0, 1]})
    data = rules.encode_state(state)
    back = rules.decode_state(data, rules.state_format)
    assert rules.state_hash(back) == rules.state_hash(state) and back.slot_of == state.slot_of
    for bad in (b"", b"\x93\x01", data[:-3]):
        with pytest.raises(ValueError):
            rules.decode_state(bad, rules.state_format)
    with pytest.raises(ValueError, match="format"):
        rules.decode_state(data, 2)


def test_state_hash_sees_every_field():
    state = duel()
    h = rules.state_hash(state)
    other = rules.copy_state(state)
    other.last_fire[1] = 5
    assert rules.state_hash(other) != h and rules.state_hash(state) == h


def test_every_state_field_is_copied_hashed_and_keyframed():
    """One field list (``SCALARS``, ``ARRAYS``) drives copy, hash and keyframe: a field
    of ``ArenaState`` missing from it, or a field that one of them skips, fails here."""
    derived = {"settings", "slot_of"}  # settings: hashed as a whole; slot_of: from players
    listed = {name for name, _ in SCALARS} | {name for name, _ in ARRAYS}
    assert {f.name for f in dataclasses.fields(ArenaState)} == listed | derived
    changes = {"ended": True, "winner": "a", "end_reason": "why"}
    for name, _ in SCALARS:
        state = duel()
        copy = rules.copy_state(state)
        before = rules.state_hash(state)
        value = getattr(state, name)
        if isinstance(value, list):
            value[0] = "z"  # in place: a copy that shares the list would change too
        else:
            setattr(state, name, changes.get(name, value + 7 if isinstance(value, int) else value))
        assert rules.state_hash(state) != before, name
        assert rules.state_hash(copy) == before, f"copy() shares or skips {name}"
        back = ArenaState.decode(state.encode())
        assert getattr(back, name) == getattr(state, name), f"the keyframe drops {name}"
